//! Logging and tracing setup, called once from each binary's `main` (libraries only emit
//! events and spans).

use std::{io::IsTerminal, time::Duration};

use clap::ValueEnum;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, Layer, Registry, filter::Targets, layer::Layered, prelude::*};

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);

/// How long the final flush at shutdown may delay the exit, collector answering or not.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// What [`init`] installed that needs an orderly end: the span exporter, if any.
#[must_use = "call shutdown() at exit, or buffered spans are lost"]
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Sends the spans still buffered, waiting at most [`FLUSH_TIMEOUT`]: a collector that is
    /// down or slow never holds the exit up for longer. Nothing to do when tracing is off.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks; a detached thread (not spawn_blocking, which the runtime
        // would wait for on exit) keeps even a wedged export from delaying the exit.
        let (done, flushed) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("otlp-flush".into())
            .spawn(move || {
                let _ = done.send(provider.shutdown_with_timeout(FLUSH_TIMEOUT));
            });
        if spawned.is_err() {
            return;
        }
        match tokio::time::timeout(FLUSH_TIMEOUT + Duration::from_millis(200), flushed).await {
            Ok(Ok(Ok(()))) => tracing::debug!("spans flushed to the OTLP collector"),
            Ok(Ok(Err(error))) => {
                tracing::warn!(%error, "flushing spans to the OTLP collector failed")
            }
            _ => tracing::warn!("flushing spans to the OTLP collector timed out; exiting"),
        }
    }
}

/// Installs the global subscriber with log lines only (tools and test servers).
pub fn init(format: LogFormat) {
    // Without an endpoint nothing can fail.
    let _ = init_with_traces(format, None, "");
}

/// Installs the global subscriber: log lines on stderr in `format`, `RUST_LOG` overriding the
/// default level (`info`); and with `otlp_endpoint` (an `http://HOST:PORT` OTLP/gRPC
/// receiver), spans exported through a batch processor with the resource `service.name` =
/// `service_name` (see [`crate::trace`]). Without an endpoint there is no exporter and no
/// background task.
pub fn init_with_traces(
    format: LogFormat,
    otlp_endpoint: Option<&str>,
    service_name: &'static str,
) -> Result<Telemetry, String> {
    type Base = Layered<EnvFilter, Registry>;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into files or log collectors.
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let mut layers: Vec<Box<dyn Layer<Base> + Send + Sync>> = vec![match format {
        LogFormat::Text => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(true).boxed(),
    }];
    let provider = match otlp_endpoint {
        None => None,
        Some(endpoint) => {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint)
                .with_timeout(EXPORT_TIMEOUT)
                .build()
                .map_err(|e| format!("--otlp-endpoint {endpoint}: {e}"))?;
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(Resource::builder().with_service_name(service_name).build())
                .build();
            // The exporter's own client (tonic, hyper, h2) is never traced: its spans would
            // be exported by the exporter, which would trace that, and so on.
            let own = Targets::new()
                .with_default(tracing::Level::TRACE)
                .with_target("h2", tracing::level_filters::LevelFilter::OFF)
                .with_target("hyper", tracing::level_filters::LevelFilter::OFF)
                .with_target("tonic", tracing::level_filters::LevelFilter::OFF)
                .with_target("tower", tracing::level_filters::LevelFilter::OFF)
                .with_target("opentelemetry", tracing::level_filters::LevelFilter::OFF);
            layers.push(
                tracing_opentelemetry::layer()
                    .with_tracer(provider.tracer(service_name))
                    .with_filter(own)
                    .boxed(),
            );
            crate::trace::set_enabled();
            Some(provider)
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .init();
    Ok(Telemetry { provider })
}
