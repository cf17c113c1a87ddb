//! NBD, the network transport of the user-space path.
//!
//! [`NbdServer`] exports member devices (the drives of a JBOD) over TCP;
//! each export carries an allow-list of the client addresses (the servers
//! the drive is mapped to) that may open it. [`NbdDevice`] is a client that
//! implements [`crate::BlockDevice`], so a volume can use remote drives as
//! members.
//!
//! Protocol: the fixed newstyle handshake (with `NBD_FLAG_NO_ZEROES`),
//! options `NBD_OPT_GO`, `NBD_OPT_INFO`, `NBD_OPT_LIST`,
//! `NBD_OPT_EXPORT_NAME` and `NBD_OPT_ABORT` (others answer
//! `NBD_REP_ERR_UNSUP`), simple replies, and the commands `READ`, `WRITE`
//! (with `FUA`), `FLUSH`, `TRIM`, `WRITE_ZEROES` and `DISC`, as the NBD
//! protocol document (`doc/proto.md` of the NBD project) specifies them.
//! No TLS: run it on a private storage network.

mod client;
mod server;

pub use client::NbdDevice;
pub use server::{AllowList, Export, NbdServer, ServerHandle};

pub(crate) const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
pub(crate) const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub(crate) const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
pub(crate) const REQUEST_MAGIC: u32 = 0x2560_9513;
pub(crate) const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;

pub(crate) const FLAG_FIXED_NEWSTYLE: u16 = 1;
pub(crate) const FLAG_NO_ZEROES: u16 = 2;
pub(crate) const CFLAG_FIXED_NEWSTYLE: u32 = 1;
pub(crate) const CFLAG_NO_ZEROES: u32 = 2;

pub(crate) const OPT_EXPORT_NAME: u32 = 1;
pub(crate) const OPT_ABORT: u32 = 2;
pub(crate) const OPT_LIST: u32 = 3;
pub(crate) const OPT_INFO: u32 = 6;
pub(crate) const OPT_GO: u32 = 7;

pub(crate) const REP_ACK: u32 = 1;
pub(crate) const REP_SERVER: u32 = 2;
pub(crate) const REP_INFO: u32 = 3;
pub(crate) const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub(crate) const REP_ERR_POLICY: u32 = (1 << 31) + 2;
pub(crate) const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub(crate) const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

pub(crate) const INFO_EXPORT: u16 = 0;
pub(crate) const INFO_NAME: u16 = 1;
pub(crate) const INFO_BLOCK_SIZE: u16 = 3;

pub(crate) const TFLAG_HAS_FLAGS: u16 = 1;
pub(crate) const TFLAG_READ_ONLY: u16 = 2;
pub(crate) const TFLAG_SEND_FLUSH: u16 = 4;
pub(crate) const TFLAG_SEND_FUA: u16 = 8;
pub(crate) const TFLAG_SEND_TRIM: u16 = 32;
pub(crate) const TFLAG_SEND_WRITE_ZEROES: u16 = 64;

pub(crate) const CMD_READ: u16 = 0;
pub(crate) const CMD_WRITE: u16 = 1;
pub(crate) const CMD_DISC: u16 = 2;
pub(crate) const CMD_FLUSH: u16 = 3;
pub(crate) const CMD_TRIM: u16 = 4;
pub(crate) const CMD_WRITE_ZEROES: u16 = 6;
pub(crate) const CMD_FLAG_FUA: u16 = 1;

pub(crate) const EPERM: u32 = 1;
pub(crate) const EIO: u32 = 5;
pub(crate) const EINVAL: u32 = 22;
pub(crate) const ENOSPC: u32 = 28;

/// Longest export name, in bytes (NBD's limit): the server refuses to
/// export, and the client to ask for, a longer one.
pub const MAX_NAME_BYTES: usize = 4096;

/// Largest payload of one request the server accepts and the client sends.
pub const MAX_REQUEST_BYTES: u32 = 32 << 20;

/// How long [`NbdDevice::connect`] waits for the TCP connection and for
/// each answer of the handshake before it gives up.
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// A description of an option reply error, for messages.
pub(crate) fn rep_err_name(t: u32) -> &'static str {
    match t {
        REP_ERR_UNSUP => "NBD_REP_ERR_UNSUP (option not supported)",
        REP_ERR_POLICY => "NBD_REP_ERR_POLICY (refused by the server's policy / allow-list)",
        REP_ERR_INVALID => "NBD_REP_ERR_INVALID (malformed option)",
        REP_ERR_UNKNOWN => "NBD_REP_ERR_UNKNOWN (no such export)",
        _ => "unknown NBD option error",
    }
}
