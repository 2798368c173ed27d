//! Running a Python script with grpcio, the client most users' services are written with.
//!
//! The README's test command installs grpcio into `.cache/python` at the workspace root (a
//! `pip install --target`, so no virtualenv module is needed); set `TEST_PYTHONPATH` to use
//! another directory. Scripts talk to the servers with grpcio's generic calls over raw bytes,
//! so they need no generated stubs: the Rust side encodes requests and decodes replies.

use std::{
    path::{Path, PathBuf},
    process::Output,
    time::Duration,
};

/// Overrides where grpcio is installed.
pub const PYTHONPATH_ENV: &str = "TEST_PYTHONPATH";

/// How the README's test command installs grpcio; repeated in every failure message.
const INSTALL_HINT: &str = "run the README's test command (.ci/run), which installs it with \
                            `pip install --target .cache/python grpcio`, or set TEST_PYTHONPATH \
                            to a directory holding grpcio";

/// A hang guard for one script, well above any normal run.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The directory that holds grpcio: `TEST_PYTHONPATH`, or `.cache/python` in the workspace.
pub fn python_path() -> PathBuf {
    if let Some(path) = std::env::var_os(PYTHONPATH_ENV) {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .join(".cache/python")
}

/// Runs `script` (Python source) with `args` under `python3` with grpcio importable, and
/// returns its output whatever its exit status. Panics when Python or grpcio is missing: a
/// test that needs them must fail loudly, never skip.
pub async fn run_python(script: &str, args: &[&str]) -> Output {
    let path = python_path();
    let run = tokio::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", &path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(SCRIPT_TIMEOUT, run).await {
        Err(_) => panic!("the Python script did not finish within {SCRIPT_TIMEOUT:?}"),
        Ok(Err(error)) => panic!("cannot run python3: {error}"),
        Ok(Ok(output)) => output,
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if stderr.contains("No module named 'grpc'") {
        panic!(
            "grpcio is not installed in {}; {INSTALL_HINT}",
            path.display()
        );
    }
    output
}

/// Runs `script` and returns its stdout; panics with its stderr if it fails.
pub async fn run_python_ok(script: &str, args: &[&str]) -> String {
    let output = run_python(script, args).await;
    assert!(
        output.status.success(),
        "the Python script failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("the script prints UTF-8")
}
