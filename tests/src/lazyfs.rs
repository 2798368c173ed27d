//! LazyFS: a FUSE file system that loses, on command, every byte nobody fsynced. A simulated
//! power loss, to check that OK really means "on disk" and not "in a page cache".
//!
//! The file system and its scripts live outside this repository, in `shared/tools/lazyfs`
//! beside the clone (or wherever [`TOOLS_ENV`] says); read its README. [`LazyFs::mount`] mounts
//! it over a fresh temp root with the tools' `mount.sh`; a server keeps its data directory under
//! [`LazyFs::mount_dir`]. One power loss, in this order:
//!
//! 1. SIGKILL the server (it must not write, nor hold unsynced pages, across the loss);
//! 2. [`LazyFs::power_loss`]: LazyFS drops what was not fsynced and says when it is done;
//! 3. start the server again on the same directory and check what it acknowledged.
//!
//! Not every machine can mount FUSE file systems: a test first asks [`LazyFs::available`] and,
//! when it answers why not, prints `skipped: <reason>` and returns.
//!
//! mount.sh leaves LazyFS running in the background, an orphan, and the init of a container
//! does not always reap orphans. So mount.sh runs under a small keeper (Python, see
//! `KEEPER`) that adopts LazyFS as a child subreaper; when its stdin closes (the guard is
//! dropped, or the test process died) the keeper unmounts, stops LazyFS and reaps it. No
//! mount and no process outlives a test.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::OnceLock,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines},
    net::unix::pipe,
    process::{Child, ChildStdin, Command},
};

/// Set this to the directory holding LazyFS's `mount.sh` and `build.sh`; by default the
/// workspace's sibling `../shared/tools/lazyfs`.
pub const TOOLS_ENV: &str = "LAZYFS_TOOLS";

/// How long mount.sh may take (it waits up to 30 s for the mount itself).
const MOUNT_TIMEOUT: Duration = Duration::from_secs(60);

/// How long LazyFS may take to drop its cache and say so; it is memory work, so a hang fails.
const CLEAR_CACHE_TIMEOUT: Duration = Duration::from_secs(30);

/// How long `Drop` waits for the keeper to unmount and reap LazyFS before forcing it.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// The command that drops every unsynced byte: the power loss.
const CLEAR_CACHE: &[u8] = b"lazyfs::clear-cache\n";

/// The line LazyFS writes to `FIFO.done` once the cache is dropped.
const CACHE_CLEARED: &str = "finished::clear-cache";

/// Runs `mount.sh MOUNT ROOT FIFO` as a child subreaper (so LazyFS, orphaned when mount.sh
/// exits, becomes its child) and prints LazyFS's pid. Then it waits for its stdin to close, or
/// for the test to be gone (a broken pipe; SIGINT and SIGHUP are ignored), and tears down:
/// `fusermount3 -u` (else `-uz`), SIGTERM (then SIGKILL) to LazyFS, reap it, and remove the
/// config file mount.sh made for it with mktemp.
const KEEPER: &str = r#"
import ctypes, os, signal, subprocess, sys, time

PR_SET_CHILD_SUBREAPER = 36
ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
# Ctrl-C reaches the whole process group: the teardown must still run once the test is gone.
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)
mount_sh, mnt, root, fifo = sys.argv[1:5]

def log(message):
    print("lazyfs keeper: " + message, file=sys.stderr, flush=True)

def reap_all(deadline):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

started = subprocess.run(["bash", mount_sh, mnt, root, fifo],
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, text=True)
pid = started.stdout.strip()
if started.returncode != 0 or not pid.isdigit():
    log("mount.sh failed (exit %d, printed %r)" % (started.returncode, pid))
    reap_all(time.monotonic() + 5)
    sys.exit(1)
pid = int(pid)
try:
    argv = open("/proc/%d/cmdline" % pid, "rb").read().split(b"\0")
    config = argv[argv.index(b"--config-path") + 1].decode()
except (OSError, ValueError, IndexError):
    config = None
try:
    print(pid, flush=True)
    sys.stdin.read()
except OSError:
    pass  # The test is gone (a broken pipe): tear down all the same.

if subprocess.run(["fusermount3", "-u", mnt]).returncode != 0:
    log("fusermount3 -u failed (a file still open?); detaching lazily with -uz")
    subprocess.run(["fusermount3", "-uz", mnt])
try:
    os.kill(pid, signal.SIGTERM)
except ProcessLookupError:
    pass
if not reap_all(time.monotonic() + 5):
    log("lazyfs ignored SIGTERM; SIGKILL")
    os.kill(pid, signal.SIGKILL)
    reap_all(time.monotonic() + 5)
if config:
    try:
        os.remove(config)
    except OSError:
        pass
"#;

/// A mounted LazyFS over a temp root. Dropping it unmounts it and stops LazyFS; kill every
/// process with files under [`LazyFs::mount_dir`] first (declare the guard before them).
#[derive(Debug)]
pub struct LazyFs {
    /// The keeper; dropped first, so the file system is unmounted before `_dir` is removed.
    keeper: Keeper,
    /// Where the file system is mounted.
    mount_dir: PathBuf,
    /// The command FIFO.
    fifo: PathBuf,
    /// `FIFO.done`, open for reading (and writing, so it never sees EOF) from mount to drop:
    /// LazyFS reads no command until a reader holds it, and a reader that reopened it could
    /// miss an answer.
    done: Lines<BufReader<pipe::Receiver>>,
    /// Holds the root, the mount point, the FIFOs and the keeper's log.
    _dir: TempDir,
}

impl LazyFs {
    /// `Ok` when this machine can mount LazyFS; otherwise why not, in words, for a
    /// `skipped: <reason>` line. Builds LazyFS (once per process) if it is not built yet.
    pub fn available() -> Result<(), String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse is missing (no FUSE in this kernel or container)".into());
        }
        for program in ["fusermount3", "python3", "bash"] {
            if find_on_path(program).is_none() {
                return Err(format!("`{program}` is not on PATH"));
            }
        }
        let tools = tools_dir();
        if !tools.join("mount.sh").is_file() || !tools.join("build.sh").is_file() {
            return Err(format!(
                "no LazyFS tools (mount.sh, build.sh) in {}; set {TOOLS_ENV} to their directory",
                tools.display()
            ));
        }
        if !running_as_root() && !fuse_allows_other() {
            return Err(
                "mount.sh mounts with allow_other, which needs root or `user_allow_other` in \
                 /etc/fuse.conf"
                    .into(),
            );
        }
        static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
        BUILT.get_or_init(|| build(&tools)).clone()
    }

    /// Mounts LazyFS over a fresh temp root and opens its `FIFO.done`.
    pub async fn mount() -> anyhow::Result<Self> {
        if let Err(reason) = Self::available() {
            bail!("LazyFS is not available: {reason}");
        }
        let dir = TempDir::with_prefix("lazyfs-").context("creating the LazyFS directory")?;
        let root = dir.path().join("root");
        let mount_dir = dir.path().join("mnt");
        let fifo = dir.path().join("faults.fifo");
        let keeper =
            Keeper::start(&mount_dir, &root, &fifo, &dir.path().join("keeper.log")).await?;
        // mount.sh returns once the mount is up, and LazyFS makes both FIFOs before mounting.
        let mut done_path = fifo.clone().into_os_string();
        done_path.push(".done");
        let receiver = pipe::OpenOptions::new()
            .read_write(true)
            .open_receiver(&done_path)
            .with_context(|| format!("opening {}", Path::new(&done_path).display()))?;
        Ok(Self {
            keeper,
            mount_dir,
            fifo,
            done: BufReader::new(receiver).lines(),
            _dir: dir,
        })
    }

    /// Where the file system is mounted: put data directories under it.
    pub fn mount_dir(&self) -> &Path {
        &self.mount_dir
    }

    /// Drops every byte written under [`LazyFs::mount_dir`] and not fsynced since, and returns
    /// once LazyFS says it is done. Kill the servers using the directory first.
    pub async fn power_loss(&mut self) -> anyhow::Result<()> {
        let cleared = async {
            let mut command = self.open_fifo().await?;
            // One write, shorter than PIPE_BUF: LazyFS reads it whole, as one command.
            command
                .write_all(CLEAR_CACHE)
                .await
                .context("writing to the LazyFS FIFO")?;
            drop(command);
            while let Some(line) = self.done.next_line().await? {
                if line.trim() == CACHE_CLEARED {
                    return Ok(());
                }
            }
            bail!("FIFO.done closed before `{CACHE_CLEARED}`")
        };
        match tokio::time::timeout(CLEAR_CACHE_TIMEOUT, cleared).await {
            Ok(outcome) => outcome,
            Err(_) => bail!(
                "LazyFS did not answer `{CACHE_CLEARED}` within {CLEAR_CACHE_TIMEOUT:?}; keeper \
                 log:\n{}",
                read_log(&self.keeper.log)
            ),
        }
    }

    /// The command FIFO, for writing. LazyFS opens it when its fault thread starts, which may
    /// trail the mount a little: until then opening fails (ENXIO, no reader), so poll.
    async fn open_fifo(&self) -> anyhow::Result<pipe::Sender> {
        loop {
            match pipe::OpenOptions::new().open_sender(&self.fifo) {
                Ok(sender) => return Ok(sender),
                Err(error) if error.raw_os_error() == Some(ENXIO) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                Err(error) => {
                    return Err(error).with_context(|| format!("opening {}", self.fifo.display()));
                }
            }
        }
    }
}

/// `errno` for "no reader on this FIFO" (Linux).
const ENXIO: i32 = 6;

/// The python3 process running [`KEEPER`]: mount.sh's parent, then LazyFS's.
#[derive(Debug)]
struct Keeper {
    /// The process.
    child: Child,
    /// Its stdin; closing it starts the teardown.
    stdin: Option<ChildStdin>,
    /// LazyFS's process id once mounted, to force it down if the keeper cannot.
    lazyfs_pid: Option<u32>,
    /// The mount point, to check that it is gone.
    mount_dir: PathBuf,
    /// The keeper's stderr (its own and mount.sh's), for failure messages.
    log: PathBuf,
}

impl Keeper {
    /// Runs mount.sh under the keeper and waits for LazyFS's pid (the mount is up then).
    async fn start(mount_dir: &Path, root: &Path, fifo: &Path, log: &Path) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log).context("creating the keeper's log")?;
        let mut child = Command::new("python3")
            .arg("-c")
            .arg(KEEPER)
            .arg(tools_dir().join("mount.sh"))
            .args([mount_dir, root, fifo])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .context("starting python3 (the LazyFS keeper)")?;
        let stdout = child.stdout.take().context("the keeper has no stdout")?;
        let mut keeper = Self {
            stdin: child.stdin.take(),
            child,
            lazyfs_pid: None,
            mount_dir: mount_dir.to_path_buf(),
            log: log.to_path_buf(),
        };
        let announced = tokio::time::timeout(MOUNT_TIMEOUT, async {
            BufReader::new(stdout).lines().next_line().await
        })
        .await;
        match announced {
            Ok(Ok(Some(line))) if line.trim().parse::<u32>().is_ok() => {
                keeper.lazyfs_pid = line.trim().parse().ok();
                Ok(keeper)
            }
            // Dropping `keeper` tears down whatever mount.sh managed to start.
            _ => bail!(
                "LazyFS did not mount {} within {MOUNT_TIMEOUT:?}; keeper log:\n{}",
                mount_dir.display(),
                read_log(log)
            ),
        }
    }

    /// Whether the mount point is still listed in `/proc/mounts`.
    fn is_mounted(&self) -> bool {
        let mount_dir = self.mount_dir.to_string_lossy();
        std::fs::read_to_string("/proc/mounts").is_ok_and(|mounts| {
            mounts
                .lines()
                .any(|line| line.split(' ').nth(1) == Some(&*mount_dir))
        })
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        // Closing the keeper's stdin is its signal to unmount, stop LazyFS and reap it.
        drop(self.stdin.take());
        let deadline = Instant::now() + TEARDOWN_TIMEOUT;
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            eprintln!(
                "LazyFS keeper still running after {TEARDOWN_TIMEOUT:?}; forcing it down. Log:\n{}",
                read_log(&self.log)
            );
            if let Some(pid) = self.lazyfs_pid {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .status();
            }
            let _ = self.child.start_kill();
        }
        if self.is_mounted() {
            let _ = std::process::Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mount_dir)
                .status();
        }
    }
}

/// Where LazyFS's scripts are: [`TOOLS_ENV`], or `shared/tools/lazyfs` beside the workspace.
pub fn tools_dir() -> PathBuf {
    std::env::var_os(TOOLS_ENV).map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/tools/lazyfs"),
        PathBuf::from,
    )
}

/// Runs `build.sh` (idempotent: it only prints the binary's path once built).
fn build(tools: &Path) -> Result<(), String> {
    let output = std::process::Command::new("bash")
        .arg(tools.join("build.sh"))
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("cannot run build.sh: {error}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(10).collect();
        Err(format!(
            "building LazyFS failed ({}):\n{}",
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ))
    }
}

/// The first `program` on PATH.
fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Whether this process runs as root (its real uid, from `/proc/self/status`).
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            == Some("0")
    })
}

/// Whether `/etc/fuse.conf` lets non-root users mount with `allow_other`.
fn fuse_allows_other() -> bool {
    std::fs::read_to_string("/etc/fuse.conf")
        .is_ok_and(|conf| conf.lines().any(|line| line.trim() == "user_allow_other"))
}

/// A log file's contents, or why it cannot be read.
fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|error| format!("(cannot read {}: {error})", path.display()))
}
