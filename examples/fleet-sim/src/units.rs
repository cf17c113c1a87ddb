//! The one size type of the simulator's configuration and report.
//!
//! Sizes and bandwidths are written with explicit units (`"16 TB"`, `"512 GiB"`,
//! `"12.5 GB/s"`: SI prefixes are powers of 1000, IEC prefixes powers of 1024) and held as
//! whole bytes (or bytes per second).

pub use placement::Bytes as Size;
