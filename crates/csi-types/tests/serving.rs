//! The server's connection handling on a real unix socket, spoken to at the
//! HTTP/2 frame level: `:authority` values that gRPC clients send over unix
//! sockets are answered, oversized messages get `RESOURCE_EXHAUSTED`, and
//! idle connections are closed.

mod common;

use std::time::Duration;

use common::{TestDriver, full_plugin};
use csi_types::client::Client;
use csi_types::server::{ServeOptions, serve_with_options};
use csi_types::{Code, RawCsi, proto};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Serves the test plugin with `options`; returns the socket path.
async fn serve(options: ServeOptions) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("csi.sock");
    let ep = format!("unix://{}", path.display());
    let plugin = full_plugin(TestDriver::default());
    tokio::spawn(
        async move { serve_with_options(plugin, &ep, std::future::pending(), options).await },
    );
    // Until the socket accepts (its file exists a moment before it
    // listens); the bound only guards against hanging for ever.
    for _ in 0..6000 {
        if tokio::net::UnixStream::connect(&path).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (dir, path)
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// Reads one frame: (type, flags, stream, payload); `None` at EOF.
async fn read_frame(s: &mut UnixStream) -> Option<(u8, u8, u32, Vec<u8>)> {
    let mut head = [0u8; 9];
    s.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    s.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream, payload))
}

/// Sends a GetPluginInfo call on `stream` with `authority`, encoded as
/// grpcio encodes it (Huffman coding, incremental indexing), and returns
/// the response's header fields (headers and trailers), failing on
/// RST_STREAM or GOAWAY.
async fn call(
    s: &mut UnixStream,
    enc: &mut httlib_hpack::Encoder<'_>,
    dec: &mut httlib_hpack::Decoder<'_>,
    stream: u32,
    authority: &[u8],
) -> Vec<(String, String)> {
    let mut block = Vec::new();
    for (name, value) in [
        (&b":scheme"[..], &b"http"[..]),
        (b":method", b"POST"),
        (b":authority", authority),
        (b":path", b"/csi.v1.Identity/GetPluginInfo"),
        (b"te", b"trailers"),
        (b"content-type", b"application/grpc"),
        (
            b"user-agent",
            b"grpc-python/1.85.3 grpc-c/50.0.0 (linux; chttp2)",
        ),
    ] {
        enc.encode(
            (name.to_vec(), value.to_vec(), 0x1 | 0x2 | 0x4 | 0x10),
            &mut block,
        )
        .unwrap();
    }
    let mut out = frame(1, 0x4, stream, &block);
    // An empty GetPluginInfoRequest: not compressed, length 0.
    out.extend(frame(0, 0x1, stream, &[0, 0, 0, 0, 0]));
    s.write_all(&out).await.unwrap();
    let mut fields = Vec::new();
    loop {
        let (kind, flags, id, payload) = read_frame(s).await.expect("the server answers");
        match kind {
            4 if flags & 1 == 0 => s.write_all(&frame(4, 1, 0, &[])).await.unwrap(),
            3 => panic!("RST_STREAM {payload:?} on stream {id}"),
            7 => panic!("GOAWAY {payload:?}"),
            1 if id == stream => {
                let mut buf = payload;
                let mut got = Vec::new();
                dec.decode(&mut buf, &mut got).unwrap();
                fields.extend(got.into_iter().map(|(n, v, _)| {
                    (String::from_utf8(n).unwrap(), String::from_utf8(v).unwrap())
                }));
                if flags & 1 != 0 {
                    return fields;
                }
            }
            _ => {}
        }
    }
}

fn get<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn socket_path_authorities_are_answered() {
    let (_dir, path) = serve(ServeOptions::default()).await;
    let mut s = UnixStream::connect(&path).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let mut enc = httlib_hpack::Encoder::default();
    let mut dec = httlib_hpack::Decoder::default();
    let percent = format!("{}", path.display()).replace('/', "%2F");
    let raw = format!("{}", path.display());
    // A valid authority first, then the values real clients send; the
    // second call with each refers to the dynamic table entry the first
    // one made.
    let mut id = 1;
    for authority in ["localhost", &percent, &percent, &raw, "", "", "localhost"] {
        let fields = call(&mut s, &mut enc, &mut dec, id, authority.as_bytes()).await;
        assert_eq!(get(&fields, ":status"), Some("200"), "{authority:?}");
        assert_eq!(
            get(&fields, "grpc-status"),
            Some("0"),
            "{authority:?}: {fields:?}"
        );
        id += 2;
    }
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted() {
    let mut options = ServeOptions::default();
    options.max_message_size = 64 * 1024;
    let (_dir, path) = serve(options).await;
    let client = Client::connect(&format!("unix://{}", path.display()))
        .await
        .unwrap();
    let err = RawCsi::raw_create_volume(
        &client,
        proto::CreateVolumeRequest {
            name: "x".repeat(100 * 1024),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err}");
    // Which message, its size and the limit, and the setting that raises it (tonic said "Error,
    // decoded message length too large: found 102404 bytes, the limit is: 65536 bytes").
    assert_eq!(
        err.to_string(),
        "resource exhausted: the request is 102404 bytes, over this server's limit of 65536 \
         bytes (ServeOptions::max_message_size)"
    );
    // A message under the limit is decoded (and then refused by validation).
    let err = RawCsi::raw_create_volume(
        &client,
        proto::CreateVolumeRequest {
            name: "x".repeat(1000),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
}

#[tokio::test]
async fn idle_connections_are_closed_and_busy_ones_kept() {
    let mut options = ServeOptions::default();
    // Long enough that a loaded machine never stalls that long between two of the busy
    // client's back-to-back calls below, which must keep their connection.
    options.idle_timeout = Some(Duration::from_secs(2));
    let (_dir, path) = serve(options).await;

    // A connection that never makes a call is closed: the server's side
    // reaches EOF. (The bound is only a guard against hanging for ever.)
    let mut s = UnixStream::connect(&path).await.unwrap();
    s.write_all(PREFACE).await.unwrap();
    s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(60), async {
        while read_frame(&mut s).await.is_some() {}
    })
    .await;
    assert!(closed.is_ok(), "the idle connection was never closed");

    // A client that keeps calling keeps its connection; after a pause past
    // the timeout, its next call still succeeds (it reconnects).
    let client = Client::connect(&format!("unix://{}", path.display()))
        .await
        .unwrap();
    for _ in 0..3 {
        RawCsi::raw_probe(&client, proto::ProbeRequest {})
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    RawCsi::raw_probe(&client, proto::ProbeRequest {})
        .await
        .unwrap();
}
