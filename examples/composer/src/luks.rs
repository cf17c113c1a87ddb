//! The dm-crypt/LUKS command sequence of an `encryptionFormat=luks` volume:
//! `luksFormat` on first use, `open` at stage, `close` at unstage, `resize`
//! at expansion, each a `cryptsetup` call through a [`Runner`] so that the
//! arguments and the key handling are checked without device-mapper.
//!
//! The passphrase is the StorageClass's node-stage secret, handed to
//! `cryptsetup` on its standard input (`--key-file -`, read as raw bytes up
//! to the end), never on its command line, where any process could read it
//! in `/proc/PID/cmdline`.
//!
//! `open` needs device-mapper (`/dev/mapper/control`); [`dm_crypt_missing`]
//! says what a host lacks, and the node side answers `FAILED_PRECONDITION`
//! then, never a plaintext volume.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// What one `cryptsetup` call returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    /// The exit code (`None`: ended by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `cryptsetup` with `args`, writing `stdin` (the passphrase) to its
/// standard input when given.
pub trait Runner {
    /// One call; `Err` only when the program could not be run at all.
    fn run(&self, args: &[String], stdin: Option<&[u8]>) -> Result<RunOutput, String>;
}

/// The `cryptsetup` program on `PATH`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemCryptsetup;

impl Runner for SystemCryptsetup {
    fn run(&self, args: &[String], stdin: Option<&[u8]>) -> Result<RunOutput, String> {
        let mut child = Command::new("cryptsetup")
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running cryptsetup: {e}"))?;
        if let (Some(key), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Dropping the pipe after the write is the end of the key.
            pipe.write_all(key)
                .map_err(|e| format!("writing the key to cryptsetup: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for cryptsetup: {e}"))?;
        Ok(RunOutput {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// The `cryptsetup` calls of one LUKS2 volume.
#[derive(Debug, Clone)]
pub struct Luks<R: Runner> {
    runner: R,
    /// Memory cost of argon2id in KiB for `luksFormat` (`None`: the
    /// cryptsetup default, up to 1 GiB measured on the host).
    pub pbkdf_memory_kib: Option<u32>,
    /// Time the key derivation takes at `luksFormat`, in milliseconds
    /// (`None`: the cryptsetup default of 2 s).
    pub iter_time_ms: Option<u32>,
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

impl<R: Runner> Luks<R> {
    /// Calls through `runner`.
    pub fn new(runner: R) -> Self {
        Luks {
            runner,
            pbkdf_memory_kib: None,
            iter_time_ms: None,
        }
    }

    fn call(&self, what: &str, args: Vec<String>, key: Option<&[u8]>) -> Result<String, String> {
        let out = self.runner.run(&args, key)?;
        if out.code == Some(0) {
            Ok(out.stdout)
        } else {
            Err(format!(
                "cryptsetup {what} failed (exit {}): {}",
                out.code.map_or("by signal".into(), |c| c.to_string()),
                out.stderr.trim()
            ))
        }
    }

    /// Whether `dev` holds a LUKS header (`cryptsetup isLuks`).
    pub fn is_luks(&self, dev: &Path) -> Result<bool, String> {
        let out = self.runner.run(&["isLuks".into(), s(dev)], None)?;
        Ok(out.code == Some(0))
    }

    /// Writes a LUKS2 header on `dev` keyed by `key` (destroys what `dev`
    /// held: callers format only a device that [`Luks::is_luks`] denies).
    pub fn format(&self, dev: &Path, key: &[u8]) -> Result<(), String> {
        if key.is_empty() {
            return Err("the LUKS passphrase is empty".into());
        }
        let mut args: Vec<String> = ["luksFormat", "--type", "luks2", "--batch-mode"]
            .map(String::from)
            .to_vec();
        if let Some(m) = self.pbkdf_memory_kib {
            args.extend(["--pbkdf".into(), "argon2id".into()]);
            args.extend(["--pbkdf-memory".into(), m.to_string()]);
        }
        if let Some(t) = self.iter_time_ms {
            args.extend(["--iter-time".into(), t.to_string()]);
        }
        // The data at LUKS2_HEADER_BYTES, where the plan reserved room for
        // the header (cryptsetup's LUKS2 default, said explicitly).
        args.extend([
            "--offset".into(),
            (composer_core::LUKS2_HEADER_BYTES / 512).to_string(),
        ]);
        args.extend(["--key-file".into(), "-".into(), s(dev)]);
        self.call("luksFormat", args, Some(key)).map(drop)
    }

    /// Checks that `key` opens `dev`'s header, without device-mapper.
    pub fn test_key(&self, dev: &Path, key: &[u8]) -> Result<(), String> {
        let args = ["open", "--test-passphrase", "--key-file", "-"]
            .map(String::from)
            .into_iter()
            .chain([s(dev)])
            .collect();
        self.call("open --test-passphrase", args, Some(key))
            .map(drop)
    }

    /// `cryptsetup luksDump`: the header as text.
    pub fn dump(&self, dev: &Path) -> Result<String, String> {
        self.call("luksDump", vec!["luksDump".into(), s(dev)], None)
    }

    /// Opens `dev` as `/dev/mapper/NAME` (needs device-mapper).
    pub fn open(&self, dev: &Path, name: &str, key: &[u8]) -> Result<PathBuf, String> {
        let args = ["open", "--type", "luks2", "--key-file", "-"]
            .map(String::from)
            .into_iter()
            .chain([s(dev), name.to_string()])
            .collect();
        self.call("open", args, Some(key))?;
        Ok(Path::new("/dev/mapper").join(name))
    }

    /// Closes `/dev/mapper/NAME`.
    pub fn close(&self, name: &str) -> Result<(), String> {
        self.call("close", vec!["close".into(), name.into()], None)
            .map(drop)
    }

    /// Grows `/dev/mapper/NAME` to its grown backing device (LUKS2 keeps
    /// the volume key in the kernel keyring, so the passphrase is asked).
    pub fn resize(&self, name: &str, key: &[u8]) -> Result<(), String> {
        let args = ["resize", "--key-file", "-"]
            .map(String::from)
            .into_iter()
            .chain([name.to_string()])
            .collect();
        self.call("resize", args, Some(key)).map(drop)
    }

    /// The stage sequence on `dev`: `luksFormat` when `dev` holds no LUKS
    /// header yet (first use), then `open` as `name`.
    pub fn format_and_open(&self, dev: &Path, name: &str, key: &[u8]) -> Result<PathBuf, String> {
        if !self.is_luks(dev)? {
            self.format(dev, key)?;
        }
        self.open(dev, name, key)
    }
}

/// The device-mapper name of volume `id`: `composer-` and the id with every
/// byte outside `[A-Za-z0-9_.-]` as `_`, at most 127 bytes.
pub fn mapper_name(id: &str) -> String {
    let mut n: String = format!("composer-{id}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    n.truncate(127);
    n
}

/// Whether `program` is a file in a directory of `PATH`.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// What this host lacks for dm-crypt, if anything: device-mapper in the
/// kernel (`/dev/mapper/control` present *and* opening: a container may
/// have the node without the driver, `ENODEV`), its `crypt` target
/// (`dmsetup targets`, or the `dm_crypt` module in sysfs), and `cryptsetup`.
pub fn dm_crypt_missing() -> Vec<String> {
    let mut missing = Vec::new();
    let control = Path::new("/dev/mapper/control");
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(control)
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            missing.push("device-mapper (no /dev/mapper/control)".to_string());
        }
        Err(e) => missing.push(format!("device-mapper (opening /dev/mapper/control: {e})")),
        Ok(_) => {
            let listed = on_path("dmsetup")
                && Command::new("dmsetup")
                    .arg("targets")
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| {
                        o.status.success()
                            && String::from_utf8_lossy(&o.stdout)
                                .lines()
                                .any(|l| l.split_whitespace().next() == Some("crypt"))
                    });
            if !listed && !Path::new("/sys/module/dm_crypt").exists() {
                missing.push(
                    "the dm-crypt target (`dmsetup targets` lists no crypt, and no \
                     /sys/module/dm_crypt: modprobe dm_crypt)"
                        .to_string(),
                );
            }
        }
    }
    if !on_path("cryptsetup") {
        missing.push("cryptsetup (not on PATH)".to_string());
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// One recorded call: the arguments and what went to stdin.
    type Call = (Vec<String>, Option<Vec<u8>>);

    /// Records every call; answers with `code` (and 1 for `isLuks` unless
    /// `luks`).
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<Call>>,
        luks: bool,
        code: i32,
    }

    impl Runner for &Recorder {
        fn run(&self, args: &[String], stdin: Option<&[u8]>) -> Result<RunOutput, String> {
            self.calls
                .lock()
                .unwrap()
                .push((args.to_vec(), stdin.map(<[u8]>::to_vec)));
            let code = if args[0] == "isLuks" {
                i32::from(!self.luks)
            } else {
                self.code
            };
            Ok(RunOutput {
                code: Some(code),
                stdout: String::new(),
                stderr: "No key available with this passphrase.".into(),
            })
        }
    }

    const KEY: &[u8] = b"pass phrase\n\0with bytes";

    fn args(r: &Recorder) -> Vec<Vec<String>> {
        r.calls
            .lock()
            .unwrap()
            .iter()
            .map(|c| c.0.clone())
            .collect()
    }

    #[test]
    fn first_stage_formats_then_opens_with_the_key_on_stdin_only() {
        let r = Recorder::default();
        let l = Luks::new(&r);
        let p = l
            .format_and_open(Path::new("/dev/loop7"), "composer-v1", KEY)
            .unwrap();
        assert_eq!(p, Path::new("/dev/mapper/composer-v1"));
        let calls = r.calls.lock().unwrap().clone();
        let want: [&[&str]; 3] = [
            &["isLuks", "/dev/loop7"],
            &[
                "luksFormat",
                "--type",
                "luks2",
                "--batch-mode",
                "--offset",
                "32768",
                "--key-file",
                "-",
                "/dev/loop7",
            ],
            &[
                "open",
                "--type",
                "luks2",
                "--key-file",
                "-",
                "/dev/loop7",
                "composer-v1",
            ],
        ];
        assert_eq!(calls.len(), want.len());
        for ((got, stdin), want) in calls.iter().zip(want) {
            let want: Vec<String> = want.iter().map(|a| a.to_string()).collect();
            assert_eq!(got, &want);
            // The key goes to whoever needs it, whole, and to no one else.
            let needs = got[0] != "isLuks";
            assert_eq!(stdin.as_deref(), needs.then_some(KEY));
            let text = String::from_utf8_lossy(KEY);
            assert!(got.iter().all(|a| !a.contains(text.trim())), "{got:?}");
        }
    }

    #[test]
    fn a_formatted_device_is_only_opened_and_close_resize_name_the_mapping() {
        let r = Recorder {
            luks: true,
            ..Recorder::default()
        };
        let l = Luks::new(&r);
        l.format_and_open(Path::new("/dev/loop2"), "composer-v2", KEY)
            .unwrap();
        l.resize("composer-v2", KEY).unwrap();
        l.close("composer-v2").unwrap();
        let a = args(&r);
        assert_eq!(a[0][0], "isLuks");
        assert_eq!(a[1][0], "open");
        assert_eq!(a[2], ["resize", "--key-file", "-", "composer-v2"]);
        assert_eq!(a[3], ["close", "composer-v2"]);
        assert_eq!(a.len(), 4, "no luksFormat of a LUKS device: {a:?}");
    }

    #[test]
    fn failures_name_the_step_and_carry_cryptsetups_message() {
        let r = Recorder {
            luks: true,
            code: 2,
            ..Recorder::default()
        };
        let e = Luks::new(&r)
            .open(Path::new("/dev/loop2"), "composer-v2", KEY)
            .unwrap_err();
        assert!(e.contains("cryptsetup open failed (exit 2)"), "{e}");
        assert!(e.contains("No key available"), "{e}");
        let e = Luks::new(&r)
            .format(Path::new("/dev/loop2"), b"")
            .unwrap_err();
        assert!(e.contains("empty"), "{e}");
        assert_eq!(args(&r).len(), 1, "an empty key runs nothing");
    }

    #[test]
    fn mapper_names_are_device_mapper_safe() {
        assert_eq!(mapper_name("pvc-1.a_b"), "composer-pvc-1.a_b");
        assert_eq!(mapper_name("a/b c"), "composer-a_b_c");
        assert_eq!(mapper_name(&"x".repeat(300)).len(), 127);
    }
}
