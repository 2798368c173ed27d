//! `cargo run --release -p tests --bin up`: builds and starts the service pair on loopback
//! (store-svc on 127.0.0.1:50052 with its data in `./data`, session-svc on 127.0.0.1:50051),
//! prints exactly what it passes to each and how to call them, and stops both on Ctrl-C.
//!
//! Stopping is ordered, because session-svc writes to store-svc while it drains: on Ctrl-C
//! (SIGINT), SIGTERM or SIGHUP, `up` sends SIGTERM to session-svc, waits for it to exit, then
//! sends SIGTERM to store-svc and waits for it. It prints each exit status and exits 0 only when
//! both drained and exited 0. The services run in a process group of their own, so a terminal's
//! Ctrl-C reaches `up` alone and cannot stop the store before session-svc has finished.
//!
//! If `up` itself dies without stopping them (SIGKILL, a crash), the kernel sends each service
//! SIGTERM: they are started through util-linux's `setpriv --pdeathsig TERM`, which sets the
//! parent-death signal (`prctl(PR_SET_PDEATHSIG)`) and then execs the service. The workspace
//! forbids unsafe code, which rules out a `pre_exec` hook doing the same here. The signal is tied
//! to the thread that spawned the child, so the services are spawned from the main thread (a
//! current-thread runtime), which lives as long as `up`.

use std::{
    ffi::{OsStr, OsString},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::{ExitCode, ExitStatus, Stdio},
    time::Duration,
};

use clap::Parser;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
    signal::unix::{Signal, SignalKind, signal},
};

/// How long a service may take to drain after SIGTERM before `up` SIGKILLs it: both services'
/// default grace period (20 s) with room to spare.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// How long a service may take from exec to its `listening on ADDR` line (sled recovers a large
/// `./data` before store-svc listens).
const READY_LIMIT: Duration = Duration::from_secs(120);

/// Builds (unless --no-build) and starts store-svc and session-svc on loopback, prints what it
/// passes to each, and stops both on Ctrl-C: session-svc first, then store-svc.
///
/// Both services also read their STORE_* / SESSION_* environment variables (see the README's
/// Configuration tables); the flags below override them.
#[derive(Debug, Parser)]
#[command(name = "up")]
struct Args {
    /// session-svc's gRPC address (its --listen); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// store-svc's gRPC address (its --listen); port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:50052")]
    store_listen: SocketAddr,

    /// store-svc's data directory (its --data-dir); kept between runs.
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,

    /// Bearer token session-svc's AdminService requires (its --admin-token); without it the
    /// admin API is refused. Never printed.
    #[arg(long, env = "SESSION_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,

    /// Certificate chain (PEM) for TLS on session-svc's port (its --tls-cert); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert (session-svc's --tls-key).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Mutual TLS between the two services, with the files `devcerts --out DIR` writes:
    /// store-svc serves ca.pem-signed store.pem and requires a client certificate, session-svc
    /// presents session-client.pem.
    #[arg(long, value_name = "DIR")]
    store_mtls: Option<PathBuf>,

    /// Start the store-svc and session-svc binaries beside `up` as they are, without running
    /// `cargo build` first.
    #[arg(long)]
    no_build: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match start(args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("up: {message}");
            ExitCode::FAILURE
        }
    }
}

fn start(args: Args) -> Result<ExitCode, String> {
    let bin_dir = std::env::current_exe()
        .map_err(|e| format!("cannot locate myself: {e}"))?
        .parent()
        .map(Path::to_path_buf)
        .ok_or("no directory around the executable")?;
    if !args.no_build {
        // Before any signal handler exists: Ctrl-C during the build stops cargo and `up`.
        build_services(&bin_dir)?;
    }
    for name in ["store-svc", "session-svc"] {
        if !bin_dir.join(name).is_file() {
            return Err(format!(
                "no {name} binary in {}: run `cargo build -p store-svc -p session-svc --bins` \
                 in the profile `up` was built with, or drop --no-build",
                bin_dir.display()
            ));
        }
    }
    // Current-thread: the services are spawned from the main thread, which their parent-death
    // signal is tied to (a worker thread that exits would trigger it).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run(args, bin_dir))
}

async fn run(args: Args, bin_dir: PathBuf) -> Result<ExitCode, String> {
    let mut signals = Signals::new()?;
    let setpriv = find_on_path("setpriv");
    if setpriv.is_none() {
        println!(
            "up: warning: `setpriv` (util-linux) is not on PATH, so if up is killed with SIGKILL \
             the services keep running; stop them with `kill PID` (their pids are below)"
        );
    }

    // The README's store-svc walk writes to `demo`, served here besides session-svc's own.
    let namespaces = tests::store::namespaces_with(&["demo"]);
    let mut store_args: Vec<OsString> = vec![
        "--listen".into(),
        args.store_listen.to_string().into(),
        "--data-dir".into(),
        args.data_dir.clone().into(),
        "--namespaces".into(),
        namespaces.clone().into(),
    ];
    if let Some(dir) = &args.store_mtls {
        for (flag, file) in [
            ("--tls-cert", "store.pem"),
            ("--tls-key", "store-key.pem"),
            ("--tls-client-ca", "ca.pem"),
        ] {
            store_args.push(flag.into());
            store_args.push(dir.join(file).into());
        }
    }
    let mut store = Service::spawn("store-svc", &bin_dir, &store_args, setpriv.as_deref())?;
    let Some(store_addr) = store.ready(&mut signals).await? else {
        return Ok(stop_all(&mut [&mut store], &mut signals, true).await);
    };

    // A store listening on every interface is reached through loopback.
    let store_host = if store_addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), store_addr.port())
    } else {
        store_addr
    };
    let scheme = if args.store_mtls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut session_args: Vec<OsString> = vec![
        "--listen".into(),
        args.listen.to_string().into(),
        "--store-addr".into(),
        format!("{scheme}://{store_host}").into(),
    ];
    if let Some(dir) = &args.store_mtls {
        for (flag, file) in [
            ("--store-tls-ca", "ca.pem"),
            ("--store-tls-cert", "session-client.pem"),
            ("--store-tls-key", "session-client-key.pem"),
        ] {
            session_args.push(flag.into());
            session_args.push(dir.join(file).into());
        }
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        session_args.extend([
            "--tls-cert".into(),
            cert.into(),
            "--tls-key".into(),
            key.into(),
        ]);
    }
    if let Some(token) = &args.admin_token {
        session_args.extend(["--admin-token".into(), token.into()]);
    }
    let mut session =
        match Service::spawn("session-svc", &bin_dir, &session_args, setpriv.as_deref()) {
            Ok(session) => session,
            Err(message) => {
                eprintln!("up: {message}");
                stop_all(&mut [&mut store], &mut signals, true).await;
                return Ok(ExitCode::FAILURE);
            }
        };
    let Some(session_addr) = session.ready(&mut signals).await? else {
        return Ok(stop_all(&mut [&mut session, &mut store], &mut signals, true).await);
    };

    // grpcurl's way in: the CA that signed --tls-cert, devcerts' when it made the mTLS files.
    let plaintext = match (&args.tls_cert, &args.store_mtls) {
        (None, _) => "-plaintext".to_string(),
        (Some(_), Some(dir)) => format!("-cacert {}", quoted(dir.join("ca.pem").as_os_str())),
        (Some(_), None) => "-cacert CA.pem".to_string(),
    };
    println!(
        "\n{:<11} pid {}, listening on {store_addr} ({}; data in {}; namespaces {namespaces})\n\
         {:<11} pid {}, listening on {session_addr} ({})\n",
        store.name,
        store.pid,
        if args.store_mtls.is_some() {
            "mutual TLS"
        } else {
            "plaintext"
        },
        args.data_dir.display(),
        session.name,
        session.pid,
        if args.tls_cert.is_some() {
            "TLS"
        } else {
            "plaintext"
        },
    );
    println!(
        "Try:\n  grpcurl {plaintext} {session_addr} list\n  \
         grpcurl {plaintext} -d '{{\"key\":\"demo\",\"domain\":\"shop.example\"}}' {session_addr} \
         session.v1.CartService/StartSession"
    );
    if args.admin_token.is_some() {
        println!(
            "  grpcurl {plaintext} -H 'authorization: Bearer <your --admin-token>' {session_addr} \
             session.v1.AdminService/GetStats"
        );
    }
    println!(
        "\nCtrl-C stops both: session-svc drains first, then store-svc (Ctrl-C again: SIGKILL).\n"
    );

    // Until a signal, or until a service exits by itself (then the other is stopped too and
    // `up` fails whatever the code: nobody asked it to stop).
    tokio::select! {
        name = signals.recv() => {
            println!("\nup: {name}: stopping session-svc, then store-svc");
            Ok(stop_all(&mut [&mut session, &mut store], &mut signals, true).await)
        }
        status = session.child.wait() => {
            session.exited(status);
            println!("up: session-svc stopped by itself: stopping store-svc");
            stop_all(&mut [&mut session, &mut store], &mut signals, false).await;
            Ok(ExitCode::FAILURE)
        }
        status = store.child.wait() => {
            store.exited(status);
            println!("up: store-svc stopped by itself: stopping session-svc");
            stop_all(&mut [&mut session, &mut store], &mut signals, false).await;
            Ok(ExitCode::FAILURE)
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP, caught from before the first service starts.
struct Signals {
    int: Signal,
    term: Signal,
    hup: Signal,
}

impl Signals {
    fn new() -> Result<Self, String> {
        let on = |kind: SignalKind| signal(kind).map_err(|e| format!("cannot catch signals: {e}"));
        Ok(Self {
            int: on(SignalKind::interrupt())?,
            term: on(SignalKind::terminate())?,
            hup: on(SignalKind::hangup())?,
        })
    }

    /// The next signal's name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}

/// One service process.
struct Service {
    name: &'static str,
    child: Child,
    pid: u32,
    /// Set once the child has been reaped.
    status: Option<ExitStatus>,
}

impl Service {
    /// Starts `bin_dir/name` in a process group of its own, with `args`, printing the command.
    fn spawn(
        name: &'static str,
        bin_dir: &Path,
        args: &[OsString],
        setpriv: Option<&Path>,
    ) -> Result<Self, String> {
        let program = bin_dir.join(name);
        println!("up: starting {}", shown(&program, args));
        let inherited = inherited_settings(name);
        if !inherited.is_empty() {
            println!("up:   and from the environment: {}", inherited.join(" "));
        }
        let mut command = match setpriv {
            Some(setpriv) => {
                let mut command = Command::new(setpriv);
                command.args(["--pdeathsig", "TERM", "--"]).arg(&program);
                command
            }
            None => Command::new(&program),
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .process_group(0)
            // A last resort should `up` return early by mistake; every path waits for them.
            .kill_on_drop(true);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", program.display()))?;
        let pid = child.id().ok_or("a child without a pid")?;
        Ok(Self {
            name,
            child,
            pid,
            status: None,
        })
    }

    /// Waits for the `listening on ADDR` line; `None` when a signal came first. The rest of
    /// stdout is drained in the background so the child never blocks on a full pipe.
    async fn ready(&mut self, signals: &mut Signals) -> Result<Option<SocketAddr>, String> {
        let stdout = self.child.stdout.take().ok_or("child has no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let name = self.name;
        let announced = async {
            while let Some(line) = lines.next_line().await.map_err(|e| e.to_string())? {
                if let Some(addr) = line.strip_prefix("listening on ") {
                    return addr
                        .trim()
                        .parse::<SocketAddr>()
                        .map_err(|e| format!("{name} announced {addr:?}: {e}"));
                }
            }
            Err(format!(
                "{name} exited before listening (is the port taken? see its log above)"
            ))
        };
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(READY_LIMIT, announced) => outcome
                .unwrap_or_else(|_| Err(format!("{name} did not listen within {READY_LIMIT:?}"))),
            signal = signals.recv() => {
                println!("\nup: {signal} while {name} was starting: stopping");
                return Ok(None);
            }
        };
        match outcome {
            Ok(addr) => {
                tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
                Ok(Some(addr))
            }
            Err(message) => {
                let _ = self.child.start_kill();
                let status = self.child.wait().await;
                self.exited(status);
                Err(message)
            }
        }
    }

    fn exited(&mut self, status: std::io::Result<ExitStatus>) {
        match status {
            Ok(status) => {
                println!("up: {} (pid {}) {}", self.name, self.pid, describe(status));
                self.status = Some(status);
            }
            Err(e) => {
                println!(
                    "up: {} (pid {}): cannot wait for it: {e}",
                    self.name, self.pid
                );
                self.status = Some(ExitStatus::from_raw(0xff00));
            }
        }
    }

    /// Sends SIGTERM (or SIGKILL when `now`) unless it has already been reaped, whose pid may
    /// belong to another process by now. SIGTERM goes through the `kill` command: the workspace
    /// forbids the unsafe `libc::kill`.
    async fn stop(&mut self, now: bool) {
        if self.status.is_some() || !matches!(self.child.try_wait(), Ok(None)) {
            return;
        }
        if now {
            println!("up: SIGKILL to {} (pid {})", self.name, self.pid);
            let _ = self.child.start_kill();
            return;
        }
        println!(
            "up: SIGTERM to {} (pid {}), waiting for it to drain",
            self.name, self.pid
        );
        let sent = Command::new("kill")
            .args(["-s", "TERM", &self.pid.to_string()])
            .status()
            .await;
        if !matches!(sent, Ok(status) if status.success()) {
            println!("up: `kill -s TERM {}` failed: SIGKILL instead", self.pid);
            let _ = self.child.start_kill();
        }
    }
}

/// Stops `services` one after the other, in order: each gets SIGTERM and [`DRAIN_LIMIT`] to
/// exit, then SIGKILL; a further signal meanwhile SIGKILLs the rest at once. Reports every
/// exit status; success when every service was asked to stop (`asked`) and exited 0.
async fn stop_all(services: &mut [&mut Service], signals: &mut Signals, asked: bool) -> ExitCode {
    let mut hurry = false;
    for service in services.iter_mut() {
        if service.status.is_some() {
            continue;
        }
        service.stop(hurry).await;
        let status = tokio::select! {
            status = tokio::time::timeout(DRAIN_LIMIT, service.child.wait()) => match status {
                Ok(status) => status,
                Err(_) => {
                    println!("up: {} did not exit within {DRAIN_LIMIT:?}", service.name);
                    service.stop(true).await;
                    service.child.wait().await
                }
            },
            signal = signals.recv() => {
                println!("up: {signal} again: SIGKILL to what is left");
                hurry = true;
                service.stop(true).await;
                service.child.wait().await
            }
        };
        service.exited(status);
    }
    let unclean: Vec<String> = services
        .iter()
        .filter(|service| !service.status.is_some_and(|status| status.success()))
        .map(|service| service.name.to_string())
        .collect();
    if asked && unclean.is_empty() {
        println!("up: both services drained and exited cleanly");
        ExitCode::SUCCESS
    } else {
        if unclean.is_empty() {
            println!("up: a service stopped without being asked to");
        } else {
            println!("up: not a clean stop: {}", unclean.join(" and "));
        }
        ExitCode::FAILURE
    }
}

/// "exited with code N" or "killed by signal N (NAME)".
fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => {
            let name = match signal {
                1 => " (SIGHUP)",
                2 => " (SIGINT)",
                6 => " (SIGABRT)",
                9 => " (SIGKILL)",
                11 => " (SIGSEGV)",
                15 => " (SIGTERM)",
                _ => "",
            };
            format!("killed by signal {signal}{name}")
        }
        (None, None) => format!("ended: {status}"),
    }
}

/// The command line as a shell would take it, the admin token's value masked.
fn shown(program: &Path, args: &[OsString]) -> String {
    let mut words = vec![quoted(program.as_os_str())];
    let mut secret = false;
    for arg in args {
        words.push(if secret {
            "'********'".to_string()
        } else {
            quoted(arg)
        });
        secret = arg == "--admin-token";
    }
    words.join(" ")
}

/// `word` single-quoted when a shell would otherwise split or expand it.
fn quoted(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:,=@%+".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The `STORE_*` (store-svc) or `SESSION_*` (session-svc) variables the child inherits, as
/// `NAME=value` with secrets masked.
fn inherited_settings(service: &str) -> Vec<String> {
    let prefix = if service == "store-svc" {
        "STORE_"
    } else {
        "SESSION_"
    };
    let mut settings: Vec<String> = std::env::vars_os()
        .filter_map(|(name, value)| {
            let name = name.into_string().ok()?;
            name.starts_with(prefix).then(|| {
                if name.contains("TOKEN") {
                    format!("{name}='********'")
                } else {
                    format!("{name}={}", quoted(&value))
                }
            })
        })
        .collect();
    settings.sort();
    settings
}

fn find_on_path(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// `cargo build` of the two binaries, in the profile `up` itself was built with.
fn build_services(bin_dir: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = std::process::Command::new(cargo);
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
