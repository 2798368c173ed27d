//! The Redis server behind the `redis_cart` baseline: found on PATH (never installed from
//! here), started durable on a free loopback port in a temp dir, killed when dropped.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tempfile::TempDir;
use tests::load::free_loopback_addr;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    process::{Child, Command},
};

/// The binary, looked up on PATH unless this variable names it.
const REDIS_SERVER: (&str, &str) = ("redis-server", "REDIS_SERVER_BIN");

/// What to run when it is missing; the benchmark's set-up step, not the benchmark's.
pub const INSTALL_REDIS: &str = "apt-get install -y redis-server";

/// How long Redis may take to answer PING after it starts.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// How long `Drop` waits for the killed server to be gone before its directory goes.
const DROP_REAP_TIMEOUT: Duration = Duration::from_secs(2);

/// The settings that make an OK from Redis mean "on disk", as an OK from store-svc does:
/// every write appended to the AOF and fsynced before the reply (Redis fsyncs once per event
/// loop turn, so concurrent clients share an fsync, like store-svc's group commit); no RDB
/// snapshots; no AOF rewrite during a run (a rewrite forks a child whose CPU and disk writes
/// the window could not attribute).
pub const DURABLE_FLAGS: &[&str] = &[
    "--appendonly",
    "yes",
    "--appendfsync",
    "always",
    "--save",
    "",
    "--auto-aof-rewrite-percentage",
    "0",
];

/// `redis-server`: `$REDIS_SERVER_BIN`, or the first on PATH; `None` when there is none.
pub fn find_redis_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(REDIS_SERVER.1) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(REDIS_SERVER.0))
        .find(|candidate| candidate.is_file())
}

/// A running `redis-server`. Dropping it SIGKILLs it and removes its data.
pub struct RedisServer {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    /// The AOF and the log; declared after `child` so it goes only after the server.
    _dir: TempDir,
}

impl RedisServer {
    /// Starts `program` with [`DURABLE_FLAGS`] on a free loopback port and waits until it
    /// answers PING.
    pub async fn spawn(program: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("redis-loadgen-")
            .tempdir()
            .context("creating Redis's data directory")?;
        let addr = free_loopback_addr()?;
        let mut child = Command::new(program)
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(["--daemonize", "no"])
            .args(DURABLE_FLAGS)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let pid = child.id().context("redis-server has no pid")?;
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if ping(addr).await {
                break;
            }
            if let Some(status) = child.try_wait()? {
                bail!(
                    "redis-server exited ({status}) before answering PING\n--- log ---\n{}",
                    log_tail(dir.path())
                );
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                bail!(
                    "redis-server did not answer PING within {READY_TIMEOUT:?}\n--- log ---\n{}",
                    log_tail(dir.path())
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self {
            child,
            pid,
            addr,
            _dir: dir,
        })
    }

    /// The URL `redis_cart --redis` takes.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.start_kill();
            let deadline = Instant::now() + DROP_REAP_TIMEOUT;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }
}

/// Whether a Redis server at `addr` answers an inline PING with +PONG.
async fn ping(addr: SocketAddr) -> bool {
    let answered = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(b"PING\r\n").await?;
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).await?;
        std::io::Result::Ok(&reply == b"+PONG\r\n")
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), answered).await,
        Ok(Ok(true))
    )
}

/// The end of Redis's log, for failure messages.
fn log_tail(dir: &Path) -> String {
    match std::fs::read_to_string(dir.join("redis.log")) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(20)..].join("\n")
        }
        Err(error) => format!("(no log: {error})"),
    }
}
