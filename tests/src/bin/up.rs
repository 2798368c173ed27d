//! `cargo run --release -p tests --bin up`: builds and starts the service pair on loopback
//! with default settings (store-svc on 127.0.0.1:50052 with its data in `./data`, session-svc
//! on 127.0.0.1:50051), says where they listen and how to call them, and stops both on Ctrl-C.

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    thread,
    time::Duration,
};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("up: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    let bin_dir = std::env::current_exe()
        .map_err(|e| format!("cannot locate myself: {e}"))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no directory around the executable")?;
    build_services(&bin_dir)?;
    // The README's store-svc walk writes to `demo`, served here besides session-svc's own.
    let namespaces = tests::store::namespaces_with(&["demo"]);
    let mut store = start(&bin_dir.join("store-svc"), &["--namespaces", &namespaces])?;
    let store_addr = listening_line(&mut store)?;
    let mut session = start(
        &bin_dir.join("session-svc"),
        &["--store-addr", &format!("http://{store_addr}")],
    )?;
    let session_addr = listening_line(&mut session)?;
    println!(
        "\nstore-svc   listening on {store_addr} (data in ./data; namespaces {namespaces})\n\
         session-svc listening on {session_addr}\n\n\
         Try:\n  grpcurl -plaintext {session_addr} list\n  \
         grpcurl -plaintext -d '{{\"key\":\"demo\",\"domain\":\"shop.example\"}}' {session_addr} session.v1.CartService/StartSession\n\n\
         Ctrl-C stops both (they drain and exit cleanly).\n"
    );
    // Ctrl-C reaches the whole foreground process group: both services drain on SIGINT and
    // exit; we only wait. If one dies on its own, stop the other.
    let mut children = [("store-svc", store), ("session-svc", session)];
    loop {
        let exited = children.iter_mut().find_map(|(name, child)| {
            child
                .try_wait()
                .ok()
                .flatten()
                .map(|status| (*name, status))
        });
        if let Some((name, status)) = exited {
            // After Ctrl-C both are draining: give the other its grace period, then stop it.
            for _ in 0..125 {
                if children
                    .iter_mut()
                    .all(|(_, c)| c.try_wait().ok().flatten().is_some())
                {
                    break;
                }
                thread::sleep(Duration::from_millis(200));
            }
            for (_, child) in &mut children {
                let _ = child.kill();
                let _ = child.wait();
            }
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{name} exited with {status}"))
            };
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// `cargo build` of the two binaries, in the profile `up` itself was built with.
fn build_services(bin_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    // The workspace this binary was built from, so `up` works from any directory.
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    command
        .args([
            "build",
            "-p",
            "store-svc",
            "-p",
            "session-svc",
            "--bins",
            "--manifest-path",
        ])
        .arg(manifest);
    if bin_dir.ends_with("release") {
        command.arg("--release");
    }
    let status = command
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the services failed: {status}"))
    }
}

fn start(program: &PathBuf, args: &[&str]) -> Result<Child, String> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", program.display()))
}

/// Reads the child's `listening on ADDR` line; the rest of its stdout is drained in the
/// background so it never blocks on a full pipe.
fn listening_line(child: &mut Child) -> Result<String, String> {
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    for line in lines.by_ref() {
        let line = line.map_err(|e| e.to_string())?;
        if let Some(addr) = line.strip_prefix("listening on ") {
            let addr = addr.trim().to_string();
            thread::spawn(move || lines.for_each(drop));
            return Ok(addr);
        }
    }
    Err("the service exited before listening (is the port taken? see its log above)".into())
}
