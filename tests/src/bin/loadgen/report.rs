//! The Markdown every benchmark prints: the header, the `## Runs` table, the errors, the
//! `## Summary` and the number formats they share.

use std::time::{SystemTime, UNIX_EPOCH};

use tests::load::{self, LoadReport};

use crate::{
    BUILD_FIRST,
    measure::{Measured, Target},
};

/// How one benchmark's runs table and summary read, beyond what every benchmark prints.
pub struct Layout<T: 'static> {
    /// The runs table's second column: what its rows compare.
    pub target_column: &'static str,
    /// The runs table's columns after the ones every benchmark has (ops/s, latency, errors).
    pub extra_columns: &'static [&'static str],
    /// One measurement's cells in those columns.
    pub extra_cells: fn(&Measured<T>) -> Vec<String>,
    /// The `## Summary` table's columns after ops/s and latency: medians over the runs.
    pub summary_columns: &'static [SummaryColumn<T>],
    /// What one request is called in "every measured … answered OK".
    pub request: &'static str,
    /// What the pair's ops/s ratio is called in the summary.
    pub ratio: &'static str,
    /// Decimals the ratios are shown with.
    pub ratio_decimals: usize,
    /// What follows the median ratio (a unit, or nothing).
    pub ratio_unit: &'static str,
}

/// A column of the `## Summary` table: the median over the runs of one figure per run.
pub struct SummaryColumn<T> {
    pub name: &'static str,
    /// One run's figure, if it has one.
    pub stat: fn(&Measured<T>) -> Option<f64>,
    /// How the median is shown.
    pub format: fn(Option<f64>) -> String,
}

/// The title and what every benchmark states first: how to reproduce it and on what machine.
pub fn print_header_start(title: &str, sharing: &str) {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# {title}\n");
    println!("- command: `{BUILD_FIRST} && {}`", command_line());
    println!("- date: {}", utc_now());
    println!("- available parallelism: {cores} (shared by {sharing}, so figures are noisy)");
    println!(
        "- load average at start (1, 5, 15 min): {}",
        load_average().unwrap_or_else(|| "n/a".to_owned())
    );
}

/// Ends the header list (with a warning when the figures come from a debug build).
pub fn print_header_end() {
    if cfg!(debug_assertions) {
        println!("- **warning: a debug build; use `--release` for figures worth keeping**");
    }
    println!();
}

/// The first three fields of `/proc/loadavg` (Linux only).
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let fields: Vec<&str> = text.split_whitespace().take(3).collect();
    (fields.len() == 3).then(|| fields.join(" "))
}

/// The `## Runs` heading and the head of its table: the common columns, then `layout`'s.
pub fn print_runs_head<T>(layout: &Layout<T>) {
    println!("## Runs\n");
    println!(
        "| run | {} | ops/s | p50 ms | p99 ms | max ms | errors | {} |",
        layout.target_column,
        layout.extra_columns.join(" | ")
    );
    println!(
        "|---:|---|---:|---:|---:|---:|---:|{}",
        "---:|".repeat(layout.extra_columns.len())
    );
}

/// One row of the `## Runs` table.
pub fn print_run_row<T: Target>(layout: &Layout<T>, measured: &Measured<T>) {
    let report = &measured.report;
    let mut cells = vec![
        measured.run.to_string(),
        measured.target.label().to_owned(),
        format!("{:.0}", report.ops_per_sec()),
        ms(report.percentile_ms(50.0)),
        ms(report.percentile_ms(99.0)),
        ms(report.percentile_ms(100.0)),
        report.error_count().to_string(),
    ];
    cells.extend((layout.extra_cells)(measured));
    println!("| {} |", cells.join(" | "));
}

/// What follows the runs table: the errors, the `## Summary` table of `targets`, and the
/// ops/s ratio of `T::PAIR`, whose median it returns (for the benchmark's targets line).
pub fn print_summary<T: Target>(
    layout: &Layout<T>,
    runs: u32,
    targets: &[T],
    results: &[Measured<T>],
) -> Option<f64> {
    print_errors(results, layout.request);
    print_summary_table(layout, runs, targets, results);
    let [numerator, denominator] = T::PAIR;
    println!();
    let ratio = print_ratio(layout, results, numerator, denominator, layout.ratio);
    println!();
    ratio
}

/// One line: `name`, the median over the runs of `numerator`'s ops/s over `denominator`'s,
/// and the per-run ratios, formatted as `layout` says; returns the median.
pub fn print_ratio<T: Target>(
    layout: &Layout<T>,
    results: &[Measured<T>],
    numerator: T,
    denominator: T,
    name: &str,
) -> Option<f64> {
    let ratios = per_run_ratios(results, numerator, denominator);
    let decimals = layout.ratio_decimals;
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.decimals$}")).collect();
    let ratio = load::median(&ratios);
    println!(
        "{name}, ops/s: **{}** (median of per-run ratios {})",
        ratio.map_or("n/a".to_owned(), |r| format!(
            "{r:.decimals$}{}",
            layout.ratio_unit
        )),
        listed.join(", ")
    );
    ratio
}

/// Lists the non-OK answers of every run, by code; or says there were none.
fn print_errors<T: Target>(results: &[Measured<T>], what: &str) {
    let failed: Vec<_> = results
        .iter()
        .filter(|m| m.report.error_count() > 0 || m.report.unfinished > 0)
        .collect();
    if failed.is_empty() {
        println!("\nNo errors: every measured {what} answered OK.\n");
        return;
    }
    println!("\nErrors:\n");
    for m in failed {
        let mut seen = m.report.error_summary();
        if m.report.unfinished > 0 {
            seen.push(format!(
                "{} clients never got an answer",
                m.report.unfinished
            ));
        }
        println!("- run {} {}: {}", m.run, m.target.label(), seen.join("; "));
    }
    println!();
}

/// The `## Summary` table: each target's median ops/s, p50 and p99 over the runs, then the
/// medians of `layout`'s summary columns.
fn print_summary_table<T: Target>(
    layout: &Layout<T>,
    runs: u32,
    targets: &[T],
    results: &[Measured<T>],
) {
    println!("## Summary (median of {runs} runs)\n");
    let mut head = "| target | ops/s | p50 ms | p99 ms |".to_owned();
    let mut rule = "|---|---:|---:|---:|".to_owned();
    for column in layout.summary_columns {
        head.push_str(&format!(" {} |", column.name));
        rule.push_str("---:|");
    }
    println!("{head}\n{rule}");
    for &target in targets {
        let mut cells = vec![
            target.label().to_owned(),
            format!("{:.0}", median_of(results, target, ops).unwrap_or(0.0)),
            ms(median_of(results, target, p50)),
            ms(median_of(results, target, p99)),
        ];
        for column in layout.summary_columns {
            let values: Vec<f64> = results
                .iter()
                .filter(|m| m.target == target)
                .filter_map(column.stat)
                .collect();
            cells.push((column.format)(load::median(&values)));
        }
        println!("| {} |", cells.join(" | "));
    }
}

/// The median over the runs of `stat` of `target`'s reports.
pub fn median_of<T: Target>(
    results: &[Measured<T>],
    target: T,
    stat: fn(&LoadReport) -> Option<f64>,
) -> Option<f64> {
    let values: Vec<f64> = results
        .iter()
        .filter(|m| m.target == target)
        .filter_map(|m| stat(&m.report))
        .collect();
    load::median(&values)
}

/// For every run that measured both, `numerator`'s ops/s over `denominator`'s.
fn per_run_ratios<T: Target>(results: &[Measured<T>], numerator: T, denominator: T) -> Vec<f64> {
    let mut runs: Vec<u32> = results.iter().map(|m| m.run).collect();
    runs.dedup();
    runs.into_iter()
        .filter_map(|run| {
            let ops_of = |target| {
                results
                    .iter()
                    .find(|m| m.run == run && m.target == target)
                    .map(|m| m.report.ops_per_sec())
            };
            let (top, bottom) = (ops_of(numerator)?, ops_of(denominator)?);
            (bottom > 0.0).then_some(top / bottom)
        })
        .collect()
}

pub fn ops(report: &LoadReport) -> Option<f64> {
    Some(report.ops_per_sec())
}

fn p50(report: &LoadReport) -> Option<f64> {
    report.percentile_ms(50.0)
}

pub fn p99(report: &LoadReport) -> Option<f64> {
    report.percentile_ms(99.0)
}

/// `met` or `NOT met`, for target lines.
pub fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "NOT met" }
}

/// Milliseconds with two decimals, or `n/a`.
pub fn ms(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
}

/// A CPU share as `123%`, or `n/a`.
pub fn percent(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.0}%"))
}

/// Microseconds with one decimal, or `n/a`.
pub fn micros(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.1}"))
}

/// A byte count with no decimals, or `n/a`.
pub fn bytes(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |v| format!("{v:.0}"))
}

/// Writes per flush with one decimal, or `n/a`.
pub fn per_flush(value: Option<f64>) -> String {
    value.map_or("n/a".to_owned(), |n| format!("{n:.1}"))
}

/// The extra columns of the benchmarks that drive durable actor writes against a stack
/// (`sku-adjust`, `cart-reserve`): refusals for stock, batching, and where the CPU went.
pub const WRITE_COLUMNS: &[&str] = &[
    "FAILED_PRECONDITION",
    "writes/flush",
    "session-svc CPU",
    "store-svc CPU",
    "loadgen CPU",
    "other CPU",
];

/// One run's cells in [`WRITE_COLUMNS`]; the window's pids are session-svc's, then store-svc's.
pub fn write_cells<T>(measured: &Measured<T>) -> Vec<String> {
    let window = &measured.window;
    vec![
        measured
            .report
            .errors_of(tonic::Code::FailedPrecondition)
            .to_string(),
        per_flush(window.writes_per_flush),
        percent(window.cpu(0)),
        percent(window.cpu(1)),
        percent(window.loadgen_cpu),
        percent(window.other_cpu),
    ]
}

/// This invocation as `cargo run` would spell it, so the figures can be reproduced.
fn command_line() -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .map(|arg| {
            if arg.is_empty() || arg.contains(|c: char| c.is_whitespace() || c == '\'') {
                format!("'{}'", arg.replace('\'', r"'\''"))
            } else {
                arg
            }
        })
        .collect();
    format!(
        "cargo run --release -p tests --bin loadgen -- {}",
        args.join(" ")
    )
}

/// The current UTC time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    format_utc(seconds)
}

/// `seconds` since the Unix epoch as a UTC date and time (Howard Hinnant's civil_from_days).
fn format_utc(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let of_day = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn utc_dates_format_across_leap_days() {
        assert_eq!(format_utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_utc(1_709_251_199), "2024-02-29 23:59:59 UTC");
    }
}
