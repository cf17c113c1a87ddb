//! The simulator's sizes and bandwidths: the workspace's one byte-size type.
//!
//! Sizes and bandwidths are written with explicit units (`"16 TB"`, `"512 GiB"`,
//! `"12.5 GB/s"`: SI prefixes are powers of 1000, IEC prefixes powers of 1024) and held as
//! whole bytes (or bytes per second). The placement crate's own `Bytes` appears only in
//! [`crate::adapter`] and [`crate::fleet`], converted at the boundary.

pub use storage_units::{ByteRate, ByteSize};
