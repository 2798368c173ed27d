//! A throwaway PostgreSQL server for the store-svc tests on the PostgreSQL backend.
//!
//! [`PostgresServer::start`] finds Debian's server binaries (on PATH, else the newest
//! `/usr/lib/postgresql/*/bin`; `.ci/postgres.sh` installs them when missing), `initdb`s a
//! cluster into a temp directory, starts it on a free 127.0.0.1 port with durable settings
//! (`synchronous_commit=on`, `fsync=on`) and stops it on drop. PostgreSQL refuses to run as
//! root, so when the tests run as root every server command runs as the unprivileged `postgres`
//! user (or `nobody` when there is none) through `runuser`, in a directory that user owns.
//!
//! [`shared_server`] is one server for the whole test process, and
//! [`PostgresServer::create_database`] gives each store its own database in it.

use std::{
    net::TcpListener,
    os::unix::fs::{DirBuilderExt as _, MetadataExt as _},
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::{Mutex, OnceLock},
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use tempfile::TempDir;

/// The database superuser `initdb` creates (trust authentication on loopback only).
const SUPERUSER: &str = "kv";

/// How long the server may take to start.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running throwaway PostgreSQL; stopped (fast shutdown) and deleted on drop.
#[derive(Debug)]
pub struct PostgresServer {
    /// Where initdb, pg_ctl, psql and createdb are.
    bin_dir: PathBuf,
    /// `Some(user)` when commands run as that user (the tests run as root).
    run_as: Option<String>,
    /// The cluster's data directory (inside `_dir`, unless [`PostgresServer::start_on`]).
    data_dir: PathBuf,
    /// The server's Unix socket and log (`_dir`): never on FUSE, which has no sockets.
    socket_dir: PathBuf,
    /// The port it listens on, on 127.0.0.1.
    port: u16,
    /// Removed after the server stopped.
    _dir: TempDir,
}

impl PostgresServer {
    /// initdb into a new temp directory and start the server on a free loopback port.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with(None)
    }

    /// As [`PostgresServer::start`], with the cluster's data directory `parent/data` instead
    /// of in the temp directory: on a file system of the test's choice (LazyFS, for a power
    /// loss). Every ancestor of `parent` must let the server's user through (mode `o+x`).
    /// initdb then fsyncs what it wrote, so that a power loss finds a whole cluster.
    pub fn start_on(parent: &Path) -> anyhow::Result<Self> {
        Self::start_with(Some(parent))
    }

    fn start_with(parent: Option<&Path>) -> anyhow::Result<Self> {
        let bin_dir = find_bin_dir()?;
        let run_as = if is_root()? {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("pg-")
            .tempdir()
            .context("creating the PostgreSQL temp directory")?;
        let owner = match &run_as {
            Some(user) => Some((id_of(user, "-u")?, id_of(user, "-g")?)),
            None => None,
        };
        let chown = |path: &Path| -> anyhow::Result<()> {
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to {run_as:?}", path.display()))?;
            }
            Ok(())
        };
        chown(dir.path())?;
        let data_dir = match parent {
            None => dir.path().join("data"),
            Some(parent) => {
                // Made and handed over here: a FUSE file system may create files as its own
                // user (root), and the server checks only who owns its data directory.
                let data_dir = parent.join("data");
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&data_dir)
                    .with_context(|| format!("creating {}", data_dir.display()))?;
                chown(&data_dir)?;
                data_dir
            }
        };
        let mut server = Self {
            bin_dir,
            run_as,
            data_dir,
            socket_dir: dir.path().to_path_buf(),
            port: 0,
            _dir: dir,
        };
        let mut initdb: Vec<&std::ffi::OsStr> = vec![
            "-D".as_ref(),
            server.data_dir.as_os_str(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
            "--auth=trust".as_ref(),
            "--encoding=UTF8".as_ref(),
            // Byte order for text: the store's keys sort as sled sorts them. (The backend
            // also declares its key column COLLATE "C", so this is belt and braces.)
            "--no-locale".as_ref(),
        ];
        if parent.is_none() {
            // initdb's own fsyncs: only the server's must be real, unless a power loss may
            // come.
            initdb.push("--no-sync".as_ref());
        }
        server.run("initdb", &initdb)?;
        // A port that was free a moment ago; another process may take it in between, so try a
        // few times.
        let mut last_error = None;
        for _ in 0..5 {
            let port = free_port()?;
            server.port = port;
            match server.pg_ctl_start() {
                Ok(()) => return Ok(server),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    /// Kills the server as a power cut or `kill -9` would: SIGKILL to the postmaster and
    /// every process it started, and returns once all of them are gone, so that none can
    /// write or fsync any more. Committed transactions must survive; [`PostgresServer::restart`]
    /// runs crash recovery.
    pub fn kill(&self) -> anyhow::Result<()> {
        let pid_file = self.data_dir.join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let postmaster: i32 = text
            .lines()
            .next()
            .and_then(|line| line.trim().parse().ok())
            .with_context(|| format!("no pid in {}", pid_file.display()))?;
        // Stopped, the postmaster can start no new child between the listing and the kill.
        signal(postmaster, "STOP")?;
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        for &pid in &pids {
            let _ = signal(pid, "KILL");
        }
        let started = Instant::now();
        while pids
            .iter()
            .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        {
            ensure!(
                started.elapsed() < START_TIMEOUT,
                "PostgreSQL processes {pids:?} still alive {START_TIMEOUT:?} after SIGKILL"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// Starts the server again on its data directory and port (after [`PostgresServer::kill`]:
    /// crash recovery replays the WAL).
    pub fn restart(&self) -> anyhow::Result<()> {
        self.pg_ctl_start()
    }

    /// The server's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of `database` on this server, as store-svc's `--postgres-url` takes it.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates `database` (no-op when it exists) and returns its URL.
    pub fn create_database(&self, database: &str) -> anyhow::Result<String> {
        ensure!(
            database
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database name {database:?}: use [a-z0-9_]"
        );
        let output = self.client_output("createdb", &[database.as_ref()])?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() && !stderr.contains("already exists") {
            bail!("createdb {database} failed: {stderr}");
        }
        Ok(self.url(database))
    }

    /// Runs `psql -c sql` on `database` and returns its stdout (unaligned, tuples only).
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let output = self.client_output(
            "psql",
            &[
                "-X".as_ref(),
                "-A".as_ref(),
                "-t".as_ref(),
                "-v".as_ref(),
                "ON_ERROR_STOP=1".as_ref(),
                "-d".as_ref(),
                database.as_ref(),
                "-c".as_ref(),
                sql.as_ref(),
            ],
        )?;
        ensure!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs a client program (`psql`, `createdb`) against this server as [`SUPERUSER`].
    fn client_output(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
        let port = self.port.to_string();
        let mut all: Vec<&std::ffi::OsStr> = vec![
            "-h".as_ref(),
            "127.0.0.1".as_ref(),
            "-p".as_ref(),
            port.as_ref(),
            "-U".as_ref(),
            SUPERUSER.as_ref(),
        ];
        all.extend_from_slice(args);
        self.output(program, &all)
    }

    fn pg_ctl_start(&self) -> anyhow::Result<()> {
        let socket_dir = &self.socket_dir;
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} \
             -c synchronous_commit=on -c fsync=on -c max_connections=300",
            self.port,
            socket_dir.display()
        );
        let log = socket_dir.join("server.log");
        let timeout = START_TIMEOUT.as_secs().to_string();
        let started = Instant::now();
        let result = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-w".as_ref(),
                "-t".as_ref(),
                timeout.as_ref(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        );
        if let Err(error) = result {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            bail!(
                "pg_ctl start on port {} failed after {:?}: {error:#}\n{log}",
                self.port,
                started.elapsed()
            );
        }
        Ok(())
    }

    /// Runs a server binary (as the unprivileged user when we are root); fails unless it exits 0.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let output = self.output(program, args)?;
        ensure!(
            output.status.success(),
            "{program} exited with {}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        Ok(())
    }

    fn output(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
        let binary = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut command = Command::new("runuser");
                command.arg("-u").arg(user).arg("--").arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        command.args(args);
        // The server's children inherit nothing of the test's environment that could point
        // them elsewhere (PGHOST, PGDATA, ...).
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("PG") {
                command.env_remove(key);
            }
        }
        command
            .output()
            .with_context(|| format!("running {}", binary.display()))
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}

/// The server the tests of this process share, started on first use and kept for the life of
/// the process (a store restarted on its data directory must find its database again). Statics
/// are never dropped, so a watchdog in its own session (immune to the test's Ctrl-C) stops the
/// server and removes its directory once this process is gone, however it ended.
pub fn shared_server() -> anyhow::Result<&'static PostgresServer> {
    static SHARED: OnceLock<PostgresServer> = OnceLock::new();
    static STARTING: Mutex<()> = Mutex::new(());
    let _starting = STARTING.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(server) = SHARED.get() {
        return Ok(server);
    }
    let server = PostgresServer::start()?;
    server.spawn_watchdog(std::process::id())?;
    Ok(SHARED.get_or_init(|| server))
}

impl PostgresServer {
    /// Stops the server and removes its directory once process `pid` has exited.
    fn spawn_watchdog(&self, pid: u32) -> anyhow::Result<()> {
        let pg_ctl = self.bin_dir.join("pg_ctl");
        let stop = match &self.run_as {
            Some(user) => format!("runuser -u {user} -- '{}'", pg_ctl.display()),
            None => format!("'{}'", pg_ctl.display()),
        };
        let dir = &self.socket_dir;
        let script = format!(
            "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; \
             {stop} -D '{}' -m fast -w stop >/dev/null 2>&1; rm -rf '{}'",
            self.data_dir.display(),
            dir.display()
        );
        Command::new("setsid")
            .arg("sh")
            .arg("-c")
            .arg(script)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting the PostgreSQL watchdog (setsid sh)")?;
        Ok(())
    }
}

/// The directory of `initdb` and `pg_ctl`: PATH, else the newest `/usr/lib/postgresql/*/bin`.
pub fn find_bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("pg_ctl").is_file() {
                // Debian links only some binaries onto PATH: use the real directory.
                let real = std::fs::canonicalize(dir.join("initdb"))?;
                let real_dir = real.parent().unwrap_or(&dir).to_path_buf();
                if real_dir.join("createdb").is_file() && real_dir.join("psql").is_file() {
                    return Ok(real_dir);
                }
                return Ok(dir);
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    match versions.pop() {
        Some((_, bin)) => Ok(bin),
        None => bail!(
            "PostgreSQL's initdb and pg_ctl were not found on PATH or in /usr/lib/postgresql/*/bin; \
             run `bash .ci/postgres.sh` (it installs Debian's postgresql package)"
        ),
    }
}

/// True when this process runs as root (the owner of `/proc/self` is our effective uid).
fn is_root() -> anyhow::Result<bool> {
    Ok(std::fs::metadata("/proc/self")
        .context("reading /proc/self")?
        .uid()
        == 0)
}

/// `postgres` when that system user exists (Debian's package creates it), else `nobody`.
fn unprivileged_user() -> anyhow::Result<String> {
    for user in ["postgres", "nobody"] {
        if id_of(user, "-u").is_ok() {
            return Ok(user.to_owned());
        }
    }
    bail!("neither a `postgres` nor a `nobody` user exists to run PostgreSQL as")
}

/// `id -u USER` or `id -g USER`.
fn id_of(user: &str, flag: &str) -> anyhow::Result<u32> {
    let output = Command::new("id").arg(flag).arg(user).output()?;
    ensure!(output.status.success(), "no user {user}");
    Ok(String::from_utf8_lossy(&output.stdout).trim().parse()?)
}

/// `kill -SIGNAL pid`.
fn signal(pid: i32, signal: &str) -> anyhow::Result<()> {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    ensure!(status.success(), "kill -{signal} {pid} failed");
    Ok(())
}

/// The processes whose parent is `parent` (from `/proc/*/stat`).
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            (ppid == parent).then_some(pid)
        })
        .collect()
}

/// A port free on 127.0.0.1 a moment ago.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A database name for a store on `data_dir`: the same directory gives the same database, so
/// a test that restarts a store on its data directory finds its data again.
pub fn database_for(data_dir: &Path) -> String {
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut database: String = name
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_alphanumeric() { c } else { '_' }
        })
        .collect();
    database.insert_str(0, "store_");
    database.truncate(60);
    database
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_throwaway_server_starts_serves_and_stops() {
        let server = PostgresServer::start().unwrap();
        server.create_database("probe").unwrap();
        let answer = server.psql("probe", "SHOW synchronous_commit").unwrap();
        assert_eq!(answer.trim(), "on");
        let fsync = server.psql("probe", "SHOW fsync").unwrap();
        assert_eq!(fsync.trim(), "on");
        let data_dir = server.data_dir.clone();
        drop(server);
        assert!(!data_dir.exists(), "the cluster's directory is removed");
    }

    #[test]
    fn a_killed_server_restarts_with_every_committed_row() {
        let server = PostgresServer::start().unwrap();
        server.create_database("probe").unwrap();
        server
            .psql(
                "probe",
                "CREATE TABLE t (i int); INSERT INTO t VALUES (1), (2)",
            )
            .unwrap();
        server.kill().unwrap();
        assert!(
            server.psql("probe", "SELECT 1").is_err(),
            "the server is down"
        );
        server.restart().unwrap();
        assert_eq!(
            server
                .psql("probe", "SELECT count(*) FROM t")
                .unwrap()
                .trim(),
            "2"
        );
    }

    #[test]
    fn database_names_follow_the_data_directory() {
        assert_eq!(
            database_for(Path::new("/tmp/store-data-AbC12")),
            "store_store_data_abc12"
        );
    }
}
