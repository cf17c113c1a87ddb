//! The programs the crate runs (`blkid`, `mkfs.*`, `e2fsck`, `resize2fs`, `xfs_growfs`,
//! `losetup`, `wipefs`), each with a bounded wait.
//!
//! A tool that touches a hung device (a dead iSCSI path, a stuck NBD peer, a failing disk) can
//! wait for it forever; a node plugin that waits with it blocks the RPC, and every later RPC that
//! needs the same lock. Every run here is bounded by the tool's timeout ([`Tool::timeout`]):
//! when it passes, the tool's whole process group is killed (`SIGKILL`) and the call returns
//! [`Error::Timeout`], which names the command, the time waited and what to do.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use crate::Error;

/// A program the crate runs. Each has a timeout (a per-tool default, [`Tool::default_timeout`],
/// which [`Tool::set_timeout`] changes for the whole process) and a program (its name, looked up
/// in `PATH`, unless [`Tool::set_program`] gives another).
///
/// ```
/// use std::time::Duration;
/// use csi_node::Tool;
/// // A node whose volumes are large: give mkfs.xfs (which discards every block) longer.
/// Tool::MkfsXfs.set_timeout(Duration::from_secs(15 * 60));
/// assert_eq!(Tool::MkfsXfs.timeout(), Duration::from_secs(15 * 60));
/// assert_eq!(Tool::Blkid.timeout(), Tool::Blkid.default_timeout());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Tool {
    /// `blkid`, which probes what a device holds.
    Blkid,
    /// `mkfs.ext4`.
    MkfsExt4,
    /// `mkfs.xfs`.
    MkfsXfs,
    /// `e2fsck`, run before an offline ext4 resize.
    E2fsck,
    /// `resize2fs`, which grows ext4.
    Resize2fs,
    /// `xfs_growfs`, which grows a mounted XFS.
    XfsGrowfs,
    /// `losetup`, which attaches, refreshes and detaches loop devices.
    Losetup,
    /// `wipefs`, which erases the signatures a `mkfs` killed at its timeout may have left.
    Wipefs,
}

/// What [`Tool::set_timeout`] and [`Tool::set_program`] changed, by [`Tool::index`].
#[derive(Clone)]
struct Setting {
    program: Option<PathBuf>,
    timeout: Option<Duration>,
}

const UNSET: Setting = Setting {
    program: None,
    timeout: None,
};

/// How many tools there are.
const TOOLS: usize = Tool::ALL.len();

static SETTINGS: RwLock<[Setting; TOOLS]> = RwLock::new([UNSET; TOOLS]);

impl Tool {
    /// Every tool (a slice, so that a tool added later changes no type).
    pub const ALL: &'static [Tool] = &[
        Tool::Blkid,
        Tool::MkfsExt4,
        Tool::MkfsXfs,
        Tool::E2fsck,
        Tool::Resize2fs,
        Tool::XfsGrowfs,
        Tool::Losetup,
        Tool::Wipefs,
    ];

    fn index(self) -> usize {
        self as usize
    }

    /// The program's usual name (`mkfs.ext4`).
    pub fn name(self) -> &'static str {
        match self {
            Tool::Blkid => "blkid",
            Tool::MkfsExt4 => "mkfs.ext4",
            Tool::MkfsXfs => "mkfs.xfs",
            Tool::E2fsck => "e2fsck",
            Tool::Resize2fs => "resize2fs",
            Tool::XfsGrowfs => "xfs_growfs",
            Tool::Losetup => "losetup",
            Tool::Wipefs => "wipefs",
        }
    }

    /// How long a run of the tool may take unless [`Tool::set_timeout`] said otherwise: 30
    /// seconds for `blkid`, `losetup` and `wipefs` (they read or clear a few superblocks or make
    /// one ioctl, and take milliseconds on a working device); 5 minutes for `mkfs.ext4` (lazy
    /// initialisation, so the size matters little), `resize2fs` and `xfs_growfs`; 10 minutes for
    /// `mkfs.xfs` (it discards every block first) and `e2fsck -f` (it reads all metadata).
    pub fn default_timeout(self) -> Duration {
        match self {
            Tool::Blkid | Tool::Losetup | Tool::Wipefs => Duration::from_secs(30),
            Tool::MkfsExt4 | Tool::Resize2fs | Tool::XfsGrowfs => Duration::from_secs(5 * 60),
            Tool::MkfsXfs | Tool::E2fsck => Duration::from_secs(10 * 60),
        }
    }

    /// How long a run of the tool may take now: what [`Tool::set_timeout`] last set, or else
    /// [`Tool::default_timeout`].
    pub fn timeout(self) -> Duration {
        settings()[self.index()]
            .timeout
            .unwrap_or_else(|| self.default_timeout())
    }

    /// Sets how long every later run of the tool may take, in this whole process (a node
    /// plugin sets it once at start, from its configuration). A run still going when it
    /// passes is killed with its process group and fails with [`Error::Timeout`]. A zero
    /// timeout kills every run at once: it fails every call that needs the tool;
    /// `Duration::MAX` sets no limit.
    pub fn set_timeout(self, timeout: Duration) {
        settings_mut()[self.index()].timeout = Some(timeout);
    }

    /// The program run for the tool: what [`Tool::set_program`] last set, or else its
    /// [`Tool::name`], looked up in `PATH`.
    pub fn program(self) -> PathBuf {
        settings()[self.index()]
            .program
            .clone()
            .unwrap_or_else(|| PathBuf::from(self.name()))
    }

    /// Runs `program` for the tool from now on, in this whole process: for a node image that
    /// keeps its tools outside `PATH` (`/usr/local/sbin/mkfs.xfs` of a newer xfsprogs), or a
    /// wrapper that runs them in the host's mount namespace (`nsenter`). The program is
    /// called with the tool's own arguments.
    ///
    /// An empty `program` names no program: it restores the default, the tool's
    /// [`Tool::name`] looked up in `PATH` (as a configuration that leaves the setting empty
    /// means), rather than making every later run fail as a missing program with no name.
    /// (It is not refused with an error, as that would change this method's signature for
    /// every caller.)
    ///
    /// ```
    /// use csi_node::Tool;
    /// Tool::Wipefs.set_program("/usr/local/sbin/wipefs");
    /// assert_eq!(Tool::Wipefs.program(), std::path::Path::new("/usr/local/sbin/wipefs"));
    /// Tool::Wipefs.set_program("");
    /// assert_eq!(Tool::Wipefs.program(), std::path::Path::new("wipefs"));
    /// ```
    pub fn set_program(self, program: impl Into<PathBuf>) {
        let program = Some(program.into()).filter(|p| !p.as_os_str().is_empty());
        settings_mut()[self.index()].program = program;
    }

    /// A command that runs the tool's program.
    pub(crate) fn command(self) -> Command {
        Command::new(self.program())
    }
}

fn settings() -> std::sync::RwLockReadGuard<'static, [Setting; TOOLS]> {
    // The settings are plain values, whole after any write: a panic elsewhere spoils nothing.
    SETTINGS.read().unwrap_or_else(|e| e.into_inner())
}

fn settings_mut() -> std::sync::RwLockWriteGuard<'static, [Setting; TOOLS]> {
    SETTINGS.write().unwrap_or_else(|e| e.into_inner())
}

/// Runs `cmd` (made by [`Tool::command`]) for at most the tool's timeout and returns its trimmed
/// standard output; a failure names the command, its status and what it printed on standard
/// error. A program that cannot be started is a missing dependency. The tool reads nothing
/// (its standard input is `/dev/null`) and runs in a process group of its own, which is killed
/// when the timeout passes. Its exit is waited for, not polled for: the call returns as soon as
/// the tool has exited.
pub(crate) fn run(tool: Tool, cmd: &mut Command) -> Result<String, Error> {
    run_with_cleanup(tool, cmd, Box::new(|| {}))
}

/// What runs once a killed tool whose process group was not all dead when [`run_with_cleanup`]
/// returned (its error's `exited: false`: a process of it blocked in the kernel) has died at
/// last, every process of the group: on the thread that reaps it, whenever the kernel lets
/// them go.
pub(crate) type Cleanup = Box<dyn FnOnce() + Send + 'static>;

/// [`run`], and `cleanup` once a tool killed while blocked in the kernel has died with its
/// whole process group (see [`Cleanup`]): for what it did until then, such as a `losetup`
/// whose attach of a file on a hung file system completes after the call returned. Not run
/// (dropped) for a tool that exits by itself or whose group dies within the grace after the
/// kill: the caller sees its error and cleans up then.
pub(crate) fn run_with_cleanup(
    tool: Tool,
    cmd: &mut Command,
    cleanup: Cleanup,
) -> Result<String, Error> {
    use std::os::unix::process::CommandExt;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let timeout = tool.timeout();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::MissingTool {
                    tool: program.clone(),
                }
            } else {
                Error::io("run", PathBuf::from(&program), e)
            }
        })?;
    let started = Instant::now();
    // A timeout too long for the clock (`Duration::MAX`, "no limit") is no deadline at all.
    let deadline = started.checked_add(timeout);
    // The pipes are drained while the tool runs, so that a tool that writes much never blocks
    // on a full pipe; each reader ends when every process holding its pipe has.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    // Told when the tool exits (not polled for: a tool that exits is answered at once), and
    // not reaped by the waiter, so that its pid, which is its group's id, stays its own until
    // it is killed or reaped here.
    let exit = exit_notice(child.id());
    let waited = match deadline {
        Some(d) => exit.recv_timeout(d.saturating_duration_since(Instant::now())),
        None => exit
            .recv()
            .map_err(|_| std::sync::mpsc::RecvTimeoutError::Disconnected),
    };
    let status = match waited {
        Ok(Ok(())) => child
            .wait()
            .map_err(|e| Error::io("wait for", PathBuf::from(&program), e))?,
        Ok(Err(e)) => {
            kill_group(child, &exit, cleanup);
            return Err(Error::io("wait for", PathBuf::from(&program), e));
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            kill_group(child, &exit, cleanup);
            return Err(Error::io(
                "wait for",
                PathBuf::from(&program),
                std::io::Error::other("the thread waiting for the tool ended"),
            ));
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            let pid = child.id();
            let exited = kill_group(child, &exit, cleanup);
            return Err(Error::Timeout {
                command: command_line(cmd),
                tool,
                waited: started.elapsed(),
                pid,
                exited,
            });
        }
    };
    // The tool has exited; what it left running in its group may still hold the pipes.
    let read = |rx: std::sync::mpsc::Receiver<Vec<u8>>| match deadline {
        Some(d) => rx
            .recv_timeout(d.saturating_duration_since(Instant::now()))
            .ok(),
        None => rx.recv().ok(),
    };
    let (Some(out), Some(err)) = (read(stdout), read(stderr)) else {
        // What holds the pipes is left from the tool's group (a process it started and did not
        // wait for): the group still exists while it does, so its id is still the tool's.
        if let Some(pgid) = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        // What is left may be blocked in the kernel, and able to write, like a tool itself.
        let exited = await_group(child.id(), Instant::now() + KILL_GRACE, cleanup);
        return Err(Error::Timeout {
            command: command_line(cmd),
            tool,
            waited: started.elapsed(),
            pid: child.id(),
            exited,
        });
    };
    if status.success() {
        Ok(String::from_utf8_lossy(&out).trim().to_string())
    } else {
        Err(Error::Command {
            command: command_line(cmd),
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&err).trim().to_string(),
        })
    }
}

/// `cmd`'s program and arguments, whole, for [`Error::Command`] and [`Error::Timeout`].
fn command_line(cmd: &Command) -> Vec<std::ffi::OsString> {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(ToOwned::to_owned)
        .collect()
}

/// Reads `pipe` to its end on a thread of its own; the bytes arrive on the channel.
fn drain(pipe: Option<impl Read + Send + 'static>) -> std::sync::mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(buf);
    });
    rx
}

/// Tells on the returned channel when the child `pid` has exited, without reaping it
/// (`waitid` with `WNOWAIT`): the child stays a zombie until `Child::wait` reaps it, so its pid
/// (and its group's id) cannot be given to another process before then. The waiting thread ends
/// when the child exits; a failure to wait is sent instead.
fn exit_notice(pid: u32) -> std::sync::mpsc::Receiver<std::io::Result<()>> {
    use rustix::process::{Pid, WaitId, WaitIdOptions, waitid};
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let result = match i32::try_from(pid).ok().and_then(Pid::from_raw) {
            None => Err(std::io::Error::other(format!("pid {pid} out of range"))),
            Some(pid) => loop {
                match waitid(
                    WaitId::Pid(pid),
                    WaitIdOptions::EXITED | WaitIdOptions::NOWAIT,
                ) {
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => break Err(e.into()),
                    Ok(_) => break Ok(()),
                }
            },
        };
        let _ = tx.send(result);
    });
    rx
}

/// Kills the process group that `child` leads (`SIGKILL` to every process in it) and reaps the
/// child. Returns whether the whole group has died within a second (`exit`, from
/// [`exit_notice`], tells of the child; `/proc` of the rest): a process blocked in the kernel
/// on a hung device (state `D`) dies only once the kernel lets go of it, and may write until
/// then. Otherwise a thread left waiting reaps the child, waits for the rest of the group, and
/// runs `cleanup` once every process of it has died, so that no zombie stays and what they
/// did meanwhile is undone after they can do no more.
fn kill_group(
    mut child: std::process::Child,
    exit: &std::sync::mpsc::Receiver<std::io::Result<()>>,
    cleanup: Cleanup,
) -> bool {
    if let Some(pid) = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
    {
        // The group's id is the child's pid (`process_group(0)`), and the child is not reaped
        // yet, so the id names no one else's group.
        let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
    }
    let _ = child.kill();
    let pgid = child.id();
    let grace = Instant::now() + KILL_GRACE;
    if let Ok(Ok(())) = exit.recv_timeout(KILL_GRACE) {
        // The leader is dead; the rest of its group (what a wrapper such as `nsenter` started)
        // may still be blocked in the kernel, and able to write, after it. Reaped now: the
        // group's id stays reserved while any process of it lives, so it names no one else's
        // group until the group is seen empty.
        let _ = child.wait();
        return await_group(pgid, grace, cleanup);
    }
    std::thread::spawn(move || {
        let _ = child.wait();
        wait_for_group(pgid);
        cleanup();
    });
    false
}

/// How long a killed tool's process group has to die before the call returns without it.
const KILL_GRACE: Duration = Duration::from_secs(1);

/// Waits until `until` for every process of the group `pgid` to die, and returns whether they
/// have. If not, a thread waits on and runs `cleanup` once they have (it is dropped unrun
/// otherwise).
fn await_group(pgid: u32, until: Instant, cleanup: Cleanup) -> bool {
    while group_alive(pgid) && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !group_alive(pgid) {
        return true;
    }
    std::thread::spawn(move || {
        wait_for_group(pgid);
        cleanup();
    });
    false
}

/// Returns once every process of the group `pgid` has died. Looks once a second: a look reads
/// every process's `/proc` entry, and a process may stay blocked in the kernel for hours.
fn wait_for_group(pgid: u32) {
    while group_alive(pgid) {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Whether a process of the group `pgid` is still alive (a zombie is not: it can no longer do
/// anything), as `/proc` of this process's pid namespace shows.
fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return false;
    };
    entries.flatten().any(|e| {
        let name = e.file_name();
        if !name
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            return false;
        };
        // After the command's name, which may hold anything: state, parent, group.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            return false;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next();
        let group = fields.nth(1);
        state != Some("Z") && state != Some("X") && group == Some(pgid.to_string().as_str())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The voluntary context switches of the calling thread so far: each time it slept or
    /// blocked.
    fn wakeups() -> u64 {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    #[test]
    fn the_caller_blocks_until_the_tool_exits_instead_of_polling() {
        // A tool that runs two seconds: a runner that polls wakes every 50 ms at most, so
        // some forty times; one that is told of the exit blocks once (and once more for
        // each pipe and for the spawn).
        let before = wakeups();
        let out = run(
            Tool::Losetup,
            Command::new("sh").args(["-c", "sleep 2; echo done"]),
        )
        .unwrap();
        let woke = wakeups() - before;
        assert_eq!(out, "done");
        assert!(woke < 10, "the caller woke {woke} times while the tool ran");
    }

    #[test]
    fn a_failed_command_shows_a_long_path_argument_by_its_head_and_tail() {
        let long = format!("/{}/pvc-1/mount", "x".repeat(2000));
        let err = run(
            Tool::Losetup,
            Command::new("sh").args(["-c", "exit 3", "sh", &long]),
        )
        .unwrap_err();
        let Error::Command { ref command, .. } = err else {
            panic!("not the tool's failure: {err}");
        };
        assert_eq!(command.last().map(|a| a.len()), Some(long.len()));
        let msg = err.to_string();
        assert!(msg.starts_with("`sh -c \"exit 3\" sh \"/xxx"), "{msg}");
        assert!(msg.contains("xxx/pvc-1/mount\"` failed"), "{msg}");
        assert!(msg.len() < 400, "{} bytes: {msg}", msg.len());
    }

    #[test]
    fn the_exit_status_and_output_of_a_quick_tool_are_read() {
        let err = run(
            Tool::Losetup,
            Command::new("sh").args(["-c", "echo oops >&2; exit 4"]),
        )
        .unwrap_err();
        let Error::Command { status, stderr, .. } = err else {
            panic!("not the tool's failure: {err}");
        };
        assert!(status.ends_with("exit status: 4"), "{status}");
        assert_eq!(stderr, "oops");
        // Many runs in a row, each reaped: no zombie and no waiter left behind blocks the next.
        for i in 0..50 {
            let out = run(Tool::Losetup, Command::new("echo").arg(i.to_string())).unwrap();
            assert_eq!(out, i.to_string());
        }
    }
}
