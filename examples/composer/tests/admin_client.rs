//! The admin client (`composer admin …`, `admin::call_with`) against peers
//! that are not a well-behaved composer: a socket that accepts and never
//! answers, one that closes before or in the middle of an answer, one that
//! sends heartbeats for a while before answering, and `--socket` naming a
//! regular file, a directory or nothing; and the admin socket sending
//! heartbeats while a request is held up.
//!
//! Before, a socket that accepted and never answered kept the client
//! waiting forever: every call here runs under a test-level timeout, so
//! that such a client fails the test instead of hanging it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use composer::admin::{self, Request};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;

/// Far beyond any idle timeout used here: reaching it means the client hung.
const HUNG: Duration = Duration::from_secs(30);

/// Short idle timeout the client is given.
const IDLE: Duration = Duration::from_millis(300);

fn socket_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("admin.sock")
}

/// Calls `drives` on `path` with idle timeout `idle`, failing the test if
/// the call itself does not return.
async fn call(path: &Path, idle: Duration) -> Result<serde_json::Value, String> {
    tokio::time::timeout(
        HUNG,
        admin::call_with(path, &Request::Drives, idle, &mut |_| {}),
    )
    .await
    .expect("the admin client hung instead of giving up")
}

/// A listener that accepts every connection and keeps it open, reading
/// and writing nothing.
fn silent(path: &Path) -> tokio::task::JoinHandle<()> {
    let l = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = l.accept().await {
            held.push(s);
        }
    })
}

/// A listener that reads one request line per connection, then writes
/// `reply` and closes the connection.
fn replying(path: &Path, reply: &'static str) -> tokio::task::JoinHandle<()> {
    let l = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            let _ = BufReader::new(r).read_line(&mut line).await;
            let _ = w.write_all(reply.as_bytes()).await;
        }
    })
}

#[tokio::test]
async fn a_socket_that_never_answers_times_out_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = silent(&path);
    let e = call(&path, IDLE).await.unwrap_err();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("no answer") && e.contains("0.3 s"), "{e}");
    assert!(e.contains("--idle-timeout"), "{e}");
    server.abort();
}

#[tokio::test]
async fn heartbeats_keep_a_slow_answer_alive_and_are_not_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let l = UnixListener::bind(&path).unwrap();
    // Five heartbeats a third of the idle timeout apart: the whole answer
    // takes longer than the idle timeout, no gap does.
    let server = tokio::spawn(async move {
        let (s, _) = l.accept().await.unwrap();
        let (r, mut w) = s.into_split();
        let mut line = String::new();
        BufReader::new(r).read_line(&mut line).await.unwrap();
        for _ in 0..5 {
            tokio::time::sleep(IDLE / 3).await;
            w.write_all(b"{\"alive\":true}\n").await.unwrap();
        }
        w.write_all(b"{\"progress\":{\"done\":1,\"total\":2}}\n{\"ok\":\"done\"}\n")
            .await
            .unwrap();
    });
    let mut progress = Vec::new();
    let answer = tokio::time::timeout(
        HUNG,
        admin::call_with(&path, &Request::Drives, IDLE, &mut |p| {
            progress.push(p.clone())
        }),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(answer, serde_json::json!({"ok": "done"}));
    assert_eq!(progress, vec![serde_json::json!({"done": 1, "total": 2})]);
    server.await.unwrap();
}

#[tokio::test]
async fn a_peer_closing_in_the_middle_of_an_answer_is_told_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = replying(&path, "{\"ok\": [1, 2,");
    let e = call(&path, HUNG).await.unwrap_err();
    assert!(e.contains(&path.display().to_string()), "{e}");
    assert!(e.contains("in the middle of an answer"), "{e}");
    server.abort();
}

#[tokio::test]
async fn a_peer_sending_bytes_that_are_no_json_line_is_named_foreign() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    // What an HTTP/2 server (the CSI endpoint) sends first, then closes.
    let server = replying(&path, "\0\0\x12\x04\0\0\0\0\0\0\x03");
    let e = call(&path, HUNG).await.unwrap_err();
    assert!(e.contains("not the composer admin protocol"), "{e}");
    server.abort();
}

#[tokio::test]
async fn a_peer_closing_without_an_answer_is_told_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = replying(&path, "");
    let e = call(&path, HUNG).await.unwrap_err();
    assert!(e.contains("closed the connection without answering"), "{e}");
    server.abort();
}

#[tokio::test]
async fn a_socket_path_naming_a_file_a_directory_or_nothing_says_which() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.redb");
    std::fs::write(&file, b"not a socket").unwrap();
    let e = call(&file, IDLE).await.unwrap_err();
    assert!(e.contains(&file.display().to_string()), "{e}");
    assert!(e.contains("not a socket"), "{e}");
    let e = call(dir.path(), IDLE).await.unwrap_err();
    assert!(e.contains("not a socket"), "{e}");
    let missing = dir.path().join("missing.sock");
    let e = call(&missing, IDLE).await.unwrap_err();
    assert!(e.contains("nothing there"), "{e}");
    // Nothing was created or removed on the way.
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
    assert!(!missing.exists());
}

#[tokio::test]
async fn the_cli_gives_up_after_idle_timeout_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let server = silent(&path);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_composer"))
        .args(["admin", "--idle-timeout", "1", "--socket"])
        .arg(&path)
        .arg("volumes")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Waited for without blocking the runtime that serves the listener;
    // killed (by its pid, through the handle) if it hangs.
    let deadline = tokio::time::Instant::now() + HUNG;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if tokio::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("composer admin hung on a socket that never answers");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains(&path.display().to_string()) && err.contains("no answer for 1 s"),
        "{err}"
    );
    server.abort();
}

#[test]
fn the_cli_refuses_an_idle_timeout_of_zero() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_composer"))
        .args(["admin", "--idle-timeout", "0", "drives"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--idle-timeout"), "{err}");
}

/// A store whose commits wait until the test lets them through, so that
/// a request (`mark`) is held up for as long as the test wants.
struct GatedStore {
    inner: composer_core::MemStore,
    gate: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl composer_core::Store for GatedStore {
    fn load(&self) -> Result<composer_core::StoredState, composer_core::Error> {
        self.inner.load()
    }

    fn commit(&self, batch: composer_core::Batch) -> Result<u64, composer_core::Error> {
        let _ = self.gate.lock().unwrap().recv();
        self.inner.commit(batch)
    }
}

#[tokio::test]
async fn the_admin_socket_sends_heartbeats_while_a_request_is_held_up() {
    let dir = tempfile::tempdir().unwrap();
    let path = socket_path(&dir);
    let (open_gate, gate) = std::sync::mpsc::channel();
    let store = GatedStore {
        inner: composer_core::MemStore::default(),
        gate: std::sync::Mutex::new(gate),
    };
    let c = std::sync::Arc::new(
        composer_core::Composer::open(
            composer_core::Inventory::default_inventory(),
            std::sync::Arc::new(store),
        )
        .unwrap(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn({
        let path = path.clone();
        async move {
            admin::serve_with_heartbeat(
                c,
                None,
                None,
                &path,
                async {
                    let _ = stopped.await;
                },
                Duration::from_millis(20),
            )
            .await
        }
    });
    // Connect once the socket is bound.
    let stream = loop {
        match tokio::net::UnixStream::connect(&path).await {
            Ok(s) => break s,
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    };
    let (r, mut w) = stream.into_split();
    w.write_all(b"{\"op\":\"mark\",\"target\":\"r1-j1-00\",\"health\":\"draining\"}\n")
        .await
        .unwrap();
    let mut lines = BufReader::new(r).lines();
    let mut next = async || {
        tokio::time::timeout(HUNG, lines.next_line())
            .await
            .expect("no line while the request is held up: no heartbeat")
            .unwrap()
            .expect("the socket closed")
    };
    // The commit waits for the gate: what comes first is a heartbeat.
    assert_eq!(next().await, "{\"alive\":true}");
    open_gate.send(()).unwrap();
    let answer = loop {
        let l = next().await;
        if l != "{\"alive\":true}" {
            break l;
        }
    };
    assert_eq!(answer, "{\"ok\":\"marked\"}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}
