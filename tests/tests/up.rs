//! `up`, the README's second command, run as a newcomer would: it starts both services, passes
//! its flags through, stops them in order on Ctrl-C and reports how they exited, and leaves no
//! service behind when it is SIGKILLed itself.
//!
//! Needs `cargo build --workspace --bins` first: `up --no-build` starts the store-svc and
//! session-svc binaries beside it, and cargo test builds none of them.

use std::{
    net::SocketAddr,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use proto::session::v1::{GetStatsRequest, admin_service_client::AdminServiceClient};
use tempfile::TempDir;
use tests::process::locate_binary;
use tokio::{
    io::{AsyncBufReadExt, BufReader, Lines},
    process::{Child, ChildStdout, Command},
};
use tonic::{Code, Request, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const TOKEN: &str = "up-test-token";

/// How long `up` may take to report both services listening.
const READY_LIMIT: Duration = Duration::from_secs(60);

/// A running `up`, its services' pids and addresses. Dropping it SIGKILLs `up` and whatever
/// service is still alive, so a failing test leaves no process behind.
struct Up {
    child: Child,
    up_pid: u32,
    lines: Lines<BufReader<ChildStdout>>,
    /// Everything `up` printed so far.
    output: String,
    store: (u32, SocketAddr),
    session: (u32, SocketAddr),
    _data: TempDir,
}

impl Up {
    async fn start() -> anyhow::Result<Self> {
        let data = tempfile::Builder::new().prefix("up-data-").tempdir()?;
        let mut command = Command::new(locate_binary("up", "UP_BIN")?);
        command
            .args(["--no-build", "--listen", "127.0.0.1:0"])
            .args(["--store-listen", "127.0.0.1:0", "--admin-token", TOKEN])
            .arg("--data-dir")
            .arg(data.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // A developer's own settings must not change what this test starts.
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("STORE_") || name.starts_with("SESSION_") {
                command.env_remove(name.as_ref());
            }
        }
        let mut child = command.spawn().context("starting up")?;
        let up_pid = child.id().context("up has no pid")?;
        let stdout = child.stdout.take().context("up has no stdout")?;
        let mut up = Self {
            child,
            up_pid,
            lines: BufReader::new(stdout).lines(),
            output: String::new(),
            store: (0, "127.0.0.1:0".parse()?),
            session: (0, "127.0.0.1:0".parse()?),
            _data: data,
        };
        let (mut store, mut session) = (None, None);
        let deadline = Instant::now() + READY_LIMIT;
        while store.is_none() || session.is_none() {
            let line = tokio::time::timeout_at(deadline.into(), up.lines.next_line())
                .await
                .with_context(|| format!("up did not report both services:\n{}", up.output))??
                .with_context(|| format!("up's stdout ended early:\n{}", up.output))?;
            up.output.push_str(&line);
            up.output.push('\n');
            if let Some(rest) = line.strip_prefix("store-svc ") {
                store = Some(pid_and_addr(rest)?);
            } else if let Some(rest) = line.strip_prefix("session-svc ") {
                session = Some(pid_and_addr(rest)?);
            }
        }
        up.store = store.context("no store-svc line")?;
        up.session = session.context("no session-svc line")?;
        for (_, addr) in [up.store, up.session] {
            ensure!(addr.ip().is_loopback(), "{addr} is not loopback");
        }
        Ok(up)
    }

    /// `kill -s NAME` to up's pid alone (what a supervisor, or a Ctrl-C, sends).
    async fn signal(&self, name: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args(["-s", name, &self.up_pid.to_string()])
            .status()
            .await?;
        ensure!(status.success(), "kill -s {name} {}: {status}", self.up_pid);
        Ok(())
    }

    /// Waits for `up` to exit, collecting the rest of its output.
    async fn wait(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let collect = async {
            while let Some(line) = self.lines.next_line().await? {
                self.output.push_str(&line);
                self.output.push('\n');
            }
            anyhow::Ok(self.child.wait().await?)
        };
        tokio::time::timeout(limit, collect)
            .await
            .with_context(|| format!("up did not exit within {limit:?}"))?
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        for (pid, _) in [self.session, self.store] {
            if pid != 0 && alive(pid) {
                let _ = std::process::Command::new("kill")
                    .args(["-s", "KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

/// Parses `pid N, listening on ADDR (...)`.
fn pid_and_addr(rest: &str) -> anyhow::Result<(u32, SocketAddr)> {
    let pid = rest
        .split_once("pid ")
        .and_then(|(_, after)| after.split(',').next())
        .context("no pid")?
        .trim()
        .parse()?;
    let addr = rest
        .split_once("listening on ")
        .and_then(|(_, after)| after.split_whitespace().next())
        .context("no address")?
        .parse()?;
    Ok((pid, addr))
}

/// Whether `pid` is a running process: a zombie (exited, not yet reaped by whoever inherited
/// it) counts as gone.
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

async fn serving(addr: SocketAddr) -> anyhow::Result<()> {
    let channel = Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let reply = HealthClient::new(channel)
        .check(HealthCheckRequest::default())
        .await?
        .into_inner();
    ensure!(
        reply.status == ServingStatus::Serving as i32,
        "{addr}: {reply:?}"
    );
    Ok(())
}

#[tokio::test]
async fn ctrl_c_drains_both_services_in_order_and_reports_their_exits() -> anyhow::Result<()> {
    let mut up = Up::start().await?;
    serving(up.store.1).await?;
    serving(up.session.1).await?;

    // The admin token went through: refused without it, answered with it.
    let channel = Channel::from_shared(format!("http://{}", up.session.1))?
        .connect()
        .await?;
    let mut admin = AdminServiceClient::new(channel);
    let refused = admin
        .get_stats(GetStatsRequest::default())
        .await
        .expect_err("GetStats without the token");
    assert_eq!(refused.code(), Code::Unauthenticated, "{refused:?}");
    let mut request = Request::new(GetStatsRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse()?);
    admin.get_stats(request).await?;
    assert!(
        !up.output.contains(TOKEN),
        "up printed the token:\n{}",
        up.output
    );

    up.signal("INT").await?;
    let status = up.wait(Duration::from_secs(60)).await?;
    let output = &up.output;
    assert!(status.success(), "up: {status}\n{output}");
    let (session_pid, store_pid) = (up.session.0, up.store.0);
    let session_exit = format!("session-svc (pid {session_pid}) exited with code 0");
    let store_exit = format!("store-svc (pid {store_pid}) exited with code 0");
    let (Some(session_at), Some(store_at)) = (output.find(&session_exit), output.find(&store_exit))
    else {
        bail!("up did not report both exits:\n{output}");
    };
    assert!(
        session_at < store_at,
        "store-svc stopped before session-svc:\n{output}"
    );
    for pid in [session_pid, store_pid] {
        assert!(!alive(pid), "pid {pid} outlived up:\n{output}");
    }
    Ok(())
}

#[tokio::test]
async fn a_sigkilled_up_leaves_no_service_behind() -> anyhow::Result<()> {
    let mut up = Up::start().await?;
    serving(up.session.1).await?;
    up.child.start_kill()?;
    up.child.wait().await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let pids = [up.session.0, up.store.0];
    while pids.iter().any(|&pid| alive(pid)) {
        ensure!(
            Instant::now() < deadline,
            "still running 10 s after up was SIGKILLed: {:?}\n{}",
            pids.iter().filter(|&&pid| alive(pid)).collect::<Vec<_>>(),
            up.output
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}
