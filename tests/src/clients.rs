//! The client suites in other languages (`tests/clients/python`, `tests/clients/node`): a stack
//! for them to call, their runs as subprocesses with the servers' addresses in the environment,
//! and the server-side moves their error cases need (freezing store-svc, say).
//!
//! `.ci/clients.sh` (run by `.ci/run`) installs what they need: a virtualenv with grpcio in
//! `.cache/clients/venv`, stubs generated from `proto/` in `.cache/clients/python-gen`, and
//! `tests/clients/node/node_modules`. Without them a test fails saying so: it never skips.
//!
//! Each suite reads `SESSION_ADDR`, `STORE_ADDR` (host:port) and `ADMIN_TOKEN`.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::{Duration, SystemTime},
};

use crate::{
    session::{ADMIN_TOKEN, SessionOptions, SessionProcess, spawn_session},
    store::{StoreOptions, StoreProcess, namespaces_with, spawn_store_with},
};

/// Overrides where `.ci/clients.sh` put the virtualenv and the stubs (`.cache/clients`).
pub const CACHE_ENV: &str = "CLIENTS_CACHE";

/// The namespace, beyond session-svc's, that the suites write straight to store-svc.
pub const CLIENTS_NAMESPACE: &str = "clients";

/// A hang guard for one run of a suite, well above any normal run.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// Repeated in every failure about a missing install.
const INSTALL_HINT: &str = "run `bash .ci/clients.sh` (which `.ci/run` runs) to install the \
                            client suites' packages and generate the Python stubs";

/// The workspace's root directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// `.cache/clients` in the workspace, or [`CACHE_ENV`].
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".cache/clients"))
}

/// A store-svc (serving session-svc's namespaces plus [`CLIENTS_NAMESPACE`]) and a session-svc
/// on top of it, for a suite to call.
#[derive(Debug)]
pub struct ClientStack {
    /// session-svc; declared first so it is killed before its store.
    pub session: SessionProcess,
    /// The store behind it.
    pub store: StoreProcess,
    /// The token session-svc's admin API wants (empty: the admin API is off).
    pub admin_token: String,
}

impl ClientStack {
    /// Starts both, session-svc with `options` (the admin token defaults to [`ADMIN_TOKEN`]).
    pub async fn spawn(options: SessionOptions) -> Self {
        Self::spawn_with_token(options, ADMIN_TOKEN).await
    }

    /// Starts both, session-svc with `--admin-token admin_token` (empty: admin API off).
    pub async fn spawn_with_token(options: SessionOptions, admin_token: &str) -> Self {
        let namespaces = namespaces_with(&[CLIENTS_NAMESPACE]);
        let namespaces: Vec<&str> = namespaces.split(',').collect();
        let store = spawn_store_with(StoreOptions::new().namespaces(&namespaces)).await;
        let options = options.flag("--admin-token", admin_token);
        let session = spawn_session(&store.endpoint(), options).await;
        Self {
            session,
            store,
            admin_token: admin_token.to_owned(),
        }
    }

    /// What a suite reads to find the servers.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("SESSION_ADDR", self.session.addr().to_string()),
            ("STORE_ADDR", self.store.addr().to_string()),
            ("ADMIN_TOKEN", self.admin_token.clone()),
        ]
    }

    /// Runs the Python `cases` (unittest names in `clients_test`, e.g. `Scenarios` or
    /// `ServerDeadline.test_1_prepare`) against this stack; panics, with the suite's output and
    /// session-svc's log, unless every case ran and passed.
    pub async fn python(&self, cases: &[&str]) {
        let python = cache_dir().join("venv/bin/python");
        let stubs = cache_dir().join("python-gen");
        require(&python, "the Python client virtualenv is not installed");
        require_fresh_stubs(&stubs);
        let names: Vec<String> = cases.iter().map(|c| format!("clients_test.{c}")).collect();
        let mut command = tokio::process::Command::new(&python);
        command
            .args(["-m", "unittest", "-v"])
            .args(&names)
            .current_dir(workspace_root().join("tests/clients/python"))
            .env("PYTHONPATH", &stubs)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .env("PYTHONUNBUFFERED", "1");
        let what = format!("Python {}", cases.join(" "));
        let output = self.run(command, &what).await;
        // unittest reports on stderr: "Ran N tests" and then "OK" (or "OK (skipped=N)").
        let report = String::from_utf8_lossy(&output.stderr);
        let ran_all = report.lines().any(|line| line.starts_with("Ran "))
            && report.lines().any(|line| line.trim() == "OK");
        self.check(&what, &output, ran_all);
    }

    /// Runs the Node test file `tests/clients/node/test/<file>` with `node --test` against
    /// this stack; panics, with its output and session-svc's log, unless every test passed.
    pub async fn node(&self, file: &str) {
        let dir = workspace_root().join("tests/clients/node");
        require(
            &dir.join("node_modules/@grpc/grpc-js/package.json"),
            "the Node client packages are not installed",
        );
        let mut command = tokio::process::Command::new("node");
        command
            .args(["--test", "--test-reporter=spec"])
            .arg(Path::new("test").join(file))
            .current_dir(&dir);
        let what = format!("Node {file}");
        let output = self.run(command, &what).await;
        // The spec reporter ends with "ℹ pass N" and "ℹ fail 0" lines.
        let report = String::from_utf8_lossy(&output.stdout);
        let count = |label: &str| {
            report.lines().find_map(|line| {
                let rest = line.trim().strip_prefix('ℹ')?.trim();
                rest.strip_prefix(label)?.trim().parse::<u32>().ok()
            })
        };
        let ran_all = count("pass ").is_some_and(|n| n > 0) && count("fail ") == Some(0);
        self.check(&what, &output, ran_all);
    }

    async fn run(&self, mut command: tokio::process::Command, what: &str) -> Output {
        command.envs(self.env()).kill_on_drop(true);
        let output = match tokio::time::timeout(RUN_TIMEOUT, command.output()).await {
            Err(_) => panic!(
                "{what} did not finish within {RUN_TIMEOUT:?}\n--- session-svc ---\n{}",
                self.session.stderr_tail(40)
            ),
            Ok(Err(error)) => panic!("cannot run {what}: {error} ({INSTALL_HINT})"),
            Ok(Ok(output)) => output,
        };
        // Shown by `cargo test` for a failing test, or with --nocapture.
        eprintln!(
            "--- {what}: {} ---\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }

    fn check(&self, what: &str, output: &Output, ran_all: bool) {
        assert!(
            output.status.success() && ran_all,
            "{what} failed ({}): its output is above\n--- session-svc ---\n{}\n--- store-svc \
             ---\n{}",
            output.status,
            self.session.stderr_tail(30),
            self.store.stderr_tail(15)
        );
    }
}

/// Panics with the install hint when `path` is missing.
fn require(path: &Path, what: &str) {
    assert!(
        path.exists(),
        "{what}: {} is missing; {INSTALL_HINT}",
        path.display()
    );
}

/// Panics when the stubs are missing or older than a `.proto` file.
fn require_fresh_stubs(stubs: &Path) {
    let stamp = stubs.join(".stamp");
    require(&stamp, "the Python stubs are not generated");
    let generated = modified(&stamp);
    let protos = workspace_root().join("proto");
    for dir in ["session/v1", "store/v1"] {
        let entries = std::fs::read_dir(protos.join(dir)).expect("proto/ is readable");
        for entry in entries {
            let path = entry.expect("proto/ is readable").path();
            assert!(
                path.extension().is_none_or(|ext| ext != "proto") || modified(&path) <= generated,
                "{} changed after the Python stubs were generated: {INSTALL_HINT}",
                path.display()
            );
        }
    }
}

fn modified(path: &Path) -> SystemTime {
    std::fs::metadata(path)
        .and_then(|meta| meta.modified())
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// store-svc stopped with SIGSTOP until this is dropped (SIGCONT): a store that accepts
/// connections and never answers, whose writes therefore never happen while it is frozen.
#[derive(Debug)]
pub struct Frozen {
    /// The frozen process.
    pid: u32,
}

impl Frozen {
    /// SIGSTOPs `pid` (through `kill`: the workspace forbids `unsafe`).
    pub fn freeze(pid: u32) -> Self {
        send_signal("STOP", pid).unwrap_or_else(|error| panic!("{error}"));
        Self { pid }
    }
}

impl Frozen {
    /// SIGCONTs the process now, failing the test if that fails.
    pub fn thaw(mut self) {
        let pid = std::mem::take(&mut self.pid);
        send_signal("CONT", pid).unwrap_or_else(|error| panic!("{error}"));
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        // Not thawed yet (a panic on the way): best effort.
        if self.pid != 0
            && let Err(error) = send_signal("CONT", self.pid)
        {
            eprintln!("{error}");
        }
    }
}

fn send_signal(signal: &str, pid: u32) -> Result<(), String> {
    let status = std::process::Command::new("kill")
        .args(["-s", signal, &pid.to_string()])
        .status()
        .map_err(|error| format!("cannot run kill: {error}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`kill -s {signal} {pid}` failed: {status}"))
    }
}
