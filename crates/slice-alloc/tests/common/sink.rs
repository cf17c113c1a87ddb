//! A journal file as a [`JournalSink`]: appends with `write_all`, makes them durable with
//! `File::sync_data` (`fdatasync`). Shared by the group-commit tests and benchmark; the crate
//! itself does no I/O.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

use slice_alloc::JournalSink;

/// An append-only journal file.
pub struct FileSink(pub File);

impl FileSink {
    /// Creates (or truncates) the journal file at `path`.
    pub fn create(path: &Path) -> io::Result<Self> {
        let f = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)?;
        Ok(Self(f))
    }

    /// Opens the journal at `path` truncated to `len` bytes (what recovery said is valid),
    /// positioned at its end, for appending.
    pub fn resume(path: &Path, len: u64) -> io::Result<Self> {
        let f = OpenOptions::new().append(true).open(path)?;
        f.set_len(len)?;
        f.sync_data()?;
        Ok(Self(f))
    }
}

impl JournalSink for FileSink {
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.0.write_all(buf)
    }
    fn sync(&mut self) -> io::Result<()> {
        self.0.sync_data()
    }
}
