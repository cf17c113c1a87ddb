//! The NBD client: a remote export as a [`BlockDevice`].

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Mutex;

use super::*;
use crate::device::{BlockDevice, check_range};
use crate::error::{EngineError, Result};

/// A member reached over NBD. Requests are sent one at a time over one
/// connection (a volume fans out over members, not within one).
#[derive(Debug)]
pub struct NbdDevice {
    stream: Mutex<TcpStream>,
    size: u64,
    flags: u16,
    label: String,
    handle: std::sync::atomic::AtomicU64,
}

fn rd<const N: usize>(r: &mut impl Read) -> io::Result<[u8; N]> {
    let mut b = [0u8; N];
    r.read_exact(&mut b)?;
    Ok(b)
}

impl NbdDevice {
    /// Connect to `addr` (`host:port`) and open export `name` with
    /// `NBD_OPT_GO`.
    pub fn connect(addr: &str, name: &str) -> Result<Self> {
        Self::connect_inner(addr, name, None)
    }

    /// Like [`NbdDevice::connect`], from the local address `source` (port
    /// chosen by the system): the address an allow-listing server sees.
    /// Several hosts can be modelled on one machine this way, each with its
    /// own loopback address (`127.0.0.N`).
    pub fn connect_from(addr: &str, name: &str, source: std::net::IpAddr) -> Result<Self> {
        Self::connect_inner(addr, name, Some(source))
    }

    fn connect_inner(addr: &str, name: &str, source: Option<std::net::IpAddr>) -> Result<Self> {
        let label = format!("nbd://{addr}/{name}");
        let nbd = |m: String| EngineError::Nbd(format!("{label}: {m}"));
        let ioe = |what: &str| crate::error::io_err(format!("{label}: {what}"));
        let sa = addr
            .to_socket_addrs()
            .map_err(ioe("resolve"))?
            .next()
            .ok_or_else(|| nbd("address resolves to nothing".into()))?;
        let mut s = match source {
            None => TcpStream::connect(sa).map_err(ioe("connect"))?,
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
        loop {
            let h: [u8; 20] = rd(&mut s).map_err(ioe("read option reply"))?;
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
            s.read_exact(&mut body).map_err(ioe("read option reply"))?;
            match typ {
                REP_ACK => break,
                REP_INFO if body.len() >= 12 && body[..2] == INFO_EXPORT.to_be_bytes() => {
                    let size = u64::from_be_bytes(body[2..10].try_into().unwrap_or_default());
                    let fl = u16::from_be_bytes([body[10], body[11]]);
                    export = Some((size, fl));
                }
                REP_INFO => {}
                t if t & (1 << 31) != 0 => {
                    return Err(nbd(format!(
                        "export {name:?}: {}: {}",
                        rep_err_name(t),
                        String::from_utf8_lossy(&body)
                    )));
                }
                t => return Err(nbd(format!("unexpected option reply type {t}"))),
            }
        }
        let (size, flags) = export
            .ok_or_else(|| nbd("server acknowledged NBD_OPT_GO without export info".into()))?;
        Ok(NbdDevice {
            stream: Mutex::new(s),
            size,
            flags,
            label,
            handle: std::sync::atomic::AtomicU64::new(1),
        })
    }

    /// Whether the export is read-only.
    pub fn is_read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    fn request(
        &self,
        cmd: u16,
        flags: u16,
        offset: u64,
        len: u32,
        payload: &[u8],
        out: Option<&mut [u8]>,
    ) -> io::Result<()> {
        let handle = self
            .handle
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut s = self
            .stream
            .lock()
            .map_err(|_| io::Error::other("nbd connection lock poisoned"))?;
        let mut hdr = [0u8; 28];
        hdr[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
        hdr[4..6].copy_from_slice(&flags.to_be_bytes());
        hdr[6..8].copy_from_slice(&cmd.to_be_bytes());
        hdr[8..16].copy_from_slice(&handle.to_be_bytes());
        hdr[16..24].copy_from_slice(&offset.to_be_bytes());
        hdr[24..28].copy_from_slice(&len.to_be_bytes());
        s.write_all(&hdr)?;
        if !payload.is_empty() {
            s.write_all(payload)?;
        }
        let rep: [u8; 16] = rd(&mut *s)?;
        if rep[..4] != SIMPLE_REPLY_MAGIC.to_be_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad reply magic", self.label),
            ));
        }
        let err = u32::from_be_bytes([rep[4], rep[5], rep[6], rep[7]]);
        if rep[8..16] != handle.to_be_bytes() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: reply for another request", self.label),
            ));
        }
        if err != 0 {
            return Err(io::Error::other(format!(
                "{}: server error {err} ({})",
                self.label,
                io::Error::from_raw_os_error(err as i32)
            )));
        }
        if let Some(out) = out {
            s.read_exact(out)?;
        }
        Ok(())
    }
}

impl BlockDevice for NbdDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        let mut pos = 0usize;
        for chunk in buf.chunks_mut(MAX_REQUEST_BYTES as usize) {
            let n = chunk.len() as u32;
            self.request(CMD_READ, 0, offset + pos as u64, n, &[], Some(chunk))?;
            pos += n as usize;
        }
        Ok(())
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        check_range(self, offset, buf.len())?;
        let mut pos = 0usize;
        for chunk in buf.chunks(MAX_REQUEST_BYTES as usize) {
            let n = chunk.len() as u32;
            self.request(CMD_WRITE, 0, offset + pos as u64, n, chunk, None)?;
            pos += n as usize;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        if self.flags & TFLAG_SEND_FLUSH == 0 {
            // The server offers no flush: its writes are already durable
            // when acknowledged (the protocol's meaning of the missing flag).
            return Ok(());
        }
        self.request(CMD_FLUSH, 0, 0, 0, &[], None)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.flags & TFLAG_SEND_TRIM == 0 || len == 0 {
            return Ok(());
        }
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(u64::from(MAX_REQUEST_BYTES)) as u32;
            self.request(CMD_TRIM, 0, offset + pos, n, &[], None)?;
            pos += u64::from(n);
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

impl Drop for NbdDevice {
    fn drop(&mut self) {
        if let Ok(mut s) = self.stream.lock() {
            let mut hdr = [0u8; 28];
            hdr[..4].copy_from_slice(&REQUEST_MAGIC.to_be_bytes());
            hdr[6..8].copy_from_slice(&CMD_DISC.to_be_bytes());
            let _ = s.write_all(&hdr);
            let _ = s.shutdown(std::net::Shutdown::Both);
        }
    }
}
