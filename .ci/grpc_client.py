#!/usr/bin/env python3
"""A CSI client on Python grpcio with default channel options, for checks and
benchmarks against a driver on a unix socket.

Methods are called generically (channel.unary_unary with hand-serialized
protobuf bytes), so no generated stubs or protoc are needed. With default
options grpcio >= 1.57 sends the percent-encoded socket path as the HTTP/2
:authority, which is what the SDK's server must accept.

  grpc_client.py check SOCKET
      Identity, CreateVolume/DeleteVolume, an oversized message
      (RESOURCE_EXHAUSTED) and an unknown method (UNIMPLEMENTED); exits 1 on
      any failure.
  grpc_client.py fill SOCKET COUNT PREFIX
      Creates COUNT volumes named PREFIX-i (4 KiB each).
  grpc_client.py bench SOCKET --workers N --seconds S
      N threads, each with its own channel, loop CreateVolume+DeleteVolume
      for S seconds; prints cycles/s and CreateVolume p50/p99 latency.
"""

import argparse
import sys
import threading
import time
import uuid

import grpc


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field(num, payload):
    """A length-delimited field (strings, bytes, messages)."""
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def field_varint(num, value):
    return varint(num << 3) + varint(value)


def parse(buf):
    """Decodes one protobuf message level: {field number: [values]}."""
    out, i = {}, 0
    while i < len(buf):
        key, i = read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(buf, i)
        elif wire == 2:
            n, i = read_varint(buf, i)
            value, i = buf[i : i + n], i + n
        elif wire == 1:
            value, i = buf[i : i + 8], i + 8
        elif wire == 5:
            value, i = buf[i : i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        out.setdefault(num, []).append(value)
    return out


def read_varint(buf, i):
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


# VolumeCapability{mount: MountVolume{}, access_mode: AccessMode{mode: SINGLE_NODE_WRITER}}
MOUNT_CAP = field(2, b"") + field(3, field_varint(1, 1))


def create_request(name):
    # CreateVolumeRequest{name, capacity_range{required_bytes: 4096}, volume_capabilities}
    return field(1, name.encode()) + field(2, field_varint(1, 4096)) + field(3, MOUNT_CAP)


def delete_request(volume_id):
    return field(1, volume_id.encode())


def ident(x):
    return x


class Csi:
    def __init__(self, socket):
        self.channel = grpc.insecure_channel(f"unix://{socket}")

        def method(path):
            return self.channel.unary_unary(
                path, request_serializer=ident, response_deserializer=ident
            )

        self.get_plugin_info = method("/csi.v1.Identity/GetPluginInfo")
        self.probe = method("/csi.v1.Identity/Probe")
        self.create = method("/csi.v1.Controller/CreateVolume")
        self.delete = method("/csi.v1.Controller/DeleteVolume")
        self.unknown = method("/csi.v1.Identity/NoSuchMethod")

    def create_volume(self, name):
        resp = parse(self.create(create_request(name), timeout=60))
        volume = parse(resp[1][0])
        return volume[2][0].decode()

    def delete_volume(self, volume_id):
        self.delete(delete_request(volume_id), timeout=60)


def check(socket):
    passed, failed = 0, 0

    def case(name, fn):
        nonlocal passed, failed
        try:
            fn()
            print(f"  ok    {name}")
            passed += 1
        except Exception as e:  # report every failure, keep going
            print(f"  FAIL  {name}: {e!r}")
            failed += 1

    csi = Csi(socket)

    def info():
        resp = parse(csi.get_plugin_info(b"", timeout=30))
        name = resp.get(1, [b""])[0].decode()
        assert name, "GetPluginInfo answered no name"
        print(f"        plugin {name!r}")

    def probe():
        csi.probe(b"", timeout=30)

    def lifecycle():
        name = f"grpcio-check-{uuid.uuid4().hex[:12]}"
        vid = csi.create_volume(name)
        assert vid, "CreateVolume answered no volume id"
        assert csi.create_volume(name) == vid, "CreateVolume is not idempotent"
        csi.delete_volume(vid)
        csi.delete_volume(vid)

    def oversized():
        try:
            csi.create(field(1, b"x" * (5 << 20)), timeout=60)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, e
            return
        raise AssertionError("a 5 MiB request was accepted")

    def unknown():
        try:
            csi.unknown(b"", timeout=30)
        except grpc.RpcError as e:
            assert e.code() == grpc.StatusCode.UNIMPLEMENTED, e
            return
        raise AssertionError("an unknown method answered OK")

    print(f"grpcio {grpc.__version__} (python {sys.version.split()[0]}) on unix://{socket}")
    case("GetPluginInfo", info)
    case("Probe", probe)
    case("CreateVolume, again (idempotent), DeleteVolume twice", lifecycle)
    case("a 5 MiB message is RESOURCE_EXHAUSTED", oversized)
    case("an unknown method is UNIMPLEMENTED", unknown)
    case("the same channel still works after the errors", probe)
    print(f"grpcio {grpc.__version__}: {passed} passed, {failed} failed")
    return failed == 0


def fill(socket, count, prefix):
    csi = Csi(socket)
    for i in range(count):
        csi.create_volume(f"{prefix}-{i}")


def bench(socket, workers, seconds):
    latencies = [[] for _ in range(workers)]
    cycles = [0] * workers
    errors = []
    start = threading.Barrier(workers + 1)
    stop_at = [0.0]

    def worker(w):
        csi = Csi(socket)
        csi.probe(b"", timeout=30)  # connect before the clock starts
        start.wait()
        n = 0
        run = uuid.uuid4().hex[:8]
        try:
            while time.perf_counter() < stop_at[0]:
                t = time.perf_counter()
                vid = csi.create_volume(f"bench-{run}-{w}-{n}")
                latencies[w].append(time.perf_counter() - t)
                csi.delete_volume(vid)
                n += 1
        except Exception as e:
            errors.append(e)
        cycles[w] = n

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(workers)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        print(f"errors: {errors[:3]}", file=sys.stderr)
        return False
    lat = sorted(x for per in latencies for x in per)
    total = sum(cycles)

    def pct(p):
        return lat[min(len(lat) - 1, int(p * len(lat)))] * 1000 if lat else float("nan")

    print(
        f"grpcio {grpc.__version__}: workers={workers} cycles={total} "
        f"cycles/s={total / elapsed:.0f} create p50={pct(0.5):.2f}ms p99={pct(0.99):.2f}ms"
    )
    return True


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("socket")
    f = sub.add_parser("fill")
    f.add_argument("socket")
    f.add_argument("count", type=int)
    f.add_argument("prefix")
    b = sub.add_parser("bench")
    b.add_argument("socket")
    b.add_argument("--workers", type=int, default=1)
    b.add_argument("--seconds", type=float, default=5)
    a = ap.parse_args()
    if a.cmd == "check":
        ok = check(a.socket)
    elif a.cmd == "fill":
        fill(a.socket, a.count, a.prefix)
        ok = True
    else:
        ok = bench(a.socket, a.workers, a.seconds)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
