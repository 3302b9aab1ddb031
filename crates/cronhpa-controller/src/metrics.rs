//! The controller's metrics, in the binary's one registry.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use addon_common::{metrics::ReconcileMetrics, webhook::ReviewMetrics};
use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::{Error, Result};

fn registration(error: impl Into<addon_common::Error>) -> Error {
    Error::RegisterMetrics {
        source: error.into(),
    }
}

/// Buckets of the scheduling lag: 10 ms to 10 minutes.
pub const LAG_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// Condition labels of the `objects` gauge.
pub const CONDITIONS: [&str; 4] = ["ready", "failing", "suspended", "invalid"];

/// Every metric of the controller. Clones share the metrics (and the per-object conditions).
#[derive(Clone)]
pub struct Metrics {
    /// `cronhpa_controller_reconcile_total`, `_reconcile_errors_total{error}`,
    /// `_reconcile_duration_seconds`.
    pub reconcile: ReconcileMetrics,
    /// `cronhpa_controller_fires_total{result}`: occurrences by result (succeeded, failed,
    /// skipped).
    pub fires: IntCounterVec,
    /// `cronhpa_controller_schedule_lag_seconds`: completion of a successful scale minus the
    /// occurrence's scheduled time.
    pub lag: Histogram,
    /// `cronhpa_controller_objects{condition}`: CronHPAs by condition.
    pub objects: IntGaugeVec,
    /// `cronhpa_controller_status_writes_total{result}`: background status patches by result
    /// (succeeded, failed).
    pub status_writes: IntCounterVec,
    /// `cronhpa_controller_webhook_requests_total{result}`: admission reviews answered.
    pub webhook: ReviewMetrics,
    states: Arc<Mutex<HashMap<String, &'static str>>>,
}

impl Metrics {
    /// Registers the metrics in `registry`.
    pub fn register(registry: &Registry) -> Result<Self> {
        let reconcile =
            ReconcileMetrics::register(registry, "cronhpa-controller").map_err(registration)?;
        let fires = IntCounterVec::new(
            Opts::new(
                "cronhpa_controller_fires_total",
                "Schedule occurrences handled, by result (succeeded, failed, skipped).",
            ),
            &["result"],
        )
        .map_err(registration)?;
        let lag = Histogram::with_opts(
            HistogramOpts::new(
                "cronhpa_controller_schedule_lag_seconds",
                "Time from an occurrence's scheduled time to the completion of its scale.",
            )
            .buckets(LAG_BUCKETS.to_vec()),
        )
        .map_err(registration)?;
        let objects = IntGaugeVec::new(
            Opts::new(
                "cronhpa_controller_objects",
                "CronHPA objects by condition (ready, failing, suspended, invalid).",
            ),
            &["condition"],
        )
        .map_err(registration)?;
        let status_writes = IntCounterVec::new(
            Opts::new(
                "cronhpa_controller_status_writes_total",
                "Status patches written in the background, by result (succeeded, failed).",
            ),
            &["result"],
        )
        .map_err(registration)?;
        for c in [
            Box::new(fires.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(lag.clone()),
            Box::new(objects.clone()),
            Box::new(status_writes.clone()),
        ] {
            registry.register(c).map_err(registration)?;
        }
        let webhook =
            ReviewMetrics::register(registry, "cronhpa-controller").map_err(registration)?;
        for c in CONDITIONS {
            objects.with_label_values(&[c]).set(0);
        }
        for r in ["succeeded", "failed", "skipped"] {
            fires.with_label_values(&[r]).inc_by(0);
        }
        for r in ["succeeded", "failed"] {
            status_writes.with_label_values(&[r]).inc_by(0);
        }
        Ok(Self {
            reconcile,
            fires,
            lag,
            objects,
            status_writes,
            webhook,
            states: Arc::default(),
        })
    }

    /// Records the condition of one object.
    pub fn set_state(&self, key: &str, condition: &'static str) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let old = states.insert(key.to_owned(), condition);
        if old != Some(condition) {
            if let Some(old) = old {
                self.objects.with_label_values(&[old]).dec();
            }
            self.objects.with_label_values(&[condition]).inc();
        }
    }

    /// Forgets the objects for which `exists` is false (deleted objects).
    pub fn prune(&self, exists: impl Fn(&str) -> bool) {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        states.retain(|key, condition| {
            let keep = exists(key);
            if !keep {
                self.objects.with_label_values(&[*condition]).dec();
            }
            keep
        });
    }

    /// Forgets every object (when this replica stops leading).
    pub fn clear(&self) {
        self.prune(|_| false);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_gauge_follows_transitions_and_deletions() {
        let registry = Registry::new();
        let m = Metrics::register(&registry).expect("register");
        m.set_state("a/x", "ready");
        m.set_state("a/y", "ready");
        m.set_state("a/x", "invalid");
        m.set_state("a/x", "invalid");
        let text = addon_common::metrics::encode_text(&registry);
        assert!(
            text.contains(r#"cronhpa_controller_objects{condition="ready"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cronhpa_controller_objects{condition="invalid"} 1"#),
            "{text}"
        );
        m.prune(|k| k == "a/y");
        let text = addon_common::metrics::encode_text(&registry);
        assert!(
            text.contains(r#"cronhpa_controller_objects{condition="invalid"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cronhpa_controller_fires_total{result="skipped"} 0"#),
            "{text}"
        );
    }
}
