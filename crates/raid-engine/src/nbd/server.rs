//! The NBD server: exports with allow-lists, one thread per connection.

use std::collections::BTreeMap;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

use super::*;
use crate::device::BlockDevice;
use crate::error::{EngineError, Result, invalid};

/// Which clients may open an export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowList {
    /// Any client that can reach the port.
    Any,
    /// Only these client addresses (the servers the drive is mapped to).
    Only(Vec<IpAddr>),
}

impl AllowList {
    fn allows(&self, ip: IpAddr) -> bool {
        match self {
            AllowList::Any => true,
            AllowList::Only(v) => v.iter().any(|a| same_ip(*a, ip)),
        }
    }
}

fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |x: IpAddr| match x {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(x, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// One exported drive.
#[derive(Debug, Clone)]
pub struct Export {
    /// Export name (what `NBD_OPT_GO` asks for).
    pub name: String,
    /// The drive.
    pub device: Arc<dyn BlockDevice>,
    /// Who may open it.
    pub allow: AllowList,
    /// Refuse writes.
    pub read_only: bool,
}

type Exports = Arc<RwLock<BTreeMap<String, Export>>>;

/// An NBD server bound to a TCP address.
#[derive(Debug)]
pub struct NbdServer {
    listener: TcpListener,
    exports: Exports,
    stop: Arc<AtomicBool>,
    handshake_timeout: std::time::Duration,
}

/// A running server (see [`NbdServer::spawn`]); dropping it does not stop
/// it, [`ServerHandle::shutdown`] does.
#[derive(Debug)]
pub struct ServerHandle {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    exports: Exports,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    /// Add or replace an export while running.
    pub fn add_export(&self, e: Export) -> Result<()> {
        add(&self.exports, e)
    }
    /// Stop accepting connections and wait for the accept loop to end.
    /// Connections already open finish on their own threads.
    pub fn shutdown(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect(self.addr);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn add(exports: &Exports, e: Export) -> Result<()> {
    if e.name.is_empty() || e.name.len() > MAX_NAME_BYTES {
        return Err(invalid(
            "export name",
            "must be 1 to 4096 bytes (NBD's limit)",
        ));
    }
    exports
        .write()
        .unwrap_or_else(|p| p.into_inner())
        .insert(e.name.clone(), e);
    Ok(())
}

impl NbdServer {
    /// Bind to `addr` (for example `127.0.0.1:0` for a free port).
    pub fn bind(addr: &str) -> Result<Self> {
        let listener = TcpListener::bind(addr).map_err(crate::error::io_err(format!(
            "nbd: bind {}",
            storage_units::quote(addr)
        )))?;
        Ok(NbdServer {
            listener,
            exports: Arc::new(RwLock::new(BTreeMap::new())),
            stop: Arc::new(AtomicBool::new(false)),
            handshake_timeout: HANDSHAKE_TIMEOUT,
        })
    }

    /// How long a client has to complete the handshake (its flags and
    /// options up to `NBD_OPT_GO` or `NBD_OPT_EXPORT_NAME`), from the
    /// moment it connects; [`HANDSHAKE_TIMEOUT`] by default. A client that
    /// takes longer (one that connects and says nothing, or trickles its
    /// options) is hung up on, so that it does not hold a thread and a
    /// socket for ever. Once an export is open there is no limit: a client
    /// may stay idle between requests. Must be more than zero.
    pub fn with_handshake_timeout(mut self, timeout: std::time::Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(invalid(
                "handshake_timeout",
                "must be more than zero (a handshake takes a round trip)",
            ));
        }
        self.handshake_timeout = timeout;
        Ok(self)
    }

    /// Add or replace an export.
    pub fn add_export(&self, e: Export) -> Result<()> {
        add(&self.exports, e)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener
            .local_addr()
            .map_err(crate::error::io_err("nbd: local address"))
    }

    /// Serve on a background thread.
    pub fn spawn(self) -> Result<ServerHandle> {
        let addr = self.local_addr()?;
        let stop = self.stop.clone();
        let exports = self.exports.clone();
        let thread = std::thread::Builder::new()
            .name("nbd-accept".into())
            .spawn(move || self.serve())
            .map_err(crate::error::io_err("nbd: spawn accept thread"))?;
        Ok(ServerHandle {
            addr,
            stop,
            thread: Some(thread),
            exports,
        })
    }

    /// Accept connections until stopped, one thread per connection.
    pub fn serve(&self) {
        for conn in self.listener.incoming() {
            if self.stop.load(Ordering::SeqCst) {
                break;
            }
            let Ok(stream) = conn else { continue };
            let exports = self.exports.clone();
            let timeout = self.handshake_timeout;
            let _ = std::thread::Builder::new()
                .name("nbd-conn".into())
                .spawn(move || {
                    // The error names the client (`nbd client IP:PORT: ...`).
                    if let Err(e) = serve_conn(stream, &exports, timeout) {
                        tracing::debug!("nbd connection ended: {e}");
                    }
                });
        }
    }
}

fn rd_u16(r: &mut impl Read) -> io::Result<u16> {
    let mut b = [0u8; 2];
    r.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}
fn rd_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}
fn rd_u64(r: &mut impl Read) -> io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_be_bytes(b))
}

fn opt_reply(w: &mut impl Write, opt: u32, typ: u32, data: &[u8]) -> io::Result<()> {
    w.write_all(&REPLY_MAGIC.to_be_bytes())?;
    w.write_all(&opt.to_be_bytes())?;
    w.write_all(&typ.to_be_bytes())?;
    w.write_all(&(data.len() as u32).to_be_bytes())?;
    w.write_all(data)
}

fn tflags(e: &Export) -> u16 {
    let mut f = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA;
    if e.read_only {
        f |= TFLAG_READ_ONLY;
    } else {
        f |= TFLAG_SEND_TRIM | TFLAG_SEND_WRITE_ZEROES;
    }
    f
}

fn serve_conn(stream: TcpStream, exports: &Exports, timeout: std::time::Duration) -> Result<()> {
    // The client's address names it in every error (its port tells two
    // connections from one host apart); the allow-list goes by its IP.
    let client = stream
        .peer_addr()
        .map_err(crate::error::io_err("nbd: peer address"))?;
    let peer = client.ip();
    let _ = stream.set_nodelay(true);
    // The handshake has `timeout` in all: each read of it may wait only
    // for what is left (the socket's timeout, shared by its clones).
    let deadline = std::time::Instant::now() + timeout;
    let socket = stream
        .try_clone()
        .map_err(crate::error::io_err("nbd: clone socket"))?;
    let in_time = |what: &str| -> Result<()> {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(EngineError::Nbd(format!(
                "nbd client {client}: handshake not done within {timeout:?} ({what}): hung up"
            )));
        }
        socket
            .set_read_timeout(Some(left))
            .and_then(|()| socket.set_write_timeout(Some(left)))
            .map_err(crate::error::io_err("nbd: set the handshake timeout"))
    };
    // A read of the handshake that timed out says so, naming the client.
    let late = |what: &'static str| {
        move |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => EngineError::Nbd(format!(
                "nbd client {client}: handshake not done within {timeout:?} ({what}): hung up"
            )),
            _ => EngineError::Io {
                what: format!("nbd client {client}: {what}"),
                source: e,
            },
        }
    };
    in_time("greeting")?;
    let mut r = BufReader::new(
        stream
            .try_clone()
            .map_err(crate::error::io_err("nbd: clone socket"))?,
    );
    let mut w = BufWriter::new(stream);
    w.write_all(&NBDMAGIC.to_be_bytes())
        .and_then(|()| w.write_all(&IHAVEOPT.to_be_bytes()))
        .and_then(|()| w.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes()))
        .and_then(|()| w.flush())
        .map_err(crate::error::io_err(format!(
            "nbd client {client}: send greeting"
        )))?;
    let cflags = rd_u32(&mut r).map_err(late("read client flags"))?;
    if cflags & !(CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES) != 0 {
        return Err(EngineError::Nbd(format!(
            "nbd client {client}: client flags {cflags:#x} include unknown bits"
        )));
    }
    let no_zeroes = cflags & CFLAG_NO_ZEROES != 0;
    let lookup = |name: &str| -> std::result::Result<Export, u32> {
        let ex = exports.read().unwrap_or_else(|p| p.into_inner());
        match ex.get(name) {
            None => Err(REP_ERR_UNKNOWN),
            Some(e) if !e.allow.allows(peer) => Err(REP_ERR_POLICY),
            Some(e) => Ok(e.clone()),
        }
    };
    // Option haggling.
    let export = loop {
        in_time("read option")?;
        let magic = rd_u64(&mut r).map_err(late("read option"))?;
        if magic != IHAVEOPT {
            return Err(EngineError::Nbd(format!(
                "nbd client {client}: bad option magic {magic:#x}"
            )));
        }
        let opt = rd_u32(&mut r).map_err(late("read option"))?;
        let len = rd_u32(&mut r).map_err(late("read option"))?;
        if len > 64 * 1024 {
            return Err(EngineError::Nbd(format!(
                "nbd client {client}: option {opt} data of {len} bytes is too long"
            )));
        }
        let mut data = vec![0u8; len as usize];
        r.read_exact(&mut data).map_err(late("read option data"))?;
        let res: io::Result<Option<Export>> = (|| match opt {
            OPT_EXPORT_NAME => {
                let name = String::from_utf8_lossy(&data).into_owned();
                match lookup(&name) {
                    Ok(e) => {
                        w.write_all(&e.device.size().to_be_bytes())?;
                        w.write_all(&tflags(&e).to_be_bytes())?;
                        if !no_zeroes {
                            w.write_all(&[0u8; 124])?;
                        }
                        Ok(Some(e))
                    }
                    // This option has no error reply: the server hangs up.
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::PermissionDenied,
                        format!("export {} refused or unknown", storage_units::quote(&name)),
                    )),
                }
            }
            OPT_ABORT => {
                opt_reply(&mut w, opt, REP_ACK, &[])?;
                w.flush()?;
                Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "client aborted",
                ))
            }
            OPT_LIST => {
                if !data.is_empty() {
                    opt_reply(&mut w, opt, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")?;
                    return Ok(None);
                }
                let names: Vec<String> = exports
                    .read()
                    .unwrap_or_else(|p| p.into_inner())
                    .values()
                    .filter(|e| e.allow.allows(peer))
                    .map(|e| e.name.clone())
                    .collect();
                for n in names {
                    let mut d = (n.len() as u32).to_be_bytes().to_vec();
                    d.extend_from_slice(n.as_bytes());
                    opt_reply(&mut w, opt, REP_SERVER, &d)?;
                }
                opt_reply(&mut w, opt, REP_ACK, &[])?;
                Ok(None)
            }
            OPT_INFO | OPT_GO => {
                let parsed = (|| {
                    let nl = u32::from_be_bytes(data.get(0..4)?.try_into().ok()?) as usize;
                    let name = data.get(4..4 + nl)?;
                    let nreq_at = 4 + nl;
                    let nreq = u16::from_be_bytes(data.get(nreq_at..nreq_at + 2)?.try_into().ok()?);
                    let reqs = data.get(nreq_at + 2..)?;
                    if reqs.len() != 2 * nreq as usize {
                        return None;
                    }
                    let reqs: Vec<u16> = reqs
                        .chunks(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]]))
                        .collect();
                    Some((String::from_utf8_lossy(name).into_owned(), reqs))
                })();
                let Some((name, reqs)) = parsed else {
                    opt_reply(
                        &mut w,
                        opt,
                        REP_ERR_INVALID,
                        b"malformed NBD_OPT_GO/INFO data",
                    )?;
                    return Ok(None);
                };
                let e = match lookup(&name) {
                    Ok(e) => e,
                    Err(code) => {
                        // The client knows the name it asked for and
                        // names it; the refusal does not say it again.
                        let msg = if code == REP_ERR_POLICY {
                            format!("client {peer} is not on the export's allow-list")
                        } else {
                            "no export of that name".to_string()
                        };
                        opt_reply(&mut w, opt, code, msg.as_bytes())?;
                        return Ok(None);
                    }
                };
                let mut info = INFO_EXPORT.to_be_bytes().to_vec();
                info.extend_from_slice(&e.device.size().to_be_bytes());
                info.extend_from_slice(&tflags(&e).to_be_bytes());
                opt_reply(&mut w, opt, REP_INFO, &info)?;
                if reqs.contains(&INFO_NAME) {
                    let mut d = INFO_NAME.to_be_bytes().to_vec();
                    d.extend_from_slice(e.name.as_bytes());
                    opt_reply(&mut w, opt, REP_INFO, &d)?;
                }
                let mut bs = INFO_BLOCK_SIZE.to_be_bytes().to_vec();
                bs.extend_from_slice(&1u32.to_be_bytes());
                bs.extend_from_slice(&4096u32.to_be_bytes());
                bs.extend_from_slice(&MAX_REQUEST_BYTES.to_be_bytes());
                opt_reply(&mut w, opt, REP_INFO, &bs)?;
                opt_reply(&mut w, opt, REP_ACK, &[])?;
                Ok((opt == OPT_GO).then_some(e))
            }
            _ => {
                opt_reply(&mut w, opt, REP_ERR_UNSUP, b"option not supported")?;
                Ok(None)
            }
        })();
        w.flush().map_err(crate::error::io_err(format!(
            "nbd client {client}: send option reply"
        )))?;
        match res.map_err(crate::error::io_err(format!(
            "nbd client {client}: option {opt}"
        )))? {
            Some(e) => break e,
            None => continue,
        }
    };
    // Open: a client may stay idle between requests.
    socket
        .set_read_timeout(None)
        .and_then(|()| socket.set_write_timeout(None))
        .map_err(crate::error::io_err(format!(
            "nbd client {client}: clear the handshake timeout"
        )))?;
    transmission(&mut r, &mut w, &export, client)
}

fn reply(w: &mut impl Write, err: u32, handle: u64, data: &[u8]) -> io::Result<()> {
    w.write_all(&SIMPLE_REPLY_MAGIC.to_be_bytes())?;
    w.write_all(&err.to_be_bytes())?;
    w.write_all(&handle.to_be_bytes())?;
    w.write_all(data)?;
    w.flush()
}

fn errno_of(e: &io::Error) -> u32 {
    match e.kind() {
        io::ErrorKind::InvalidInput => EINVAL,
        io::ErrorKind::PermissionDenied => EPERM,
        io::ErrorKind::StorageFull => ENOSPC,
        _ => EIO,
    }
}

/// Serves the requests of `client` on export `e` until it disconnects; an
/// error names the client (`nbd client IP:PORT: read request: ...`).
fn transmission(
    r: &mut impl Read,
    w: &mut impl Write,
    e: &Export,
    client: SocketAddr,
) -> Result<()> {
    let io = |what: &str| crate::error::io_err(format!("nbd client {client}: {what}"));
    let dev = &e.device;
    let mut buf = Vec::new();
    loop {
        let magic = rd_u32(r).map_err(io("read request"))?;
        if magic != REQUEST_MAGIC {
            return Err(EngineError::Nbd(format!(
                "nbd client {client}: bad request magic {magic:#x}"
            )));
        }
        let flags = rd_u16(r).map_err(io("read request"))?;
        let cmd = rd_u16(r).map_err(io("read request"))?;
        let handle = rd_u64(r).map_err(io("read request"))?;
        let offset = rd_u64(r).map_err(io("read request"))?;
        let len = rd_u32(r).map_err(io("read request"))?;
        let in_range = offset
            .checked_add(u64::from(len))
            .is_some_and(|end| end <= dev.size());
        let res: io::Result<()> = match cmd {
            CMD_READ => {
                if len > MAX_REQUEST_BYTES || !in_range {
                    reply(w, EINVAL, handle, &[])
                } else {
                    buf.resize(len as usize, 0);
                    match dev.read_at(&mut buf, offset) {
                        Ok(()) => reply(w, 0, handle, &buf),
                        Err(err) => reply(w, errno_of(&err), handle, &[]),
                    }
                }
            }
            CMD_WRITE => {
                if len > MAX_REQUEST_BYTES {
                    return Err(EngineError::Nbd(format!(
                        "nbd client {client}: write of {len} bytes exceeds the {MAX_REQUEST_BYTES}-byte maximum"
                    )));
                }
                buf.resize(len as usize, 0);
                r.read_exact(&mut buf).map_err(io("read write payload"))?;
                let st = if e.read_only {
                    Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
                } else if !in_range {
                    Err(io::Error::new(io::ErrorKind::InvalidInput, "range"))
                } else {
                    dev.write_at(&buf, offset).and_then(|()| {
                        if flags & CMD_FLAG_FUA != 0 {
                            dev.flush()
                        } else {
                            Ok(())
                        }
                    })
                };
                reply(w, st.as_ref().map_or_else(errno_of, |_| 0), handle, &[])
            }
            CMD_DISC => return Ok(()),
            CMD_FLUSH => {
                let st = dev.flush();
                reply(w, st.as_ref().map_or_else(errno_of, |_| 0), handle, &[])
            }
            CMD_TRIM | CMD_WRITE_ZEROES => {
                let st = if e.read_only {
                    Err(io::Error::new(io::ErrorKind::PermissionDenied, "read-only"))
                } else if !in_range {
                    Err(io::Error::new(io::ErrorKind::InvalidInput, "range"))
                } else if cmd == CMD_TRIM {
                    dev.trim(offset, u64::from(len))
                } else {
                    write_zeroes(dev.as_ref(), offset, u64::from(len))
                };
                let st = st.and_then(|()| {
                    if flags & CMD_FLAG_FUA != 0 {
                        dev.flush()
                    } else {
                        Ok(())
                    }
                });
                reply(w, st.as_ref().map_or_else(errno_of, |_| 0), handle, &[])
            }
            _ => reply(w, EINVAL, handle, &[]),
        };
        res.map_err(io("send reply"))?;
    }
}

fn write_zeroes(dev: &dyn BlockDevice, offset: u64, len: u64) -> io::Result<()> {
    let zeros = vec![0u8; (1 << 20).min(len as usize)];
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(zeros.len() as u64) as usize;
        dev.write_at(&zeros[..n], offset + pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves one connection of a raw client that opens export `x` by
    /// `NBD_OPT_EXPORT_NAME` and then runs `then`; returns the error that
    /// ended the connection and the client's address.
    fn ended_by(then: impl FnOnce(&mut TcpStream) + Send + 'static) -> (String, SocketAddr) {
        let dir = tempfile::tempdir().unwrap();
        let file =
            crate::FileDevice::create(dir.path().join("d"), 1 << 20, crate::CacheMode::Buffered)
                .unwrap();
        let exports: Exports = Arc::new(RwLock::new(BTreeMap::new()));
        add(
            &exports,
            Export {
                name: "x".into(),
                device: Arc::new(file),
                allow: AllowList::Any,
                read_only: false,
            },
        )
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).unwrap();
            let me = s.local_addr().unwrap();
            let mut greeting = [0u8; 18];
            s.read_exact(&mut greeting).unwrap();
            let mut hello = (CFLAG_FIXED_NEWSTYLE | CFLAG_NO_ZEROES)
                .to_be_bytes()
                .to_vec();
            hello.extend_from_slice(&IHAVEOPT.to_be_bytes());
            hello.extend_from_slice(&OPT_EXPORT_NAME.to_be_bytes());
            hello.extend_from_slice(&1u32.to_be_bytes());
            hello.push(b'x');
            s.write_all(&hello).unwrap();
            // The export's size and flags (no zeroes asked).
            let mut opened = [0u8; 10];
            s.read_exact(&mut opened).unwrap();
            then(&mut s);
            me
        });
        let (stream, _) = listener.accept().unwrap();
        let e = serve_conn(stream, &exports, HANDSHAKE_TIMEOUT)
            .expect_err("the connection ended without an error");
        (e.to_string(), client.join().unwrap())
    }

    /// An error after the export is open names the client (address and
    /// port) in its message. Before, it said only "nbd: read request: ..."
    /// or "nbd: bad request magic ...", the client being a tracing field.
    #[test]
    fn errors_after_the_export_is_open_name_the_client() {
        let (e, me) = ended_by(|s| s.write_all(&[0xab; 28]).unwrap());
        assert!(
            e.starts_with(&format!("nbd client {me}: bad request magic 0xabababab")),
            "{e}"
        );
        // A request cut short: the client hangs up in its middle.
        let (e, me) = ended_by(|s| s.write_all(&REQUEST_MAGIC.to_be_bytes()).unwrap());
        assert!(
            e.starts_with(&format!("nbd client {me}: read request: ")),
            "{e}"
        );
    }
}
