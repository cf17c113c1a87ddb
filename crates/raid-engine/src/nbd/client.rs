//! The NBD client: a remote export as a [`BlockDevice`].

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::*;
use crate::device::{BlockDevice, check_range};
use crate::error::{EngineError, Result};

/// A member reached over NBD, over one connection. Requests are pipelined:
/// a large read or write is split into requests of 256 KiB with up to 16
/// in flight, several threads may have requests in flight at once, and
/// replies are matched to requests by handle in whatever order the server
/// sends them.
#[derive(Debug)]
pub struct NbdDevice {
    /// The sending half; a request's header and payload are written under
    /// this lock in one go.
    send: Mutex<TcpStream>,
    replies: Mutex<Replies>,
    arrived: Condvar,
    size: u64,
    flags: u16,
    /// `nbd://ADDR/NAME` as given, for [`BlockDevice::describe`].
    url: String,
    /// `url` quoted short, as messages name the peer.
    label: String,
    handle: std::sync::atomic::AtomicU64,
    max_in_flight: std::sync::atomic::AtomicUsize,
    /// How long a waiting request may go without a byte of any reply
    /// before the connection is taken as failed; `None`: no limit.
    request_timeout: Mutex<Option<Duration>>,
    /// Replies that arrived while a request sent before theirs was still
    /// unanswered.
    overtaking: std::sync::atomic::AtomicU64,
}

fn rd<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

impl NbdDevice {
    /// Checks that `addr` has the form `HOST:PORT` (a host, then a port
    /// from 1 to 65535), without resolving or connecting: the rule
    /// [`NbdDevice::connect`] applies before it connects, for a caller
    /// that checks what was typed before it opens anything. A host that
    /// does not resolve, or a server that is not there, is found only by
    /// connecting.
    ///
    /// ```
    /// use raid_engine::nbd::NbdDevice;
    ///
    /// assert!(NbdDevice::check_address("127.0.0.1:10809").is_ok());
    /// assert!(NbdDevice::check_address("[::1]:10809").is_ok());
    /// let e = NbdDevice::check_address("nohost").unwrap_err();
    /// assert_eq!(
    ///     e.to_string(),
    ///     "invalid address: \"nohost\" is not HOST:PORT (NBD's port is usually 10809)"
    /// );
    /// assert!(NbdDevice::check_address("host:0").is_err());
    /// assert!(NbdDevice::check_address("host:http").is_err());
    /// ```
    pub fn check_address(addr: &str) -> Result<()> {
        match addr.rsplit_once(':') {
            Some((host, port))
                if !host.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && port.parse::<u16>().is_ok_and(|p| p != 0) =>
            {
                Ok(())
            }
            _ => Err(crate::error::invalid(
                "address",
                format!(
                    "{} is not HOST:PORT (NBD's port is usually 10809)",
                    storage_units::quote(addr)
                ),
            )),
        }
    }

    /// Connect to `addr` (`host:port`) and open export `name` with
    /// `NBD_OPT_GO`, giving up after [`HANDSHAKE_TIMEOUT`] without an
    /// answer (see [`NbdDevice::connect_timeout`]). A name longer than
    /// [`MAX_NAME_BYTES`] is refused before anything is sent.
    pub fn connect(addr: &str, name: &str) -> Result<Self> {
        Self::connect_inner(addr, name, None, HANDSHAKE_TIMEOUT)
    }

    /// [`NbdDevice::connect`], giving up when the TCP connection, or any
    /// step of the handshake, gets no answer within `timeout` (a peer that
    /// is not an NBD server, or one that hangs): an error naming the step,
    /// where before the call waited forever. The replies to `NBD_OPT_GO`
    /// have `timeout` in all, however many the server sends. Requests
    /// after the handshake have no timeout (a slow drive is not a failed
    /// one) unless [`NbdDevice::set_request_timeout`] sets one.
    pub fn connect_timeout(addr: &str, name: &str, timeout: Duration) -> Result<Self> {
        if timeout.is_zero() {
            return Err(crate::error::invalid(
                "timeout",
                "must be more than zero (a handshake takes a round trip)",
            ));
        }
        Self::connect_inner(addr, name, None, timeout)
    }

    /// Like [`NbdDevice::connect`], from the local address `source` (port
    /// chosen by the system): the address an allow-listing server sees.
    /// Several hosts can be modelled on one machine this way, each with its
    /// own loopback address (`127.0.0.N`).
    pub fn connect_from(addr: &str, name: &str, source: std::net::IpAddr) -> Result<Self> {
        Self::connect_inner(addr, name, Some(source), HANDSHAKE_TIMEOUT)
    }

    fn connect_inner(
        addr: &str,
        name: &str,
        source: Option<std::net::IpAddr>,
        timeout: Duration,
    ) -> Result<Self> {
        // Quoted short: an address or name with control characters, or a
        // long one, would break or drown every message that names the peer.
        let url = format!("nbd://{addr}/{name}");
        let label = storage_units::quote(&url);
        if name.len() > MAX_NAME_BYTES {
            // Said before anything is sent.
            return Err(EngineError::Nbd(format!(
                "{label}: export name of {} bytes is too long: NBD allows at most {MAX_NAME_BYTES}",
                name.len()
            )));
        }
        let nbd = |m: String| EngineError::Nbd(format!("{label}: {m}"));
        // A step that got no answer in time says so (the OS says only
        // "Resource temporarily unavailable").
        let ioe = |what: &str| {
            let what = format!("{label}: {what}");
            move |e: io::Error| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => EngineError::Nbd(format!(
                    "{what}: no answer within {timeout:?} (is it an NBD server, and up?)"
                )),
                io::ErrorKind::UnexpectedEof => EngineError::Nbd(format!(
                    "{what}: the server closed the connection (is it an NBD server?)"
                )),
                _ => EngineError::Io { what, source: e },
            }
        };
        // `host` alone (no port) or an empty address: say what is expected
        // instead of the resolver's "invalid socket address".
        // The address is named once, by the label.
        if let Err(EngineError::Invalid { .. }) = Self::check_address(addr) {
            return Err(nbd(
                "the address is not HOST:PORT (NBD's port is usually 10809)".into(),
            ));
        }
        let sa = addr
            .to_socket_addrs()
            .map_err(ioe("resolve the address"))?
            .next()
            .ok_or_else(|| nbd("address resolves to nothing".into()))?;
        let mut s = match source {
            None => TcpStream::connect_timeout(&sa, timeout).map_err(ioe("connect"))?,
            Some(ip) => {
                use rustix::net::{AddressFamily, SocketType};
                let family = if sa.is_ipv4() {
                    AddressFamily::INET
                } else {
                    AddressFamily::INET6
                };
                let to_io = |e: rustix::io::Errno| io::Error::from(e);
                let fd = rustix::net::socket(family, SocketType::STREAM, None)
                    .map_err(|e| ioe("socket")(to_io(e)))?;
                rustix::net::bind(&fd, &std::net::SocketAddr::new(ip, 0))
                    .map_err(|e| ioe(&format!("bind source address {ip}"))(to_io(e)))?;
                rustix::net::connect(&fd, &sa).map_err(|e| ioe("connect")(to_io(e)))?;
                TcpStream::from(fd)
            }
        };
        let _ = s.set_nodelay(true);
        s.set_read_timeout(Some(timeout))
            .and_then(|()| s.set_write_timeout(Some(timeout)))
            .map_err(ioe("set the handshake timeout"))?;
        let greet: [u8; 18] = rd(&mut s).map_err(ioe("read greeting"))?;
        if greet[..8] != NBDMAGIC.to_be_bytes() || greet[8..16] != IHAVEOPT.to_be_bytes() {
            return Err(nbd("not a newstyle NBD server".into()));
        }
        let hflags = u16::from_be_bytes([greet[16], greet[17]]);
        if hflags & FLAG_FIXED_NEWSTYLE == 0 {
            return Err(nbd(
                "server does not offer the fixed newstyle handshake".into()
            ));
        }
        let mut cflags = CFLAG_FIXED_NEWSTYLE;
        if hflags & FLAG_NO_ZEROES != 0 {
            cflags |= CFLAG_NO_ZEROES;
        }
        s.write_all(&cflags.to_be_bytes())
            .map_err(ioe("send flags"))?;
        let mut data = (name.len() as u32).to_be_bytes().to_vec();
        data.extend_from_slice(name.as_bytes());
        data.extend_from_slice(&1u16.to_be_bytes());
        data.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
        let mut req = IHAVEOPT.to_be_bytes().to_vec();
        req.extend_from_slice(&OPT_GO.to_be_bytes());
        req.extend_from_slice(&(data.len() as u32).to_be_bytes());
        req.extend_from_slice(&data);
        s.write_all(&req).map_err(ioe("send NBD_OPT_GO"))?;
        let mut export: Option<(u64, u16)> = None;
        // The replies to NBD_OPT_GO have `timeout` in all, whatever their
        // number: a server that keeps sending them (or trickles them) is
        // given up on as one that says nothing.
        let deadline = std::time::Instant::now() + timeout;
        let unanswered = || {
            nbd(format!(
                "read option reply: NBD_OPT_GO not answered within {timeout:?} \
                 (is it an NBD server, and up?)"
            ))
        };
        let late = |e: io::Error| match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => unanswered(),
            _ => ioe("read option reply")(e),
        };
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Err(unanswered());
            }
            s.set_read_timeout(Some(left))
                .map_err(ioe("set the handshake timeout"))?;
            let h: [u8; 20] = rd(&mut s).map_err(late)?;
            let magic = u64::from_be_bytes(h[..8].try_into().unwrap_or_default());
            let typ = u32::from_be_bytes(h[12..16].try_into().unwrap_or_default());
            let len = u32::from_be_bytes(h[16..20].try_into().unwrap_or_default());
            if magic != REPLY_MAGIC {
                return Err(nbd(format!("bad option reply magic {magic:#x}")));
            }
            if len > 64 * 1024 {
                return Err(nbd(format!("option reply of {len} bytes is too long")));
            }
            let mut body = vec![0u8; len as usize];
            s.read_exact(&mut body).map_err(late)?;
            match typ {
                REP_ACK => break,
                REP_INFO if body.len() >= 12 && body[..2] == INFO_EXPORT.to_be_bytes() => {
                    let size = u64::from_be_bytes(body[2..10].try_into().unwrap_or_default());
                    let fl = u16::from_be_bytes([body[10], body[11]]);
                    export = Some((size, fl));
                }
                REP_INFO => {}
                t if t & (1 << 31) != 0 => {
                    // The export is named by the label; the server's own
                    // words (up to 64 KiB, any bytes) made one line and
                    // cut short.
                    let said: String = String::from_utf8_lossy(&body)
                        .chars()
                        .map(|c| if c.is_control() { ' ' } else { c })
                        .collect();
                    let said = unnamed(&said, name);
                    return Err(nbd(format!(
                        "{}: {}",
                        rep_err_name(t),
                        storage_units::shorten(&said, 256)
                    )));
                }
                t => return Err(nbd(format!("unexpected option reply type {t}"))),
            }
        }
        let (size, flags) = export
            .ok_or_else(|| nbd("server acknowledged NBD_OPT_GO without export info".into()))?;
        s.set_read_timeout(None)
            .and_then(|()| s.set_write_timeout(None))
            .map_err(ioe("clear the handshake timeout"))?;
        Ok(NbdDevice {
            replies: Mutex::new(Replies {
                reader: Some(s.try_clone().map_err(ioe("clone the connection"))?),
                ..Replies::default()
            }),
            arrived: Condvar::new(),
            send: Mutex::new(s),
            size,
            flags,
            url,
            label,
            handle: std::sync::atomic::AtomicU64::new(1),
            max_in_flight: std::sync::atomic::AtomicUsize::new(WINDOW),
            request_timeout: Mutex::new(None),
            overtaking: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// How many requests one `read_at`/`write_at`/`trim` call keeps in
    /// flight (16 by default, in pieces of 256 KiB; 1 sends whole requests
    /// of up to 32 MiB one after the other, waiting for each reply). Must
    /// be at least 1.
    pub fn set_max_in_flight(&self, n: usize) -> Result<()> {
        if n == 0 {
            return Err(crate::error::invalid(
                "max_in_flight",
                "must be at least 1 (one request at a time)",
            ));
        }
        self.max_in_flight
            .store(n, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// How many replies so far arrived before the reply to a request sent
    /// earlier on this connection (handles are given out in the order the
    /// requests are sent), i.e. were matched out of request order. Zero
    /// for a server that answers in order or a caller that never has two
    /// requests in flight.
    pub fn replies_out_of_order(&self) -> u64 {
        self.overtaking.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Give up on a server that sends nothing while requests wait for
    /// their replies for `timeout` (`None`, the default: wait as long as
    /// it takes, since a slow drive is not a failed one). Once given up
    /// on, every request in flight and every later one fails with an error
    /// naming the export and the timeout, so that a volume marks the
    /// member failed and carries on degraded (as the kernel's NBD client
    /// fails its requests after its timeout) instead of hanging. Refused
    /// when zero.
    pub fn set_request_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        if timeout.is_some_and(|t| t.is_zero()) {
            return Err(crate::error::invalid(
                "request_timeout",
                "must be more than zero, or None for no limit",
            ));
        }
        let send = self.send.lock().map_err(|_| {
            crate::error::invalid("request_timeout", "the connection lock is poisoned")
        })?;
        // One socket: its clone, the reading half, shares the option.
        send.set_read_timeout(timeout)
            .map_err(crate::error::io_err(format!(
                "{}: set the request timeout",
                self.label
            )))?;
        *self
            .request_timeout
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = timeout;
        Ok(())
    }

    /// What a read of the connection that timed out means.
    fn silent_for(&self) -> String {
        let t = *self
            .request_timeout
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match t {
            Some(t) => {
                format!("nothing within {t:?} (the request timeout): the server is taken as failed")
            }
            None => "timed out".into(),
        }
    }

    /// Whether the export is read-only.
    pub fn is_read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    /// Send one request (the header and `payload`) and register it, so
    /// that whichever thread reads its reply knows how many payload bytes
    /// (`reply_len`) follow it. Returns the request's handle.
    fn submit(
        &self,
        cmd: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
        reply_len: u32,
    ) -> io::Result<u64> {
        let mut handle = 0;
        let sent = (|| {
            let mut s = self
                .send
                .lock()
                .map_err(|_| io::Error::other("nbd connection lock poisoned"))?;
            // Handles are given out and registered under the sending lock,
            // so that their order is the order of the requests on the wire.
            handle = self
                .handle
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.lock_replies()?.expected.insert(handle, reply_len);
            let mut hdr = [0u8; 28];
            hdr[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
            hdr[6..8].copy_from_slice(&cmd.to_be_bytes());
            hdr[8..16].copy_from_slice(&handle.to_be_bytes());
            hdr[16..24].copy_from_slice(&offset.to_be_bytes());
            hdr[24..28].copy_from_slice(&len.to_be_bytes());
            s.write_all(&hdr)?;
            if !payload.is_empty() {
                s.write_all(payload)?;
            }
            Ok(())
        })();
        if let Err(e) = sent {
            // A half-sent request leaves the stream unusable for everyone.
            let mut r = self.lock_replies()?;
            r.expected.remove(&handle);
            r.broken = Some(format!("{}: send: {e}", self.label));
            self.arrived.notify_all();
            return Err(e);
        }
        Ok(handle)
    }

    fn lock_replies(&self) -> io::Result<std::sync::MutexGuard<'_, Replies>> {
        self.replies
            .lock()
            .map_err(|_| io::Error::other("nbd reply lock poisoned"))
    }

    /// Wait for the reply to `handle`; its payload (a read's data) goes to
    /// `out`. Replies may come in any order: the waiting thread that finds
    /// the reading side free reads the next reply, keeps it if it is its
    /// own and files it for its owner otherwise.
    fn wait(&self, handle: u64, out: &mut [u8]) -> io::Result<()> {
        let mut r = self.lock_replies()?;
        loop {
            if let Some(done) = r.done.remove(&handle) {
                let data = done?;
                out.copy_from_slice(&data);
                return Ok(());
            }
            if let Some(why) = r.broken.clone() {
                r.expected.remove(&handle);
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, why));
            }
            let Some(mut stream) = r.reader.take() else {
                r = self
                    .arrived
                    .wait(r)
                    .map_err(|_| io::Error::other("nbd reply lock poisoned"))?;
                continue;
            };
            drop(r);
            let head = read_reply_head(&mut stream, &self.label);
            r = self.lock_replies()?;
            let (h, err) = match head {
                Ok(x) => x,
                Err(e) => {
                    r.reader = Some(stream);
                    r.broken = Some(match e.kind() {
                        io::ErrorKind::UnexpectedEof => format!(
                            "{}: the server closed the connection with requests unanswered",
                            self.label
                        ),
                        io::ErrorKind::InvalidData => e.to_string(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                            format!("{}: no reply: {}", self.label, self.silent_for())
                        }
                        _ => format!("{}: read reply: {e}", self.label),
                    });
                    self.arrived.notify_all();
                    continue;
                }
            };
            let Some(len) = r.expected.remove(&h) else {
                r.reader = Some(stream);
                r.broken = Some(format!("{}: reply for an unknown request {h}", self.label));
                self.arrived.notify_all();
                continue;
            };
            if r.expected.keys().any(|&k| k < h) {
                self.overtaking
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            let result = if err != 0 {
                Err(server_error(&self.label, err))
            } else if h == handle {
                // Our own reply: its data goes straight into `out`.
                drop(r);
                let read = stream
                    .read_exact(out)
                    .map_err(|e| self.data_error(e, h, len));
                r = self.lock_replies()?;
                r.reader = Some(stream);
                if let Err(e) = &read {
                    r.broken = Some(e.to_string());
                }
                self.arrived.notify_all();
                return read;
            } else {
                drop(r);
                let mut data = vec![0u8; len as usize];
                let read = stream
                    .read_exact(&mut data)
                    .map(|()| data)
                    .map_err(|e| self.data_error(e, h, len));
                r = self.lock_replies()?;
                if let Err(e) = &read {
                    r.broken = Some(e.to_string());
                }
                read
            };
            r.reader = Some(stream);
            self.arrived.notify_all();
            if h == handle {
                return result.map(|_| ());
            }
            r.done.insert(h, result);
        }
    }

    /// The error of a reply's data (`len` bytes, of request `handle`) that
    /// could not be read: the peer named, and a hang-up said as one.
    fn data_error(&self, e: io::Error, handle: u64, len: u32) -> io::Error {
        let why = match e.kind() {
            io::ErrorKind::UnexpectedEof => {
                "the server closed the connection in the middle of it".to_string()
            }
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => self.silent_for(),
            _ => e.to_string(),
        };
        io::Error::new(
            e.kind(),
            format!(
                "{}: reply to request {handle} ({len} bytes of reply data expected): {why}",
                self.label
            ),
        )
    }

    /// One command over `[offset, offset + len)`, split into requests of at
    /// most [`PIECE`] bytes with up to `max_in_flight` of them in flight
    /// (whole requests up to [`MAX_REQUEST_BYTES`] when that is 1).
    fn pieces(&self, cmd: u16, offset: u64, len: u64, mut io: PieceIo<'_>) -> io::Result<()> {
        let mut in_flight = std::collections::VecDeque::new();
        let mut pos = 0u64;
        let mut first_err = None;
        let window = self
            .max_in_flight
            .load(std::sync::atomic::Ordering::Relaxed);
        // One at a time: whole requests up to the protocol's maximum (no
        // point in splitting what is not overlapped).
        let piece = if window == 1 {
            u64::from(MAX_REQUEST_BYTES)
        } else {
            PIECE
        };
        while pos < len || !in_flight.is_empty() {
            if pos < len && in_flight.len() < window && first_err.is_none() {
                let n = (len - pos).min(piece);
                let range = pos as usize..(pos + n) as usize;
                let (payload, reply_len): (&[u8], u32) = match &io {
                    PieceIo::Write(b) => (&b[range.clone()], 0),
                    PieceIo::Read(_) => (&[], n as u32),
                    PieceIo::None => (&[], 0),
                };
                match self.submit(cmd, offset + pos, n as u32, payload, reply_len) {
                    Ok(h) => in_flight.push_back((h, range)),
                    Err(e) => first_err = Some(e),
                }
                pos += n;
                continue;
            }
            let Some((h, range)) = in_flight.pop_front() else {
                break;
            };
            let out: &mut [u8] = match &mut io {
                PieceIo::Read(b) => &mut b[range],
                _ => &mut [],
            };
            if let Err(e) = self.wait(h, out) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Largest request the client sends (larger I/O is split).
const PIECE: u64 = 256 << 10;
/// Requests one call keeps in flight on the connection, by default.
const WINDOW: usize = 16;

/// The data side of [`NbdDevice::pieces`].
enum PieceIo<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
    None,
}

/// Replies of the connection: the reading half (taken by the thread that
/// reads the next reply), replies read for other threads, and the payload
/// length each outstanding request's reply carries.
#[derive(Debug, Default)]
struct Replies {
    reader: Option<TcpStream>,
    expected: std::collections::HashMap<u64, u32>,
    done: std::collections::HashMap<u64, io::Result<Vec<u8>>>,
    broken: Option<String>,
}

/// A server's words `said` about export `name` without the name, which
/// the client's label says already: where they quote it (as
/// [`storage_units::quote`] does, or whole in `"` or `'`), it becomes
/// "it", so that a long name's first characters are not shown twice.
fn unnamed(said: &str, name: &str) -> String {
    if name.is_empty() {
        return said.to_string();
    }
    let forms = [
        storage_units::quote(name),
        format!("\"{name}\""),
        format!("'{name}'"),
    ];
    forms.iter().fold(said.to_string(), |said, form| {
        said.replace(form.as_str(), "it")
    })
}

fn read_reply_head(s: &mut TcpStream, label: &str) -> io::Result<(u64, u32)> {
    let rep: [u8; 16] = rd(s)?;
    if rep[..4] != SIMPLE_REPLY_MAGIC.to_be_bytes() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{label}: bad reply magic"),
        ));
    }
    let err = u32::from_be_bytes([rep[4], rep[5], rep[6], rep[7]]);
    let handle = u64::from_be_bytes(rep[8..16].try_into().unwrap_or_default());
    Ok((handle, err))
}

fn server_error(label: &str, err: u32) -> io::Error {
    io::Error::other(format!(
        "{label}: server error {err} ({})",
        io::Error::from_raw_os_error(err as i32)
    ))
}

impl BlockDevice for NbdDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        let len = buf.len() as u64;
        self.pieces(CMD_READ, offset, len, PieceIo::Read(buf))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        self.pieces(CMD_WRITE, offset, buf.len() as u64, PieceIo::Write(buf))
    }

    fn flush(&self) -> io::Result<()> {
        if self.flags & TFLAG_SEND_FLUSH == 0 {
            // The server offers no flush: its writes are already durable
            // when acknowledged (the protocol's meaning of the missing flag).
            return Ok(());
        }
        // A flush covers the writes completed before it: every write_at
        // that returned had all its replies.
        let h = self.submit(CMD_FLUSH, 0, 0, &[], 0)?;
        self.wait(h, &mut [])
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.flags & TFLAG_SEND_TRIM == 0 || len == 0 {
            return Ok(());
        }
        self.pieces(CMD_TRIM, offset, len, PieceIo::None)
    }

    fn describe(&self) -> String {
        self.url.clone()
    }

    /// The peer as the device's own errors name it.
    fn shown(&self) -> String {
        self.label.clone()
    }
}

impl Drop for NbdDevice {
    fn drop(&mut self) {
        if let Ok(mut s) = self.send.lock() {
            let mut hdr = [0u8; 28];
            hdr[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
            hdr[6..8].copy_from_slice(&CMD_DISC.to_be_bytes());
            let _ = s.write_all(&hdr);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::unnamed;

    /// Another server's words quoting the name lose it; the label says it.
    #[test]
    fn a_server_quoting_the_name_has_it_taken_out() {
        let long = "n".repeat(300);
        for (said, name, want) in [
            (
                r#"no export named "x""#.to_string(),
                "x",
                "no export named it",
            ),
            (
                "export 'x' is unknown".to_string(),
                "x",
                "export it is unknown",
            ),
            (
                format!("no export named {}", storage_units::quote(&long)),
                long.as_str(),
                "no export named it",
            ),
            ("x is unknown".to_string(), "x", "x is unknown"),
        ] {
            assert_eq!(unnamed(&said, name), want);
        }
    }
}
