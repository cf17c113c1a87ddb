//! NBD interoperability with Debian's independent implementations: the
//! engine's client against nbdkit, and libnbd's nbdinfo/nbdcopy against the
//! engine's server; plus the allow-list and a volume over NBD members.

mod common;

use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use raid_engine::nbd::{AllowList, Export, NbdDevice, NbdServer};
use raid_engine::{BlockDevice, CacheMode, CreateOptions, FileDevice, Volume, VolumeLayout};

/// A child process killed (by PID) when dropped.
struct Peer(Child);
impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_nbdkit(args: &[&str]) -> Option<(Peer, u16)> {
    if !common::ensure_program("nbdkit", "nbdkit") {
        common::skip("nbdkit is not installed and could not be installed");
        return None;
    }
    Some(start_on_socket("nbdkit", &[&["-f"], args].concat()))
}

/// Starts `program` (nbdkit or qemu-nbd) serving on a listening socket this
/// process binds on 127.0.0.1 (a port the kernel picks), handed over as fd 3
/// by socket activation: `LISTEN_FDS=1` and `LISTEN_PID` set by the `sh`
/// that then execs the peer under its own PID. The port is never free
/// between the bind and the peer's start, so no other server (another test's
/// `NbdServer` or peer binding port 0) can take it first and answer our
/// connections in the peer's place; and a connection made while the peer is
/// still starting waits in the socket's backlog, so no readiness poll is
/// needed. A peer that dies closes the socket and the connection fails.
fn start_on_socket(program: &str, args: &[&str]) -> (Peer, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"exec 3<&0 0</dev/null; export LISTEN_PID=$$ LISTEN_FDS=1; exec "$@""#)
        .arg("sh")
        .arg(program)
        .args(args)
        .env_remove("LISTEN_FDNAMES")
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(listener)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("start {program}: {e}"));
    (Peer(child), port)
}

#[test]
fn client_reads_and_writes_nbdkit_memory_export() {
    let Some((_peer, port)) = start_nbdkit(&["memory", "16M"]) else {
        return;
    };
    let dev = NbdDevice::connect(&format!("127.0.0.1:{port}"), "").unwrap();
    assert_eq!(dev.size(), 16 << 20);
    let data = common::pattern(1, 3 << 20);
    dev.write_at(&data, 12345).unwrap();
    dev.flush().unwrap();
    let mut back = vec![0u8; data.len()];
    dev.read_at(&mut back, 12345).unwrap();
    assert!(back == data);
    dev.trim(0, 1 << 20).unwrap();
    let mut z = vec![1u8; 4096];
    dev.read_at(&mut z, 0).unwrap();
    assert!(z.iter().all(|&b| b == 0), "nbdkit memory trims to zeroes");
    assert!(dev.read_at(&mut z, (16 << 20) - 100).is_err());
}

#[test]
fn raid1_over_nbdkit_and_a_local_file_survives_losing_either() {
    let dir = tempfile::tempdir().unwrap();
    let remote_file = dir.path().join("remote.img");
    std::fs::File::create(&remote_file)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let Some((_peer, port)) = start_nbdkit(&["file", remote_file.to_str().unwrap()]) else {
        return;
    };
    let remote: Arc<dyn BlockDevice> =
        Arc::new(NbdDevice::connect(&format!("127.0.0.1:{port}"), "").unwrap());
    let local: Arc<dyn BlockDevice> = Arc::new(
        FileDevice::create(dir.path().join("local.img"), 8 << 20, CacheMode::Buffered).unwrap(),
    );
    let vol = Volume::create(
        vec![local.clone(), remote.clone()],
        &CreateOptions::new(VolumeLayout::parse("raid1").unwrap()),
    )
    .unwrap();
    let data = common::pattern(2, 1 << 20);
    vol.write_at(&data, 4096).unwrap();
    vol.flush().unwrap();
    // The remote file holds md's bytes at the data offset.
    let raw = std::fs::read(&remote_file).unwrap();
    let off = vol.data_offset_bytes() as usize + 4096;
    assert!(raw[off..off + data.len()] == data[..]);
    vol.fail_member(0).unwrap();
    let mut back = vec![0u8; data.len()];
    vol.read_at(&mut back, 4096).unwrap();
    assert!(back == data);
}

fn libnbd_tools() -> bool {
    if common::ensure_program("nbdinfo", "libnbd-bin")
        && common::ensure_program("nbdcopy", "libnbd-bin")
    {
        return true;
    }
    common::skip("nbdinfo/nbdcopy (libnbd-bin) are not installed and could not be installed");
    false
}

#[test]
fn nbdinfo_and_nbdcopy_use_the_engine_server() {
    if !libnbd_tools() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let drive: Arc<dyn BlockDevice> = Arc::new(
        FileDevice::create(dir.path().join("drive0"), 4 << 20, CacheMode::Buffered).unwrap(),
    );
    let server = NbdServer::bind("127.0.0.1:0").unwrap();
    server
        .add_export(Export {
            name: "drive0".into(),
            device: drive.clone(),
            allow: AllowList::Only(vec!["127.0.0.1".parse::<IpAddr>().unwrap()]),
            read_only: false,
        })
        .unwrap();
    server
        .add_export(Export {
            name: "elsewhere".into(),
            device: drive.clone(),
            allow: AllowList::Only(vec!["10.9.8.7".parse::<IpAddr>().unwrap()]),
            read_only: false,
        })
        .unwrap();
    let h = server.spawn().unwrap();
    let url = |name: &str| format!("nbd://127.0.0.1:{}/{name}", h.local_addr().port());

    let out = Command::new("nbdinfo")
        .args(["--size", &url("drive0")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (4u64 << 20).to_string()
    );

    // --list shows only the exports this client may open.
    let out = Command::new("nbdinfo")
        .args([
            "--list",
            &format!("nbd://127.0.0.1:{}", h.local_addr().port()),
        ])
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        listing.contains("drive0") && !listing.contains("elsewhere"),
        "{listing}"
    );

    // Not on the allow-list: refused, for nbdinfo and for our client.
    let out = Command::new("nbdinfo")
        .args([&url("elsewhere")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let e = NbdDevice::connect(&h.local_addr().to_string(), "elsewhere").unwrap_err();
    assert!(e.to_string().contains("allow-list"), "{e}");

    // nbdcopy writes an image through the server; the drive holds it.
    let img = dir.path().join("src.img");
    let data = common::pattern(3, 4 << 20);
    std::fs::write(&img, &data).unwrap();
    let st = Command::new("nbdcopy")
        .args([img.to_str().unwrap(), &url("drive0")])
        .status()
        .unwrap();
    assert!(st.success());
    let mut back = vec![0u8; data.len()];
    drive.read_at(&mut back, 0).unwrap();
    assert!(back == data);
    // And reads it back out.
    let copy = dir.path().join("copy.img");
    let st = Command::new("nbdcopy")
        .args([&url("drive0"), copy.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&copy).unwrap() == data);
    h.shutdown();
}

#[test]
fn a_dead_nbd_member_is_failed_and_the_volume_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let Some((peer, port)) = start_nbdkit(&["memory", "8M"]) else {
        return;
    };
    let remote: Arc<dyn BlockDevice> =
        Arc::new(NbdDevice::connect(&format!("127.0.0.1:{port}"), "").unwrap());
    let local: Arc<dyn BlockDevice> = Arc::new(
        FileDevice::create(dir.path().join("local.img"), 8 << 20, CacheMode::Buffered).unwrap(),
    );
    let vol = Volume::create(
        vec![remote, local],
        &CreateOptions::new(VolumeLayout::parse("raid1").unwrap()),
    )
    .unwrap();
    let data = common::pattern(4, 256 << 10);
    vol.write_at(&data, 0).unwrap();
    vol.flush().unwrap();
    drop(peer); // kills nbdkit: the remote member's next I/O fails
    vol.write_at(&data[..4096], 8192).unwrap();
    let mut back = vec![0u8; data.len()];
    vol.read_at(&mut back, 0).unwrap();
    let mut want = data.clone();
    want[8192..12288].copy_from_slice(&data[..4096]);
    assert!(back == want);
    let st = vol.status();
    assert_eq!(st[0].state, raid_engine::MemberState::Failed, "{st:?}");
    assert_eq!(st[1].state, raid_engine::MemberState::Active);
}

/// Several threads with requests in flight on one connection, large I/O
/// split into pipelined pieces; the peer answers reads late (nbdkit's delay
/// filter), so writes' replies overtake them: every byte must still land
/// where it belongs.
fn pipelined_io_is_correct(dev: &NbdDevice) {
    let region = 1u64 << 20;
    std::thread::scope(|s| {
        for t in 0..4u64 {
            s.spawn(move || {
                for round in 0..3u64 {
                    let off = (t * 3 + round) * region + 512 * t;
                    let data = common::pattern(t * 10 + round, (region - 4096) as usize);
                    dev.write_at(&data, off).unwrap();
                    let mut back = vec![0u8; data.len()];
                    dev.read_at(&mut back, off).unwrap();
                    assert!(back == data, "thread {t} round {round}: read back differs");
                    dev.write_at(&data[..4096], off + region / 2).unwrap();
                }
                dev.flush().unwrap();
            });
        }
    });
    // Everything once more, from one thread, after all writers are done.
    for t in 0..4u64 {
        for round in 0..3u64 {
            let off = (t * 3 + round) * region + 512 * t;
            let mut data = common::pattern(t * 10 + round, (region - 4096) as usize);
            let half = (region / 2) as usize;
            let head = data[..4096].to_vec();
            data[half..half + 4096].copy_from_slice(&head);
            let mut back = vec![0u8; data.len()];
            dev.read_at(&mut back, off).unwrap();
            assert!(back == data, "thread {t} round {round}: final read differs");
        }
    }
}

#[test]
fn pipelined_requests_against_nbdkit_with_delayed_reads() {
    let Some((_peer, port)) = start_nbdkit(&["--filter=delay", "memory", "16M", "rdelay=5ms"])
    else {
        return;
    };
    let dev = NbdDevice::connect(&format!("127.0.0.1:{port}"), "").unwrap();
    pipelined_io_is_correct(&dev);
}

#[test]
fn pipelined_requests_against_qemu_nbd() {
    if !common::ensure_program("qemu-nbd", "qemu-utils") {
        common::skip("qemu-nbd (qemu-utils) is not installed and could not be installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let img = img.to_str().unwrap();
    let (_peer, port) = start_on_socket("qemu-nbd", &["-f", "raw", "-t", img]);
    let dev = NbdDevice::connect(&format!("127.0.0.1:{port}"), "").unwrap();
    assert_eq!(dev.size(), 16 << 20);
    pipelined_io_is_correct(&dev);
}

/// Replies really come back out of request order, and every read still
/// gets its own bytes. Three threads read at random offsets and lengths
/// (up to 1 MiB, split into pipelined pieces), which nbdkit's delay filter
/// answers 20 ms late, while a fourth thread keeps writing (not delayed),
/// so write replies overtake reads sent before them. The client counts
/// replies that arrive while a request sent earlier is unanswered: the
/// count must be positive (a client that serialised its requests, one
/// reply before the next request, would count none, as the check on a
/// second connection with one thread and one request in flight shows).
#[test]
fn replies_arrive_out_of_request_order_and_reads_get_their_data() {
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let Some((_peer, port)) = start_nbdkit(&["--filter=delay", "memory", "64M", "rdelay=20ms"])
    else {
        return;
    };
    let addr = format!("127.0.0.1:{port}");
    let dev = NbdDevice::connect(&addr, "").unwrap();
    const READ_AREA: usize = 16 << 20;
    const WRITE_AREA: u64 = 32 << 20;
    const SLOT: usize = 64 << 10;
    let base = common::pattern(7, READ_AREA);
    dev.write_at(&base, 0).unwrap();
    // nbdkit serves a connection's requests on several threads, so even
    // these writes may be answered out of order: count from here on.
    let before = dev.replies_out_of_order();
    let readers_done = AtomicUsize::new(0);
    let written = std::thread::scope(|s| {
        for t in 0..3u64 {
            let (dev, base, readers_done) = (&dev, &base, &readers_done);
            s.spawn(move || {
                let mut x = 0x2545_f491_4f6c_dd1d ^ (t + 1);
                let mut next = |limit: u64| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % limit
                };
                for i in 0..8 {
                    let len = (next(2048) as usize + 1) * 512;
                    let off = (next(((READ_AREA - len) / 512) as u64 + 1) * 512) as usize;
                    let mut got = vec![0u8; len];
                    dev.read_at(&mut got, off as u64).unwrap();
                    assert!(
                        got[..] == base[off..off + len],
                        "thread {t}, read {i} at {off}+{len}: wrong data"
                    );
                }
                readers_done.fetch_add(1, SeqCst);
            });
        }
        let (dev, readers_done) = (&dev, &readers_done);
        let writer = s.spawn(move || {
            // What the write area must hold afterwards (the memory plugin
            // starts zeroed).
            let mut model = vec![0u8; 256 * SLOT];
            let mut k = 0u64;
            while readers_done.load(SeqCst) < 3 {
                let slot = (k % 256) as usize;
                let data = common::pattern(100 + k, SLOT);
                dev.write_at(&data, WRITE_AREA + (slot * SLOT) as u64)
                    .unwrap();
                model[slot * SLOT..(slot + 1) * SLOT].copy_from_slice(&data);
                k += 1;
            }
            model
        });
        writer.join().unwrap()
    });
    let mut back = vec![0u8; written.len()];
    dev.read_at(&mut back, WRITE_AREA).unwrap();
    assert!(
        back == written,
        "the writer's area differs from what it wrote"
    );
    let mut all = vec![0u8; READ_AREA];
    dev.read_at(&mut all, 0).unwrap();
    assert!(all == base, "the read area changed");
    let overtaken = dev.replies_out_of_order() - before;
    eprintln!("{overtaken} replies arrived out of request order");
    assert!(
        overtaken > 0,
        "no reply arrived before the reply to an earlier request: the client serialised its requests"
    );

    // The counter's zero case: one thread, one request at a time.
    let serial = NbdDevice::connect(&addr, "").unwrap();
    serial.set_max_in_flight(1).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..4u64 {
        serial
            .write_at(&buf[..SLOT], WRITE_AREA + i * SLOT as u64)
            .unwrap();
        serial.read_at(&mut buf, i << 20).unwrap();
        assert!(buf[..] == base[(i << 20) as usize..((i + 1) << 20) as usize]);
    }
    assert_eq!(serial.replies_out_of_order(), 0);
}

/// A peer that accepts the connection and never speaks (not an NBD server,
/// or a hung one): the handshake gives up after the timeout with an error
/// saying no answer came, where before `connect` waited forever. The peer
/// here is a plain listener that holds each connection open until the
/// test ends.
#[test]
fn a_peer_that_never_answers_the_handshake_times_out() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let peer = std::thread::spawn(move || {
        let held = listener.accept().unwrap();
        let _ = wait.recv();
        drop(held);
    });
    let e = NbdDevice::connect_timeout(&addr, "x", std::time::Duration::from_millis(200))
        .expect_err("a silent peer was taken for an NBD server");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "\"nbd://{addr}/x\": read greeting: no answer within"
        )),
        "{msg}"
    );
    assert!(
        NbdDevice::connect_timeout(&addr, "x", std::time::Duration::ZERO)
            .unwrap_err()
            .to_string()
            .contains("invalid timeout"),
    );
    done.send(()).unwrap();
    peer.join().unwrap();
}
