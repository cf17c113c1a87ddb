//! The NBD client against a peer that misbehaves after a correct handshake:
//! a fake server on a loopback socket that answers `NBD_OPT_GO` as the
//! protocol says (`doc/proto.md` of the NBD project), then does one wrong
//! thing. Every case must end in an error that names the peer (the
//! device's `nbd://HOST:PORT/NAME`) and what was wrong, never a panic or a
//! wait without end.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use raid_engine::BlockDevice;
use raid_engine::nbd::NbdDevice;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
/// `NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH`.
const TFLAGS: u16 = 1 | 4;
/// The fake export's size.
const SIZE: u64 = 1 << 20;

/// One request as the client sent it.
struct Request {
    handle: u64,
    len: u32,
}

/// A fake server's side of one connection, after the handshake.
struct Peer(TcpStream);

impl Peer {
    /// Reads the next request's header (a write's payload is not read).
    fn request(&mut self) -> Request {
        let mut h = [0u8; 28];
        self.0.read_exact(&mut h).unwrap();
        Request {
            handle: u64::from_be_bytes(h[8..16].try_into().unwrap()),
            len: u32::from_be_bytes(h[24..28].try_into().unwrap()),
        }
    }

    /// Sends a simple reply's header (no data).
    fn reply_head(&mut self, magic: u32, handle: u64) {
        let mut r = magic.to_be_bytes().to_vec();
        r.extend_from_slice(&0u32.to_be_bytes());
        r.extend_from_slice(&handle.to_be_bytes());
        self.0.write_all(&r).unwrap();
    }
}

/// Sends a reply to `NBD_OPT_GO`.
fn try_opt_reply(s: &mut TcpStream, typ: u32, data: &[u8]) -> std::io::Result<()> {
    let mut r = REPLY_MAGIC.to_be_bytes().to_vec();
    r.extend_from_slice(&OPT_GO.to_be_bytes());
    r.extend_from_slice(&typ.to_be_bytes());
    r.extend_from_slice(&(data.len() as u32).to_be_bytes());
    r.extend_from_slice(data);
    s.write_all(&r)
}

fn opt_reply(s: &mut TcpStream, typ: u32, data: &[u8]) {
    try_opt_reply(s, typ, data).unwrap();
}

/// Accepts one client and reads its handshake up to its `NBD_OPT_GO`
/// (the fixed newstyle greeting sent, the client's flags and option
/// read), which is left to answer.
fn accept_until_go(listener: &TcpListener) -> TcpStream {
    let (mut s, _) = listener.accept().unwrap();
    let mut greet = NBDMAGIC.to_be_bytes().to_vec();
    greet.extend_from_slice(&IHAVEOPT.to_be_bytes());
    greet.extend_from_slice(&(1u16 | 2).to_be_bytes());
    s.write_all(&greet).unwrap();
    // The client's flags, then the option's magic, number and length.
    let mut head = [0u8; 20];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes(head[16..20].try_into().unwrap());
    let mut data = vec![0u8; len as usize];
    s.read_exact(&mut data).unwrap();
    s
}

/// Starts a fake server that completes the handshake of one client and
/// then runs `then` on the connection; returns the client's device (its
/// label) and the server thread.
fn misbehaving(
    then: impl FnOnce(&mut Peer) + Send + 'static,
) -> (NbdDevice, String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let mut s = accept_until_go(&listener);
        let mut info = 0u16.to_be_bytes().to_vec();
        info.extend_from_slice(&SIZE.to_be_bytes());
        info.extend_from_slice(&TFLAGS.to_be_bytes());
        opt_reply(&mut s, REP_INFO, &info);
        opt_reply(&mut s, REP_ACK, &[]);
        then(&mut Peer(s));
    });
    let dev = NbdDevice::connect(&addr, "x").unwrap();
    dev.set_max_in_flight(1).unwrap();
    (dev, format!("nbd://{addr}/x"), server)
}

/// Export `x` of the engine's server: a new file of [`SIZE`] bytes in
/// `dir`, writable, open to the clients `allow` lets in.
fn export_x(dir: &std::path::Path, allow: raid_engine::nbd::AllowList) -> raid_engine::nbd::Export {
    let file =
        raid_engine::FileDevice::create(dir.join("d"), SIZE, raid_engine::CacheMode::Buffered)
            .unwrap();
    raid_engine::nbd::Export {
        name: "x".into(),
        device: std::sync::Arc::new(file),
        allow,
        read_only: false,
    }
}

/// The error of a read of `len` bytes at 0, which must fail.
fn read_error(dev: &NbdDevice, len: usize) -> String {
    let mut buf = vec![0u8; len];
    dev.read_at(&mut buf, 0)
        .expect_err("a read answered wrongly succeeded")
        .to_string()
}

/// The server hangs up after reading a request, before any reply: the
/// error names the peer and says it closed the connection. Before, it was
/// only "failed to fill whole buffer".
#[test]
fn a_server_closing_mid_request_is_named() {
    let (dev, label, server) = misbehaving(|p| {
        p.request();
    });
    let e = read_error(&dev, 4096);
    server.join().unwrap();
    assert!(
        e.contains(&label) && e.contains("the server closed the connection"),
        "{e}"
    );
    // The connection stays broken, and says why, for the next request.
    let again = read_error(&dev, 4096);
    assert!(again.contains(&label), "{again}");
}

/// A reply whose data stops short (the server hangs up in the middle of
/// it): named, with how much was expected.
#[test]
fn a_reply_cut_short_is_named() {
    let (dev, label, server) = misbehaving(|p| {
        let r = p.request();
        p.reply_head(SIMPLE_REPLY_MAGIC, r.handle);
        p.0.write_all(&vec![7u8; r.len as usize / 2]).unwrap();
    });
    let e = read_error(&dev, 4096);
    server.join().unwrap();
    assert!(
        e.contains(&label)
            && e.contains("the server closed the connection")
            && e.contains("4096 bytes of reply data"),
        "{e}"
    );
}

/// A reply for a handle the client never sent: named, with the handle.
#[test]
fn a_reply_for_an_unknown_handle_is_named() {
    let (dev, label, server) = misbehaving(|p| {
        let r = p.request();
        p.reply_head(SIMPLE_REPLY_MAGIC, r.handle + 1000);
        // Held open: the client must not wait for the real reply.
        let mut rest = Vec::new();
        let _ = p.0.read_to_end(&mut rest);
    });
    let e = read_error(&dev, 4096);
    assert!(
        e.contains(&label) && e.contains("reply for an unknown request"),
        "{e}"
    );
    drop(dev);
    server.join().unwrap();
}

/// A reply that is not one (a wrong magic): named.
#[test]
fn a_reply_with_a_wrong_magic_is_named() {
    let (dev, label, server) = misbehaving(|p| {
        let r = p.request();
        p.reply_head(0x1234_5678, r.handle);
        let mut rest = Vec::new();
        let _ = p.0.read_to_end(&mut rest);
    });
    let e = read_error(&dev, 512);
    assert!(e.contains(&label) && e.contains("bad reply magic"), "{e}");
    drop(dev);
    server.join().unwrap();
}

/// An export name longer than NBD's limit of 4096 bytes is refused before
/// anything is sent, saying the rule (the peer named by its address, the
/// name shortened). Before, it went to the server, which may take it for
/// another export's name cut short or hang up.
#[test]
fn an_export_name_too_long_is_refused_before_it_is_sent() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    listener.set_nonblocking(true).unwrap();
    let name = "n".repeat(4097);
    let e = NbdDevice::connect(&addr, &name)
        .expect_err("a name over 4096 bytes was sent")
        .to_string();
    assert!(
        e.contains(&format!("nbd://{addr}/"))
            && e.contains("export name of 4097 bytes")
            && e.contains("at most 4096"),
        "{e}"
    );
    assert!(e.len() < 400, "the whole name is in the message: {e}");
    // Nothing connected.
    assert!(listener.accept().is_err());
    // 4096 bytes are allowed: the connection is made (and the peer, which
    // hangs up at once, is said to have closed it).
    let server = std::thread::spawn(move || {
        listener.set_nonblocking(false).unwrap();
        let (s, _) = listener.accept().unwrap();
        drop(s);
    });
    let e = NbdDevice::connect(&addr, &"n".repeat(4096))
        .expect_err("no NBD server")
        .to_string();
    assert!(
        !e.contains("export name of")
            && e.contains("read greeting: the server closed the connection"),
        "{e}"
    );
    server.join().unwrap();
}

/// The server's side: a client that connects and never completes the
/// handshake is hung up on once the server's handshake timeout has passed
/// (before, its connection and thread were held for ever); a client that
/// completed it may stay idle for longer, and is still served.
#[test]
fn the_server_hangs_up_on_a_client_that_never_completes_the_handshake() {
    use raid_engine::nbd::{AllowList, NbdServer};
    let dir = tempfile::tempdir().unwrap();
    let timeout = std::time::Duration::from_millis(200);
    let e = NbdServer::bind("127.0.0.1:0")
        .unwrap()
        .with_handshake_timeout(std::time::Duration::ZERO)
        .unwrap_err();
    assert!(e.to_string().contains("handshake_timeout"), "{e}");
    let server = NbdServer::bind("127.0.0.1:0")
        .unwrap()
        .with_handshake_timeout(timeout)
        .unwrap();
    server
        .add_export(export_x(dir.path(), AllowList::Any))
        .unwrap();
    let h = server.spawn().unwrap();
    let addr = h.local_addr();

    for says in [&b""[..], &[0, 0, 0, 3, 0x49, 0x48]] {
        let mut silent = TcpStream::connect(addr).unwrap();
        // Only a guard against a server that never hangs up: the test
        // fails (instead of hanging) if nothing comes within a minute.
        silent
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut greeting = [0u8; 18];
        silent.read_exact(&mut greeting).unwrap();
        assert_eq!(greeting[..8], NBDMAGIC.to_be_bytes());
        // Nothing, or the flags and the start of an option.
        silent.write_all(says).unwrap();
        let mut rest = Vec::new();
        let r = silent.read_to_end(&mut rest);
        // A hang-up with our bytes unread may come as a reset.
        assert!(
            matches!(&r, Ok(0))
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "after {says:?}: the server did not hang up: {r:?}"
        );
    }

    // Idle past the handshake timeout once open: still served.
    let dev = NbdDevice::connect(&addr.to_string(), "x").unwrap();
    std::thread::sleep(timeout * 3);
    dev.write_at(&[5u8; 4096], 0).unwrap();
    let mut back = [0u8; 4096];
    dev.read_at(&mut back, 0).unwrap();
    assert_eq!(back, [5u8; 4096]);
    drop(dev);
    h.shutdown();
}

/// A server that answers `NBD_OPT_GO` with information replies without
/// end (or trickles them) never lets the handshake finish: the client
/// gives up once its handshake timeout has passed, whatever the number of
/// replies, naming the peer. Before, each reply restarted the wait and
/// `connect` never returned.
#[test]
fn a_server_that_never_ends_its_option_replies_is_given_up_on() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    let server = std::thread::spawn(move || {
        let mut s = accept_until_go(&listener);
        // NBD_INFO_BLOCK_SIZE, over and over, until the client hangs up.
        let mut info = 3u16.to_be_bytes().to_vec();
        for v in [1u32, 4096, 1 << 20] {
            info.extend_from_slice(&v.to_be_bytes());
        }
        loop {
            if try_opt_reply(&mut s, REP_INFO, &info).is_err() || stopped.try_recv().is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let client_addr = addr.clone();
    std::thread::spawn(move || {
        let r =
            NbdDevice::connect_timeout(&client_addr, "x", std::time::Duration::from_millis(300));
        let _ = tx.send(r.map(drop).map_err(|e| e.to_string()));
    });
    // Only a guard, so that the test fails instead of hanging.
    let r = rx.recv_timeout(std::time::Duration::from_secs(60));
    let _ = stop.send(());
    let e = match r {
        Ok(Err(e)) => e,
        Ok(Ok(())) => panic!("a handshake without end was taken"),
        Err(_) => panic!("connect did not give up on replies without end"),
    };
    assert!(
        e.contains(&format!("nbd://{addr}/x")) && e.contains("not answered within"),
        "{e}"
    );
    server.join().unwrap();
}

/// A server that takes a request and never answers: with a request
/// timeout set, the request fails once the timeout has passed without a
/// byte, naming the export and the timeout, and so do later ones (the
/// connection is given up on); zero is refused. Without one (the default)
/// a slow server is waited for.
#[test]
fn a_server_that_never_answers_a_request_fails_it_after_the_request_timeout() {
    let (dev, label, server) = misbehaving(|p| {
        p.request();
        // Held open, unanswered, until the client hangs up.
        let mut rest = Vec::new();
        let _ = p.0.read_to_end(&mut rest);
    });
    let e = dev
        .set_request_timeout(Some(std::time::Duration::ZERO))
        .unwrap_err();
    assert!(e.to_string().contains("invalid request_timeout"), "{e}");
    dev.set_request_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let e = read_error(&dev, 4096);
    assert!(
        e.contains(&label) && e.contains("no reply: nothing within 200ms (the request timeout)"),
        "{e}"
    );
    let again = read_error(&dev, 512);
    assert!(again.contains(&label) && again.contains("200ms"), "{again}");
    drop(dev);
    server.join().unwrap();
}

/// Every error of a connection names the peer once, as
/// `nbd://HOST:PORT/EXPORT: ` at the start: a refused TCP connection, an
/// address that is not HOST:PORT, a peer that is not an NBD server and an
/// export the server refuses. Before, the last three read
/// `nbd: nbd://HOST:PORT/EXPORT: ...`.
#[test]
fn connection_errors_name_the_peer_once() {
    use raid_engine::nbd::{AllowList, NbdServer};
    let once = |e: raid_engine::EngineError, addr: &str, what: &str| {
        let e = e.to_string();
        assert!(e.starts_with(&format!("\"nbd://{addr}/x\": ")), "{e}");
        assert_eq!(e.matches("nbd:").count(), 1, "the peer twice: {e}");
        assert_eq!(e.matches(addr).count(), 1, "the address twice: {e}");
        assert!(e.contains(what), "{what:?} not in {e}");
    };
    // Refused: nothing listens on a port just freed.
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let e = NbdDevice::connect(&addr, "x").expect_err("nothing listens");
    once(e, &addr, "connect: ");
    let e = NbdDevice::connect("nohost", "x").expect_err("not HOST:PORT");
    once(e, "nohost", "is not HOST:PORT");
    // Not an NBD server: a greeting of the wrong bytes.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&[b'x'; 18]).unwrap();
    });
    let e = NbdDevice::connect(&addr, "x").expect_err("not an NBD server");
    once(e, &addr, "not a newstyle NBD server");
    server.join().unwrap();
    // Refused by the allow-list of an export of the engine's server.
    let dir = tempfile::tempdir().unwrap();
    let server = NbdServer::bind("127.0.0.1:0").unwrap();
    let only = AllowList::Only(vec!["10.9.9.9".parse().unwrap()]);
    server.add_export(export_x(dir.path(), only)).unwrap();
    let h = server.spawn().unwrap();
    let addr = h.local_addr().to_string();
    let e = NbdDevice::connect(&addr, "x").expect_err("not on the allow-list");
    once(e, &addr, "NBD_REP_ERR_POLICY");
    h.shutdown();
}

/// A volume that cannot read an NBD member's superblock names the member
/// once: the device's own error starts with `"nbd://HOST:PORT/EXPORT": `,
/// and the volume does not put it in front again. Before, the message read
/// `"nbd://…/x": read superblock: "nbd://…/x": …`.
#[test]
fn a_volume_names_an_nbd_member_whose_read_failed_once() {
    let (dev, label, server) = misbehaving(|p| {
        p.request();
    });
    let e = raid_engine::Volume::assemble(vec![std::sync::Arc::new(dev)], None)
        .map(drop)
        .expect_err("the superblock cannot be read")
        .to_string();
    server.join().unwrap();
    assert_eq!(e.matches(&label).count(), 1, "the peer not once: {e}");
    assert!(e.contains("read superblock"), "{e}");
}

/// The engine's server names an export a client asked for quoted short
/// in its refusal: a name of 4,000 bytes with a newline is not sent back
/// whole (before, `{:?}` of it was).
#[test]
fn the_server_quotes_an_unknown_export_name_short() {
    use raid_engine::nbd::{AllowList, NbdServer};
    let dir = tempfile::tempdir().unwrap();
    let server = NbdServer::bind("127.0.0.1:0").unwrap();
    server
        .add_export(export_x(dir.path(), AllowList::Any))
        .unwrap();
    let h = server.spawn().unwrap();
    let addr = h.local_addr().to_string();
    let name = format!("no\n{}", "n".repeat(4000));
    let e = NbdDevice::connect(&addr, &name)
        .expect_err("no such export")
        .to_string();
    h.shutdown();
    assert!(!e.contains('\n'), "{e}");
    assert!(e.contains("no export of that name"), "{e}");
    assert!(e.len() < 400, "too long: {e}");
}

/// An unknown export, or one the client may not use, is named once in the
/// client's error, by its label: before, the server's refusal quoted the
/// name again, so that its first characters showed twice.
#[test]
fn a_refused_export_is_named_once() {
    use raid_engine::nbd::{AllowList, NbdServer};
    let dir = tempfile::tempdir().unwrap();
    let server = NbdServer::bind("127.0.0.1:0").unwrap();
    server
        .add_export(export_x(dir.path(), AllowList::Any))
        .unwrap();
    let h = server.spawn().unwrap();
    let addr = h.local_addr().to_string();
    for (name, start) in [
        ("nope".to_string(), "nope".to_string()),
        ("q".repeat(4000), "q".repeat(32)),
    ] {
        let e = NbdDevice::connect(&addr, &name)
            .expect_err("no such export")
            .to_string();
        assert_eq!(e.matches(&start).count(), 1, "{e}");
        assert!(e.contains("no export of that name"), "{e}");
    }
    h.shutdown();
}
