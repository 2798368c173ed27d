//! The `sessionctl` binary as a child process: run it with arguments against a test
//! session-svc and collect its exit code, stdout and stderr, within a time limit.

use std::{
    ffi::OsString,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::{
    process::locate_binary,
    session::{ADMIN_TOKEN, SessionProcess},
};

/// The binary's name in `target/<profile>/`.
pub const SESSIONCTL_BINARY: &str = "sessionctl";

/// Set this to run a sessionctl binary from somewhere else.
pub const SESSIONCTL_BINARY_ENV: &str = "SESSIONCTL_BIN";

/// How long one run may take before it is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// What one run of sessionctl did.
#[derive(Debug)]
pub struct Run {
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Everything it wrote to stdout.
    pub stdout: String,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

impl Run {
    /// Panics, showing the run, unless it exited 0.
    pub fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "sessionctl failed: {self:#?}");
        self
    }

    /// stdout parsed as JSON; panics, showing the run, when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|error| panic!("stdout is not JSON ({error}): {self:#?}"))
    }
}

/// How to run sessionctl against one session-svc: `--addr` and `--token` (the test admin
/// token unless changed), plus any environment.
#[derive(Clone, Debug)]
pub struct Sessionctl {
    program: PathBuf,
    addr: Option<String>,
    token: Option<String>,
    envs: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl Sessionctl {
    /// sessionctl pointed at `addr` (`http://...` or `https://...`) with [`ADMIN_TOKEN`].
    pub fn new(addr: impl Into<String>) -> anyhow::Result<Self> {
        Ok(Self {
            program: locate_binary(SESSIONCTL_BINARY, SESSIONCTL_BINARY_ENV)?,
            addr: Some(addr.into()),
            token: Some(ADMIN_TOKEN.to_owned()),
            envs: Vec::new(),
            timeout: RUN_TIMEOUT,
        })
    }

    /// sessionctl pointed at `session`'s plaintext port with [`ADMIN_TOKEN`]; panics when the
    /// binary is not built.
    pub fn for_session(session: &SessionProcess) -> Self {
        Self::new(session.endpoint()).unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// Sends `token` instead (`None`: no `--token`).
    pub fn token(mut self, token: Option<&str>) -> Self {
        self.token = token.map(str::to_owned);
        self
    }

    /// Lets each run take up to `limit` instead of [`RUN_TIMEOUT`] (a long import).
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = limit;
        self
    }

    /// Leaves out `--addr` (the address then comes from the environment or the default).
    pub fn without_addr(mut self) -> Self {
        self.addr = None;
        self
    }

    /// Sets an environment variable for every run.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// The command for `args`: global flags first, no stdin, and no inherited `SESSIONCTL_*`
    /// variable, so a developer's settings cannot change what a test runs.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.program);
        for (name, _) in std::env::vars_os() {
            if name
                .to_str()
                .is_some_and(|name| name.starts_with("SESSIONCTL_"))
            {
                command.env_remove(&name);
            }
        }
        command.envs(self.envs.iter().map(|(key, value)| (key, value)));
        if let Some(addr) = &self.addr {
            command.arg("--addr").arg(addr);
        }
        if let Some(token) = &self.token {
            command.arg("--token").arg(token);
        }
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        command
    }

    /// Runs sessionctl with `args` and collects what it did; an error when it could not be
    /// started or ran longer than its time limit, [`RUN_TIMEOUT`] unless changed (it is then
    /// killed).
    pub async fn try_run(&self, args: &[&str]) -> anyhow::Result<Run> {
        let child = self
            .command(args)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))?;
        // Dropping the unfinished wait drops the child, which kill_on_drop SIGKILLs.
        let limit = self.timeout;
        let Ok(output) = tokio::time::timeout(limit, child.wait_with_output()).await else {
            bail!("sessionctl {args:?} ran longer than {limit:?} and was killed");
        };
        let output = output.context("waiting for sessionctl")?;
        Ok(Run {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }

    /// [`Self::try_run`], panicking (failing the test) when it cannot.
    pub async fn run(&self, args: &[&str]) -> Run {
        self.try_run(args)
            .await
            .unwrap_or_else(|error| panic!("{error:#}"))
    }

    /// Starts sessionctl with `args` and leaves it running (stdout and stderr piped), for the
    /// commands that go on until Ctrl-C.
    pub fn spawn(&self, args: &[&str]) -> anyhow::Result<Child> {
        self.command(args)
            .spawn()
            .with_context(|| format!("starting {}", self.program.display()))
    }
}

/// Sends SIGINT (what Ctrl-C sends) to `child` through `kill`, then waits for it to exit, at
/// most [`RUN_TIMEOUT`] (SIGKILL and an error after that).
pub async fn interrupt(child: &mut Child) -> anyhow::Result<ExitStatus> {
    let pid = child.id().context("the child already exited")?;
    let status = Command::new("kill")
        .args(["-s", "INT", &pid.to_string()])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "`kill -s INT {pid}` failed: {status}");
    match tokio::time::timeout(RUN_TIMEOUT, child.wait()).await {
        Ok(status) => Ok(status?),
        Err(_) => {
            child.kill().await?;
            bail!("sessionctl did not exit within {RUN_TIMEOUT:?} of SIGINT")
        }
    }
}
