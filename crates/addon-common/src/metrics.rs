//! Prometheus metrics: one [`Registry`] per binary, and the reconcile trio every controller exports.
//!
//! The text exposition of the `prometheus` crate passes `promtool check metrics`
//! (counters end in `_total`, every family has HELP).

use std::time::Instant;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::Result;

/// Creates the binary's registry, with the process collector (CPU, RSS, open fds) on Linux.
pub fn new_registry() -> Result<Registry> {
    let registry = Registry::new();
    #[cfg(target_os = "linux")]
    registry.register(Box::new(
        prometheus::process_collector::ProcessCollector::for_self(),
    ))?;
    Ok(registry)
}

/// Turns a component name such as `tapp-controller` into a metric prefix (`tapp_controller`).
pub fn metric_prefix(component: &str) -> String {
    component
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Buckets for reconcile durations: 1 ms to about 16 s.
pub const RECONCILE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 16.0,
];

/// `<prefix>_reconcile_total`, `<prefix>_reconcile_errors_total{error}`,
/// `<prefix>_reconcile_duration_seconds`.
#[derive(Clone)]
pub struct ReconcileMetrics {
    runs: IntCounter,
    failures: IntCounterVec,
    duration: Histogram,
}

impl ReconcileMetrics {
    /// Registers the trio for one controller; `prefix` is e.g. `tapp`.
    pub fn register(registry: &Registry, prefix: &str) -> Result<Self> {
        let prefix = metric_prefix(prefix);
        let runs = IntCounter::with_opts(Opts::new(
            format!("{prefix}_reconcile_total"),
            "Reconciliations started.",
        ))?;
        let failures = IntCounterVec::new(
            Opts::new(
                format!("{prefix}_reconcile_errors_total"),
                "Reconciliations that failed, by error kind.",
            ),
            &["error"],
        )?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                format!("{prefix}_reconcile_duration_seconds"),
                "Time spent in one reconciliation.",
            )
            .buckets(RECONCILE_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(runs.clone()))?;
        registry.register(Box::new(failures.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self {
            runs,
            failures,
            duration,
        })
    }

    /// Counts a run and returns a guard that records its duration when dropped.
    pub fn count_and_measure(&self) -> ReconcileMeasurer {
        self.runs.inc();
        ReconcileMeasurer {
            start: Instant::now(),
            histogram: self.duration.clone(),
        }
    }

    /// Counts a failed reconciliation under a low-cardinality error label.
    pub fn failure(&self, error_label: &str) {
        self.failures.with_label_values(&[error_label]).inc();
    }
}

/// Records the reconcile duration on drop.
pub struct ReconcileMeasurer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileMeasurer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}

/// Encodes a registry in the Prometheus text format (version 0.0.4).
pub fn encode_text(registry: &Registry) -> String {
    let mut out = String::new();
    let encoder = prometheus::TextEncoder::new();
    if let Err(error) = encoder.encode_utf8(&registry.gather(), &mut out) {
        tracing::error!(%error, "cannot encode metrics");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trio_counts_runs_failures_and_durations() {
        let registry = Registry::new();
        let m = ReconcileMetrics::register(&registry, "tapp-controller").expect("register");
        {
            let _guard = m.count_and_measure();
        }
        m.failure("kube");
        let text = encode_text(&registry);
        assert!(text.contains("tapp_controller_reconcile_total 1"), "{text}");
        assert!(
            text.contains(r#"tapp_controller_reconcile_errors_total{error="kube"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("tapp_controller_reconcile_duration_seconds_count 1"),
            "{text}"
        );
    }

    #[test]
    fn registering_twice_is_an_error() {
        let registry = Registry::new();
        ReconcileMetrics::register(&registry, "x").expect("first");
        assert!(ReconcileMetrics::register(&registry, "x").is_err());
    }

    #[test]
    fn prefixes_are_sanitised() {
        assert_eq!(metric_prefix("galaxy-ipam"), "galaxy_ipam");
        assert_eq!(metric_prefix("GPU.Manager"), "gpu_manager");
    }
}
