//! Any service binary of this project, run as a child process.
//!
//! Every server here follows one protocol: when it is ready it prints exactly one line
//! `listening on ADDR` to stdout (logs go to stderr). [`ServiceProcess::spawn`] waits for that
//! line, so a test never races the server's startup and never needs a fixed port.

use std::{
    ffi::OsString,
    io,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, bail, ensure};
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};
use tonic::transport::{Channel, Endpoint};

/// How long a service may take from exec to its `listening on` line. Generous, because sled
/// recovery after a SIGKILL on a busy CI machine is slow; a hang must still fail, not block.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a client may take to open its connection to a service that said it is listening.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `Drop` waits for a SIGKILLed child to be gone before letting its directories go.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(2);

/// The prefix of the one stdout line that announces readiness.
const LISTENING_PREFIX: &str = "listening on ";

/// Finds a binary of this workspace.
///
/// `override_var` (e.g. `STORE_SVC_BIN`) wins when set. Otherwise the binary must sit next to the
/// running executable's directory: tests run from `target/<profile>/deps/`, binaries are built
/// into `target/<profile>/`, and a tool built as a binary of this crate sits beside them.
pub fn locate_binary(name: &str, override_var: &str) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os(override_var) {
        let path = PathBuf::from(path);
        ensure!(
            path.is_file(),
            "{override_var}={} does not name a file",
            path.display()
        );
        return Ok(path);
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let found = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file());
    match found {
        Some(path) => Ok(path),
        None => bail!(
            "the `{name}` binary was not found next to {}; run `cargo build --workspace --bins` \
             first (cargo test does not build other crates' binaries), or set {override_var} to \
             its path",
            exe.display()
        ),
    }
}

/// A signal a test may send to ask a service to shut down gracefully.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM: what Kubernetes sends.
    Term,
    /// SIGINT: what Ctrl-C sends.
    Int,
}

impl Signal {
    /// The name `kill -s` understands.
    fn name(self) -> &'static str {
        match self {
            Signal::Term => "TERM",
            Signal::Int => "INT",
        }
    }
}

/// How to start a service: program, flags, environment.
#[derive(Clone, Debug)]
pub struct ServiceCommand {
    /// The binary to run.
    program: PathBuf,
    /// Its flags, in order.
    args: Vec<OsString>,
    /// Environment variables set for the child on top of the inherited ones.
    envs: Vec<(OsString, OsString)>,
    /// Inherited variables with these prefixes are removed, so a developer's `STORE_*` settings
    /// cannot change what a test starts.
    cleared_env_prefixes: Vec<String>,
}

impl ServiceCommand {
    /// A command that runs `program` with no flags.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        Self {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            cleared_env_prefixes: Vec::new(),
        }
    }

    /// Adds one flag or flag value.
    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets one environment variable for the child.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Drops every inherited environment variable whose name starts with `prefix`.
    pub fn clear_env_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.cleared_env_prefixes.push(prefix.into());
        self
    }

    /// The binary's file name, for messages.
    fn label(&self) -> String {
        self.program.file_name().map_or_else(
            || self.program.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        )
    }
}

/// A running service. Dropping it SIGKILLs the child, so no process outlives its test.
#[derive(Debug)]
pub struct ServiceProcess {
    /// The binary's file name, to label messages.
    label: String,
    /// The child; `kill_on_drop` is set as a second line of defence behind our `Drop`.
    child: Child,
    /// Kept apart from `child`, which forgets its id once reaped.
    pid: u32,
    /// Where the service said it listens; always a loopback address.
    addr: SocketAddr,
    /// The child's stderr (its logs), shown when something fails.
    stderr_path: PathBuf,
    /// Owns the directory of `stderr_path`; declared after `child` so it is removed only after
    /// the child is gone.
    _logs: TempDir,
}

impl ServiceProcess {
    /// Starts `command` and waits (up to [`READY_TIMEOUT`]) for its `listening on ADDR` line.
    pub async fn spawn(command: &ServiceCommand) -> anyhow::Result<Self> {
        let label = command.label();
        let logs = tempfile::Builder::new()
            .prefix(&format!("{label}-logs-"))
            .tempdir()
            .context("creating a log directory")?;
        let stderr_path = logs.path().join("stderr.log");
        // A file, not a pipe: the child can log as much as it likes without ever blocking on us.
        let stderr = std::fs::File::create(&stderr_path).context("creating the stderr log")?;

        let mut cmd = Command::new(&command.program);
        cmd.args(&command.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(stderr))
            .kill_on_drop(true);
        for (name, _) in std::env::vars_os() {
            let cleared = name.to_str().is_some_and(|name| {
                command
                    .cleared_env_prefixes
                    .iter()
                    .any(|prefix| name.starts_with(prefix.as_str()))
            });
            if cleared {
                cmd.env_remove(&name);
            }
        }
        cmd.envs(command.envs.iter().map(|(key, value)| (key, value)));

        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", command.program.display()))?;
        let pid = child.id().context("the child has no pid")?;
        let stdout = child.stdout.take().context("the child has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();

        let announced = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addr) = line.strip_prefix(LISTENING_PREFIX) {
                    return Ok(addr.trim().parse::<SocketAddr>()?);
                }
            }
            bail!("stdout closed before a `{LISTENING_PREFIX}ADDR` line")
        })
        .await
        .unwrap_or_else(|_| bail!("no `{LISTENING_PREFIX}ADDR` line within {READY_TIMEOUT:?}"));

        let addr = match announced {
            Ok(addr) if addr.ip().is_loopback() => addr,
            outcome => {
                let reason = match outcome {
                    Ok(addr) => format!("it listens on {addr}, outside 127.0.0.0/8"),
                    Err(error) => format!("{error:#}"),
                };
                // Best effort: the child may already be dead, which is what we report anyway.
                let _ = child.kill().await;
                bail!(
                    "{label} did not become ready: {reason}\n--- stderr ---\n{}",
                    tail(&stderr_path, 40)
                );
            }
        };

        // Keep draining stdout so the child never blocks on a full pipe; ends at the child's exit.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

        Ok(Self {
            label,
            child,
            pid,
            addr,
            stderr_path,
            _logs: logs,
        })
    }

    /// The address the service announced.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The `http://ADDR` URI a gRPC client connects to.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Opens a new HTTP/2 connection. Clones of the returned channel share it; call again for
    /// an independent connection.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        Endpoint::from_shared(self.endpoint())?
            .connect_timeout(CONNECT_TIMEOUT)
            .connect()
            .await
    }

    /// Sends SIGTERM: the service should drain and exit 0.
    pub async fn terminate(&mut self) -> io::Result<()> {
        self.signal(Signal::Term).await
    }

    /// Sends SIGINT: the service should drain and exit 0.
    pub async fn interrupt(&mut self) -> io::Result<()> {
        self.signal(Signal::Int).await
    }

    /// Sends `signal` through the `kill` command (the workspace forbids `unsafe`, so no
    /// `libc::kill`). A child that already exited is left alone: its pid may belong to
    /// someone else by now.
    pub async fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let status = Command::new("kill")
            .args(["-s", signal.name(), &self.pid.to_string()])
            .status()
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "`kill -s {} {}` failed: {status}",
                signal.name(),
                self.pid
            )))
        }
    }

    /// SIGKILLs the child (no chance to flush or clean up) and reaps it.
    pub async fn kill(&mut self) -> io::Result<ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        self.child.kill().await?;
        self.child.wait().await
    }

    /// Waits for the child to exit by itself.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The child's resident set size, from `/proc/PID/status` (Linux only).
    pub fn rss_bytes(&self) -> io::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kib| kib.trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .ok_or_else(|| io::Error::other("no VmRSS line in /proc/PID/status"))
    }

    /// The last `lines` lines the child wrote to stderr, for failure messages.
    pub fn stderr_tail(&self, lines: usize) -> String {
        tail(&self.stderr_path, lines)
    }

    /// The file holding everything the child wrote to stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// The binary's file name.
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        // `kill_on_drop` only sends the signal. Wait (briefly, bounded) until the child is
        // reaped, so a data directory dropped right after us is never written by a dying server.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
            let deadline = std::time::Instant::now() + DROP_REAP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// The last `lines` lines of a log file, or a note saying why there are none.
fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(error) => format!("(cannot read {}: {error})", path.display()),
    }
}
