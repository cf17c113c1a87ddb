//! Volume data: copying it for snapshots and clones (keeping holes), making a copy durable, and
//! measuring what a volume occupies on disk.
//!
//! A driver that keeps volumes as files or directories (a sparse image per block volume, a
//! directory per mount volume) needs these for CreateSnapshot, CreateVolume from a source and
//! NodeGetVolumeStats; a driver on real block devices does not.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::Error;

/// Copies the file `src` to `dst`, which must not exist, keeping holes: only the data extents
/// of `src` are read and written (`SEEK_DATA`/`SEEK_HOLE`), so a sparse 1 GiB image with a few
/// written blocks copies in milliseconds and stays sparse. On a filesystem without
/// `SEEK_DATA` everything is copied. The copy is not flushed: call [`sync_filesystem`] or
/// `File::sync_all` to make it durable.
///
/// `src` must be a regular file (a block device or a directory is refused, naming it). A copy
/// that fails part way (`ENOSPC`, a read error) removes what it made of `dst`, so a retry
/// starts clean.
///
/// ```
/// # fn main() -> Result<(), csi_node::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let (src, dst) = (dir.path().join("a.img"), dir.path().join("b.img"));
/// std::fs::File::create(&src).unwrap().set_len(1 << 30).unwrap();
/// csi_node::copy_sparse(&src, &dst)?;
/// assert_eq!(std::fs::metadata(&dst).unwrap().len(), 1 << 30);
/// // Nothing was written, so (almost) nothing is allocated.
/// assert!(csi_node::allocated_bytes(&dst)? < 1 << 20);
/// # Ok(()) }
/// ```
pub fn copy_sparse(src: &Path, dst: &Path) -> Result<(), Error> {
    let mut input = fs::File::open(src).map_err(|e| Error::io("open", src, e))?;
    let meta = input.metadata().map_err(|e| Error::io("stat", src, e))?;
    if !meta.is_file() {
        return Err(not_a(src, "regular file"));
    }
    let mut output = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(|e| Error::io("create", dst, e))?;
    copy_extents(&mut input, &mut output, meta.len(), src, dst).inspect_err(|_| {
        drop(output);
        let _ = fs::remove_file(dst);
    })
}

/// What a copy refuses to copy: `path` is not a `kind`.
fn not_a(path: &Path, kind: &str) -> Error {
    Error::io(
        "copy",
        path,
        io::Error::new(io::ErrorKind::InvalidInput, format!("not a {kind}")),
    )
}

/// Copies the data extents of `input` (`len` bytes, from `src`) to `output` (at `dst`).
fn copy_extents(
    input: &mut fs::File,
    output: &mut fs::File,
    len: u64,
    src: &Path,
    dst: &Path,
) -> Result<(), Error> {
    output
        .set_len(len)
        .map_err(|e| Error::io("truncate", dst, e))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < len {
        let data = match rustix::fs::seek(&*input, rustix::fs::SeekFrom::Data(pos)) {
            Ok(d) => d,
            // ENXIO: no data after `pos`, the rest is a hole.
            Err(rustix::io::Errno::NXIO) => break,
            // A filesystem without SEEK_DATA: copy everything.
            Err(_) => pos,
        };
        let hole = rustix::fs::seek(&*input, rustix::fs::SeekFrom::Hole(data)).unwrap_or(len);
        copy_range(input, output, data, hole.min(len), &mut buf, src, dst)?;
        pos = hole.max(data + 1);
    }
    Ok(())
}

/// Copies the bytes `start..end` of `input` to the same offsets of `output`; a failure names
/// the side that failed.
fn copy_range(
    input: &mut fs::File,
    output: &mut fs::File,
    start: u64,
    end: u64,
    buf: &mut [u8],
    src: &Path,
    dst: &Path,
) -> Result<(), Error> {
    input
        .seek(SeekFrom::Start(start))
        .map_err(|e| Error::io("seek", src, e))?;
    output
        .seek(SeekFrom::Start(start))
        .map_err(|e| Error::io("seek", dst, e))?;
    let mut left = end.saturating_sub(start);
    while left > 0 {
        let n = (left as usize).min(buf.len());
        input
            .read_exact(&mut buf[..n])
            .map_err(|e| Error::io("read", src, e))?;
        output
            .write_all(&buf[..n])
            .map_err(|e| Error::io("write", dst, e))?;
        left -= n as u64;
    }
    Ok(())
}

/// Copies the directory tree `src` to `dst`, which must not exist: directories, regular files
/// (sparse, through [`copy_sparse`]), symbolic links (as links) and permissions. Sockets, FIFOs
/// and device nodes are not volume content and are skipped. Not flushed, like [`copy_sparse`].
/// `src` must be a directory; a copy that fails part way removes `dst` whole. What is removed
/// from `src` while it is copied (a volume in use) is left out, not a failure.
///
/// ```
/// # fn main() -> Result<(), csi_node::Error> {
/// let dir = tempfile::tempdir().unwrap();
/// let src = dir.path().join("vol");
/// std::fs::create_dir_all(src.join("sub")).unwrap();
/// std::fs::write(src.join("sub/file"), b"data").unwrap();
/// csi_node::copy_tree(&src, &dir.path().join("copy"))?;
/// assert_eq!(std::fs::read(dir.path().join("copy/sub/file")).unwrap(), b"data");
/// # Ok(()) }
/// ```
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    let meta = fs::metadata(src).map_err(|e| Error::io("stat", src, e))?;
    if !meta.is_dir() {
        return Err(not_a(src, "directory"));
    }
    fs::create_dir(dst).map_err(|e| Error::io("create directory", dst, e))?;
    // `dst` is this call's own (created above, never there before): a copy that fails part
    // way removes it whole.
    copy_tree_into(src, dst, meta.permissions()).inspect_err(|_| {
        let _ = fs::remove_dir_all(dst);
    })
}

/// Copies what is in the directory `src` into the new directory `dst`, then gives `dst`
/// `perms` (last, so that a read-only source directory does not stop its own copy).
fn copy_tree_into(src: &Path, dst: &Path, perms: fs::Permissions) -> Result<(), Error> {
    // A volume in use changes while it is copied: an entry removed between being listed and
    // being copied is left out, as a copy made a moment later would leave it out.
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let entries = match fs::read_dir(src) {
        Ok(entries) => Some(entries),
        Err(e) if gone(&e) => None,
        Err(e) => return Err(Error::io("read directory", src, e)),
    };
    for entry in entries.into_iter().flatten() {
        let entry = entry.map_err(|e| Error::io("read directory", src, e))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let meta = match fs::symlink_metadata(&from) {
            Ok(meta) => meta,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(Error::io("stat", &from, e)),
        };
        let ty = meta.file_type();
        if ty.is_dir() {
            fs::create_dir(&to).map_err(|e| Error::io("create directory", &to, e))?;
            copy_tree_into(&from, &to, meta.permissions())?;
        } else if ty.is_symlink() {
            let link = match fs::read_link(&from) {
                Ok(link) => link,
                Err(e) if gone(&e) => continue,
                Err(e) => return Err(Error::io("read link", &from, e)),
            };
            std::os::unix::fs::symlink(link, &to).map_err(|e| Error::io("symlink", &to, e))?;
        } else if ty.is_file() {
            match copy_sparse(&from, &to) {
                Ok(()) => {}
                Err(Error::NotFound { path }) if path == from => continue,
                Err(e) => return Err(e),
            }
            fs::set_permissions(&to, meta.permissions()).map_err(|e| Error::io("chmod", &to, e))?;
        }
    }
    fs::set_permissions(dst, perms).map_err(|e| Error::io("chmod", dst, e))
}

/// Flushes the whole filesystem holding `path` to stable storage (`syncfs(2)`): one call makes
/// a freshly copied tree durable, where an fsync per file would cost one disk flush each.
pub fn sync_filesystem(path: &Path) -> Result<(), Error> {
    let f = fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::errno("syncfs", path, e))
}

/// The bytes allocated on disk for `path` and, for a directory, everything below it (what
/// `du -s` counts; symbolic links are not followed). A sparse file counts only its data.
///
/// A volume in use changes while it is measured: a file or directory below `path` that is
/// removed between being listed and being looked at counts as nothing, as it would a moment
/// later; only `path` itself missing is [`Error::NotFound`].
pub fn allocated_bytes(path: &Path) -> Result<u64, Error> {
    let meta = fs::symlink_metadata(path).map_err(|e| Error::io("stat", path, e))?;
    Ok(meta.blocks() * 512
        + if meta.is_dir() {
            allocated_below(path)?
        } else {
            0
        })
}

/// What the entries of the directory `dir` occupy, skipping those that go while it is read.
fn allocated_below(dir: &Path) -> Result<u64, Error> {
    let gone = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if gone(&e) => return Ok(0),
        Err(e) => return Err(Error::io("read directory", dir, e)),
    };
    let mut total = 0;
    for entry in entries {
        let path = entry
            .map_err(|e| Error::io("read directory", dir, e))?
            .path();
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if gone(&e) => continue,
            Err(e) => return Err(Error::io("stat", &path, e)),
        };
        total += meta.blocks() * 512;
        if meta.is_dir() {
            total += allocated_below(&path)?;
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_copy_keeps_content_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("a.img");
        fs::File::create(&src).unwrap().set_len(64 << 20).unwrap();
        let mut f = fs::OpenOptions::new().write(true).open(&src).unwrap();
        f.seek(SeekFrom::Start(10 << 20)).unwrap();
        f.write_all(b"hello").unwrap();
        f.seek(SeekFrom::Start((64 << 20) - 3)).unwrap();
        f.write_all(b"end").unwrap();
        drop(f);
        let dst = dir.path().join("b.img");
        copy_sparse(&src, &dst).unwrap();
        assert_eq!(fs::read(&src).unwrap(), fs::read(&dst).unwrap());
        // Far less than 64 MiB is allocated: the holes stayed holes.
        assert!(allocated_bytes(&dst).unwrap() < 8 << 20);
        // The destination is never overwritten.
        assert!(matches!(
            copy_sparse(&src, &dst),
            Err(Error::Io { op: "create", .. })
        ));
        assert!(matches!(
            copy_sparse(&dir.path().join("none"), &dir.path().join("c")),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn a_tree_that_changes_while_it_is_measured_or_copied_is_measured_and_copied() {
        // A workload creating and removing files (and directories) while NodeGetVolumeStats
        // walks its volume: an entry listed and gone before it is looked at made the whole
        // measurement fail with NotFound, which a CO reads as "no such volume".
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        fs::write(root.join("kept"), vec![1u8; 8192]).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let d = root.join(format!("d{}", i % 8));
                    let _ = fs::create_dir(&d);
                    let _ = fs::write(d.join("f"), b"x");
                    let _ = fs::write(root.join(format!("f{}", i % 64)), b"x");
                    let _ = fs::remove_file(root.join(format!("f{}", (i + 32) % 64)));
                    let _ = fs::remove_dir_all(root.join(format!("d{}", (i + 4) % 8)));
                    i += 1;
                }
            })
        };
        let copies = tempfile::tempdir().unwrap();
        let mut errors = Vec::new();
        for i in 0..1500 {
            match allocated_bytes(&root) {
                Ok(n) => assert!(n >= 8192, "{n}"),
                Err(e) => errors.push(e.to_string()),
            }
            // A snapshot of the same volume, by a tree copy, every fifteenth time.
            if i % 15 == 0 {
                let copy = copies.path().join(i.to_string());
                match copy_tree(&root, &copy) {
                    Ok(()) => assert_eq!(fs::read(copy.join("kept")).unwrap().len(), 8192),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().unwrap();
        assert!(
            errors.is_empty(),
            "{} failures, first: {}",
            errors.len(),
            errors[0]
        );
        // The path itself missing is still NotFound.
        assert!(matches!(
            allocated_bytes(&root.join("none")),
            Err(Error::NotFound { .. })
        ));
    }

    #[test]
    fn what_is_not_a_regular_file_or_a_directory_is_refused_and_nothing_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let dst = dir.path().join("dst");
        // A device reads as 0 bytes long: its copy would have been an empty file.
        for src in [Path::new("/dev/null"), dir.path()] {
            let err = copy_sparse(src, &dst).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains("not a regular file"), "{msg}");
            assert!(msg.contains(&src.display().to_string()), "{msg}");
            assert!(!dst.exists(), "{src:?}");
        }
        let file = dir.path().join("file");
        fs::write(&file, b"x").unwrap();
        let err = copy_tree(&file, &dst).unwrap_err();
        assert!(err.to_string().contains("not a directory"), "{err}");
        assert!(!dst.exists());
    }

    #[test]
    fn tree_copy_copies_files_dirs_links_and_modes() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("sub/deeper")).unwrap();
        fs::write(src.join("sub/deeper/f"), b"data").unwrap();
        fs::set_permissions(src.join("sub/deeper/f"), fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::symlink("sub/deeper/f", src.join("link")).unwrap();
        let dst = dir.path().join("dst");
        copy_tree(&src, &dst).unwrap();
        assert_eq!(fs::read(dst.join("sub/deeper/f")).unwrap(), b"data");
        assert_eq!(
            fs::read_link(dst.join("link")).unwrap(),
            Path::new("sub/deeper/f")
        );
        let mode = fs::metadata(dst.join("sub/deeper/f"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        // Allocated bytes count the whole tree: at least the file's block.
        assert!(
            allocated_bytes(&dst).unwrap() >= allocated_bytes(&dst.join("sub/deeper/f")).unwrap()
        );
        sync_filesystem(&dst).unwrap();
    }
}
