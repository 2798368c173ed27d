//! sessionctl's command line: global options, commands, and the help that documents them.

use std::{path::PathBuf, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};
use kit::duration;
use proto::session::v1::{ActorStatus, JobState};

/// Printed after `--help`: the conventions a script relies on.
const AFTER_HELP: &str = "\
Output:
  Human tables by default. With --json, one JSON value on stdout: an object, or an array of
  objects for lists (`stats --watch --json`: one compact object per line, per refresh).
  JSON field names are the proto's, snake_case. Enums are their proto names
  (\"ACTOR_STATUS_LIVE\", \"JOB_STATE_RUNNING\"); human tables show them short (live, running).
  Timestamps are RFC 3339 strings in UTC; durations are seconds as a number (1.5); an unset
  timestamp or duration is null in JSON and `-` in tables. 64-bit integers are JSON numbers.
  Money is {\"currency_code\", \"minor_units\"}.

Exit codes:
  0   success
  1   the server answered an error (stderr: `error: CODE: message`, CODE as in NOT_FOUND),
      session-svc could not be reached, a file could not be read, or an import's job ended
      FAILED or CANCELLED
  64  usage error: unknown command, missing or bad argument, unusable TLS settings

Environment:
  SESSIONCTL_ADDR, SESSIONCTL_TOKEN, SESSIONCTL_TLS_CA, SESSIONCTL_TLS_CERT, SESSIONCTL_TLS_KEY
  stand for the options of the same name.";

/// Command-line client of session-svc: the observer (actors, stats), carts, to-do lists,
/// stock, and to-do imports.
#[derive(Debug, Parser)]
#[command(name = "sessionctl", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Where session-svc is, how to reach it, and how to print.
#[derive(Debug, Args)]
pub struct Global {
    /// session-svc's address: `http://HOST:PORT`, or `https://HOST:PORT` with --tls-ca.
    #[arg(
        long,
        env = "SESSIONCTL_ADDR",
        default_value = "http://127.0.0.1:50051",
        global = true
    )]
    pub addr: String,

    /// Sent as `authorization: Bearer <token>` on every call (AdminService requires it).
    #[arg(long, env = "SESSIONCTL_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// CA certificate (PEM) that session-svc's certificate must be signed by; needed by, and
    /// only allowed with, an https:// --addr.
    #[arg(long, env = "SESSIONCTL_TLS_CA", global = true)]
    pub tls_ca: Option<PathBuf>,

    /// Client certificate chain (PEM) to present (mutual TLS); needs --tls-key and --tls-ca.
    #[arg(long, env = "SESSIONCTL_TLS_CERT", global = true)]
    pub tls_cert: Option<PathBuf>,

    /// Private key (PEM) of --tls-cert.
    #[arg(long, env = "SESSIONCTL_TLS_KEY", global = true)]
    pub tls_key: Option<PathBuf>,

    /// Deadline of each call, and of connecting (e.g. 500ms, 10s, 1m); not applied to an
    /// import's upload or to watching a job.
    #[arg(long, default_value = "10s", value_parser = positive_duration, global = true)]
    pub timeout: Duration,

    /// Items per page asked for when a command follows a paged list (actors, cart events,
    /// todo list, jobs); the server caps it. Default: 1000, or for `todo list` as many as fit
    /// in the server's 3 MiB page.
    #[arg(long, global = true, value_parser = clap::value_parser!(i32).range(1..))]
    pub page_size: Option<i32>,

    /// Print JSON instead of tables (see "Output" below).
    #[arg(long, global = true)]
    pub json: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List live and quarantined actors (AdminService.ListActors, every page).
    Actors {
        /// Only this kind: cart, todo or sku.
        #[arg(long)]
        kind: Option<String>,
        /// Only actors in this status.
        #[arg(long, value_enum)]
        status: Option<StatusFilter>,
    },
    /// Describe one actor (AdminService.GetActor).
    Actor {
        /// Its kind: cart, todo or sku.
        kind: String,
        /// Its key: the session key, list name or sku.
        key: String,
    },
    /// Crash a live actor on purpose; its supervisor restarts it on its next request
    /// (AdminService.KillActor).
    Kill {
        /// Its kind: cart, todo or sku.
        kind: String,
        /// Its key.
        key: String,
    },
    /// Show the runtime's statistics (AdminService.GetStats).
    Stats {
        /// Redraw every --interval until Ctrl-C (with --json: one line per refresh).
        #[arg(long)]
        watch: bool,
        /// Time between refreshes with --watch.
        #[arg(long, default_value = "2s", value_parser = positive_duration)]
        interval: Duration,
    },
    /// Shopping sessions (CartService).
    #[command(subcommand)]
    Cart(CartCommand),
    /// To-do lists (TodoService).
    #[command(subcommand)]
    Todo(TodoCommand),
    /// Stock per sku (InventoryService).
    #[command(subcommand)]
    Stock(StockCommand),
    /// Import to-do entries from a CSV file as a job, and follow it to the end
    /// (JobService.ImportEntries, then WatchJob).
    #[command(long_about = IMPORT_HELP)]
    Import(ImportArgs),
    /// List jobs, oldest first (JobService.ListJobs, every page).
    Jobs {
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<StateFilter>,
    },
    /// Show a job with its failures (`job ID`), follow it (`job watch ID`) or cancel it
    /// (`job cancel ID`).
    Job(JobArgs),
}

/// Long help of `import`.
const IMPORT_HELP: &str = "\
Import to-do entries from a CSV file as a job (JobService.ImportEntries), then follow the job
(WatchJob) with a progress bar until it ends, and print its state, counts and failures.

Columns: list,date,title; or date,title with --list (every row goes to that list). A first row
equal to the column names (any case) is a header and is skipped. Blanks around a field are
dropped, and blank lines skipped. Each entry carries its line in the file (1-based, the header
counted), and the server reports a refused entry with it. A row with fewer fields is still
sent, the missing ones empty, so the server reports it; extra fields are ignored with a warning
on stderr. The file is read once before the upload, so a file that cannot be read, is not UTF-8
or holds no entries fails (exit 1) before any job is made.

Ctrl-C during the upload stops sessionctl with the upload unfinished: the server imports nothing
of it. Ctrl-C while following the job asks `cancel job <id>? [y/N]` on the terminal: y cancels
it (CancelJob) and shows its final state; anything else goes on following it; a second Ctrl-C
leaves sessionctl with the job still running. When stdin is not a terminal, Ctrl-C cancels the
job at once, saying so on stderr.

Exits 0 when the job SUCCEEDED (some entries may still have been refused: see `failed`), 1 when
it ended FAILED or CANCELLED.";

/// `import`'s arguments.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The CSV file.
    pub file: PathBuf,
    /// Put every row in this list; the file's columns are then date,title.
    #[arg(long)]
    pub list: Option<String>,
    /// Print the job's id (with --json: the job) once uploaded, and return without following it.
    #[arg(long)]
    pub no_wait: bool,
}

/// `job`'s arguments: an id, or a subcommand.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct JobArgs {
    /// What to do with a job.
    #[command(subcommand)]
    pub action: Option<JobAction>,
    /// The job's id: show it, with its failures (JobService.GetJob).
    #[arg(required = true)]
    pub id: Option<String>,
}

/// `job`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum JobAction {
    /// Follow a job with a progress bar until it ends, as `import` does (JobService.WatchJob).
    Watch {
        /// The job's id.
        id: String,
    },
    /// Cancel a job: what it imported stays (JobService.CancelJob).
    Cancel {
        /// The job's id.
        id: String,
    },
}

/// `cart`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum CartCommand {
    /// Show a session: its items, discounts, totals and latest events (GetSession).
    Show {
        /// The session's key.
        key: String,
    },
    /// List a session's whole event history, oldest first (ListSessionEvents, every page).
    Events {
        /// The session's key.
        key: String,
    },
}

/// `todo`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum TodoCommand {
    /// Add an entry, creating the list on first use (AddEntry, with a fresh request id).
    Add {
        /// The list's name.
        list: String,
        /// Its date, YYYY-MM-DD.
        date: String,
        /// What to do.
        title: String,
    },
    /// List a list's entries by date, then id (ListEntries, every page).
    List {
        /// The list's name.
        list: String,
        /// Only entries of this date (YYYY-MM-DD).
        #[arg(long)]
        date: Option<String>,
    },
}

/// `stock`'s subcommands.
#[derive(Debug, Subcommand)]
pub enum StockCommand {
    /// Set how many units of a sku are on hand (SetStock).
    Set {
        /// The sku.
        sku: String,
        /// Units on hand.
        on_hand: i64,
    },
    /// Show a sku's stock (GetStock).
    Show {
        /// The sku.
        sku: String,
    },
}

/// `actors --status`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StatusFilter {
    /// Running, busy or idle.
    Live,
    /// Refusing requests after crashing too often.
    Quarantined,
}

impl StatusFilter {
    /// The proto value.
    pub fn wire(self) -> ActorStatus {
        match self {
            StatusFilter::Live => ActorStatus::Live,
            StatusFilter::Quarantined => ActorStatus::Quarantined,
        }
    }
}

/// `jobs --state`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum StateFilter {
    /// Receiving its upload.
    Uploading,
    /// Waiting for a slot.
    Pending,
    /// Importing.
    Running,
    /// Every entry tried.
    Succeeded,
    /// Failed as a whole.
    Failed,
    /// Cancelled.
    Cancelled,
}

impl StateFilter {
    /// The proto value.
    pub fn wire(self) -> JobState {
        match self {
            StateFilter::Uploading => JobState::Uploading,
            StateFilter::Pending => JobState::Pending,
            StateFilter::Running => JobState::Running,
            StateFilter::Succeeded => JobState::Succeeded,
            StateFilter::Failed => JobState::Failed,
            StateFilter::Cancelled => JobState::Cancelled,
        }
    }
}

/// A duration as the servers write them (`250ms`, `5s`, `1m`), more than zero.
fn positive_duration(text: &str) -> Result<Duration, String> {
    let parsed = duration::parse(text)?;
    if parsed.is_zero() {
        return Err(format!("{text:?} must be more than zero"));
    }
    Ok(parsed)
}
