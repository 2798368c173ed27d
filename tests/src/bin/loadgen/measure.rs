//! What every benchmark does the same way: measure its targets run after run, in rotating
//! order, and sample what the machine did during each measured window.

use std::{future::Future, net::SocketAddr, time::Duration};

use anyhow::Context;
use tests::load::{self, LoadConfig, LoadReport};

use crate::report::{Layout, print_run_row, print_runs_head};

/// What a benchmark compares: one row per run and target.
pub trait Target: Copy + Eq {
    /// The two whose ops/s ratio the summary states (the first's over the second's). A
    /// benchmark may measure more targets than these two.
    const PAIR: [Self; 2];

    fn label(self) -> &'static str;
}

/// One target's measurement in one run.
pub struct Measured<T> {
    /// Which run, from 1.
    pub run: u32,
    pub target: T,
    pub report: LoadReport,
    /// What the machine did during the window, for spotting a saturated process.
    pub window: WindowSample,
}

/// CPU use and disk writes of the processes involved and store-svc's batching, over the
/// measured window.
#[derive(Default)]
pub struct WindowSample {
    /// How long the window was.
    pub duration: Duration,
    /// Each watched server's CPU use, in the order they were given, in % of one core.
    pub server_cpu: Vec<Option<f64>>,
    /// Bytes each watched server sent to storage (`write_bytes` of `/proc/PID/io`), in the
    /// order they were given.
    pub server_written: Vec<Option<u64>>,
    /// This process's CPU use, in % of one core.
    pub loadgen_cpu: Option<f64>,
    /// Everything else the machine ran, in % of one core: high means a noisy measurement.
    pub other_cpu: Option<f64>,
    /// Writes made durable per flush (from store-svc's `/metrics`), when it was scraped.
    pub writes_per_flush: Option<f64>,
    /// Writes per BatchWrite from session-svc to store-svc (from session-svc's `/metrics`),
    /// when it was scraped and batched.
    pub writes_per_batch: Option<f64>,
}

impl WindowSample {
    /// The CPU use of the `index`th watched server.
    pub fn cpu(&self, index: usize) -> Option<f64> {
        self.server_cpu.get(index).copied().flatten()
    }

    /// The bytes the `index`th watched server sent to storage.
    pub fn written(&self, index: usize) -> Option<u64> {
        self.server_written.get(index).copied().flatten()
    }
}

impl<T> Measured<T> {
    /// Requests answered OK in the window (its ops/s times its length).
    fn ops_in_window(&self) -> Option<f64> {
        let ops = self.report.ops_per_sec() * self.window.duration.as_secs_f64();
        (ops > 0.0).then_some(ops)
    }

    /// CPU time of the watched servers at `indices`, together, per OK answer, in µs: what one
    /// request cost the servers that answered it.
    pub fn cpu_micros_per_op(&self, indices: &[usize]) -> Option<f64> {
        let percent: f64 = indices
            .iter()
            .map(|&index| self.window.cpu(index))
            .sum::<Option<f64>>()?;
        let seconds = percent / 100.0 * self.window.duration.as_secs_f64();
        Some(seconds * 1e6 / self.ops_in_window()?)
    }

    /// Bytes the `index`th watched server sent to storage per OK answer.
    pub fn written_per_op(&self, index: usize) -> Option<f64> {
        Some(self.window.written(index)? as f64 / self.ops_in_window()?)
    }
}

/// Measures every one of `targets` with `measure` in each of `runs` runs, order rotating, and
/// prints the `## Runs` table of `layout` a row at a time as they come; `bench` names the
/// benchmark in a failure.
pub async fn measure_runs<T, F, Fut>(
    bench: &str,
    runs: u32,
    targets: &[T],
    layout: &Layout<T>,
    mut measure: F,
) -> anyhow::Result<Vec<Measured<T>>>
where
    T: Target,
    F: FnMut(T) -> Fut,
    Fut: Future<Output = anyhow::Result<(LoadReport, WindowSample)>>,
{
    print_runs_head(layout);
    let mut results = Vec::new();
    for run in 1..=runs {
        for target in rotate(run, targets) {
            eprintln!("run {run}/{runs}: {} ...", target.label());
            let (report, window) = measure(target)
                .await
                .with_context(|| format!("{bench}, {}", target.label()))?;
            let measured = Measured {
                run,
                target,
                report,
                window,
            };
            print_run_row(layout, &measured);
            results.push(measured);
        }
    }
    Ok(results)
}

/// The targets of a run, first-measured first: each run starts one further along (two targets
/// swap every other run), so none always gets the cooler machine.
fn rotate<T: Copy>(run: u32, targets: &[T]) -> Vec<T> {
    let mut order = targets.to_vec();
    if !order.is_empty() {
        let shift = (run as usize).saturating_sub(1) % order.len();
        order.rotate_left(shift);
    }
    order
}

/// Reads the CPU times and storage writes of `pids`, the CPU times of this process and the
/// machine, and the counters of every `/metrics` endpoint in `metrics` (store-svc's writes per
/// flush, session-svc's writes per batch), at the start and end of the measured window.
pub async fn sample_window(
    config: &LoadConfig,
    pids: &[u32],
    metrics: &[SocketAddr],
) -> WindowSample {
    let servers = || -> Vec<Option<Duration>> {
        pids.iter()
            .map(|&pid| load::process_cpu_time(pid).ok())
            .collect()
    };
    let written = || -> Vec<Option<u64>> {
        pids.iter()
            .map(|&pid| load::process_written_bytes(pid).ok())
            .collect()
    };
    let scrape = || async move {
        let mut all = std::collections::HashMap::new();
        for &addr in metrics {
            all.extend(load::scrape_metrics(addr).await.ok()?);
        }
        Some(all)
    };
    tokio::time::sleep(config.warmup).await;
    let servers_before = servers();
    let written_before = written();
    let own_before = load::own_cpu_time().ok();
    let machine_before = load::machine_busy_time().ok();
    let metrics_before = scrape().await;
    tokio::time::sleep(config.duration).await;
    let servers_after = servers();
    let written_after = written();
    let own_after = load::own_cpu_time().ok();
    let machine_after = load::machine_busy_time().ok();
    let metrics_after = scrape().await;

    let percent = |before: Option<Duration>, after: Option<Duration>| {
        Some(100.0 * (after? - before?).as_secs_f64() / config.duration.as_secs_f64())
    };
    let ratio = |numerator: &str, denominator: &str| {
        let (before, after) = (metrics_before.as_ref()?, metrics_after.as_ref()?);
        let delta = |name: &str| Some(after.get(name)? - before.get(name)?);
        let denominator = delta(denominator)?;
        (denominator > 0.0).then_some(delta(numerator)? / denominator)
    };
    let writes_per_flush = ratio("store_writes_total", "store_flushes_total");
    let writes_per_batch = ratio(
        "session_store_batched_writes_total",
        "session_store_batches_total",
    );
    let server_cpu: Vec<Option<f64>> = servers_before
        .into_iter()
        .zip(servers_after)
        .map(|(before, after)| percent(before, after))
        .collect();
    let server_written = written_before
        .into_iter()
        .zip(written_after)
        .map(|(before, after)| after?.checked_sub(before?))
        .collect();
    let loadgen_cpu = percent(own_before, own_after);
    let servers_total: Option<f64> = server_cpu.iter().copied().sum();
    let other_cpu = percent(machine_before, machine_after)
        .zip(servers_total.zip(loadgen_cpu))
        .map(|(machine, (servers, own))| (machine - servers - own).max(0.0));
    WindowSample {
        duration: config.duration,
        server_cpu,
        server_written,
        loadgen_cpu,
        other_cpu,
        writes_per_flush,
        writes_per_batch,
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_first_target_rotates_between_runs() {
        assert_eq!(rotate(1, &['a', 'b']), ['a', 'b']);
        assert_eq!(rotate(2, &['a', 'b']), ['b', 'a']);
        assert_eq!(rotate(3, &['a', 'b']), ['a', 'b']);
        assert_eq!(rotate(2, &['a', 'b', 'c']), ['b', 'c', 'a']);
        assert_eq!(rotate(4, &['a', 'b', 'c']), ['a', 'b', 'c']);
    }

    #[test]
    fn costs_per_op_divide_by_the_answers_in_the_window() {
        let report = LoadReport::default();
        let measured = Measured {
            run: 1,
            target: 'a',
            report,
            window: WindowSample::default(),
        };
        // No answers: no cost per answer, rather than a division by zero.
        assert_eq!(measured.cpu_micros_per_op(&[0]), None);
        assert_eq!(measured.written_per_op(0), None);
    }
}
