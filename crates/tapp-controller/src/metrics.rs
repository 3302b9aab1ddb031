//! Prometheus metrics of the TApp controller (all in the binary's one registry).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use addon_common::api::tapp::InstanceStatus;
use addon_common::metrics::ReconcileMetrics;
use addon_common::webhook::ReviewMetrics;
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::Result;

/// Metric name prefix.
pub const PREFIX: &str = "tapp_controller";

/// Every metric the controller exports.
#[derive(Clone)]
pub struct Metrics {
    /// `tapp_controller_reconcile_total`, `_reconcile_errors_total{error}`, `_reconcile_duration_seconds`.
    pub reconcile: ReconcileMetrics,
    /// `tapp_controller_instances{namespace,tapp,status}`.
    pub instances: IntGaugeVec,
    /// `tapp_controller_pod_updates_total{method}`: in_place, resize, recreate, metadata.
    pub pod_updates: IntCounterVec,
    /// `tapp_controller_rollout_updated_instances{namespace,tapp}`.
    pub rollout_updated: IntGaugeVec,
    /// `tapp_controller_rollout_desired_instances{namespace,tapp}`.
    pub rollout_desired: IntGaugeVec,
    /// `tapp_controller_webhook_requests_total{result}`.
    pub webhook: ReviewMetrics,
    /// `tapp_controller_reconcile_deferred_total`: reconciles that waited for the watch cache
    /// to show the controller's own writes.
    pub deferred: IntCounter,
    /// What [`Metrics::set_tapp`] last set, by namespace and TApp: most reconciles change no
    /// gauge, and setting them all costs a dozen label hashes and lookups. (Nested so that
    /// the unchanged case looks up borrowed names without allocating a key.)
    published: Arc<Mutex<HashMap<String, HashMap<String, TAppGauges>>>>,
}

/// Instances by status (in `InstanceStatus::ALL` order), updated, desired.
type TAppGauges = ([u32; InstanceStatus::ALL.len()], u32, u32);

impl Metrics {
    /// Registers every metric in `registry`.
    pub fn register(registry: &Registry) -> Result<Self> {
        let reconcile = ReconcileMetrics::register(registry, PREFIX)?;
        let instances = IntGaugeVec::new(
            Opts::new(
                format!("{PREFIX}_instances"),
                "TApp instances by observed instance status.",
            ),
            &["namespace", "tapp", "status"],
        )
        .map_err(addon_common::Error::from)?;
        let pod_updates = IntCounterVec::new(
            Opts::new(
                format!("{PREFIX}_pod_updates_total"),
                "Pods brought to a new template, by method (in_place, resize, recreate, metadata).",
            ),
            &["method"],
        )
        .map_err(addon_common::Error::from)?;
        let rollout_updated = IntGaugeVec::new(
            Opts::new(
                format!("{PREFIX}_rollout_updated_instances"),
                "Desired running instances whose pod runs the instance's current template.",
            ),
            &["namespace", "tapp"],
        )
        .map_err(addon_common::Error::from)?;
        let rollout_desired = IntGaugeVec::new(
            Opts::new(
                format!("{PREFIX}_rollout_desired_instances"),
                "Instances that should be running.",
            ),
            &["namespace", "tapp"],
        )
        .map_err(addon_common::Error::from)?;
        let webhook = ReviewMetrics::register(registry, PREFIX)?;
        let deferred = IntCounter::new(
            format!("{PREFIX}_reconcile_deferred_total"),
            "Reconciles that planned nothing because the watch cache did not show the controller's own writes yet.",
        )
        .map_err(addon_common::Error::from)?;
        registry
            .register(Box::new(deferred.clone()))
            .map_err(addon_common::Error::from)?;
        for c in [&instances, &rollout_updated, &rollout_desired] {
            registry
                .register(Box::new(c.clone()))
                .map_err(addon_common::Error::from)?;
        }
        registry
            .register(Box::new(pod_updates.clone()))
            .map_err(addon_common::Error::from)?;
        for method in ["in_place", "resize", "recreate", "metadata"] {
            pod_updates.with_label_values(&[method]);
        }
        Ok(Self {
            reconcile,
            instances,
            pod_updates,
            rollout_updated,
            rollout_desired,
            webhook,
            deferred,
            published: Arc::default(),
        })
    }

    /// Sets the per-TApp gauges.
    pub fn set_tapp(
        &self,
        ns: &str,
        name: &str,
        statuses: &std::collections::BTreeMap<String, InstanceStatus>,
        updated: u32,
        desired: u32,
    ) {
        let mut counts = [0u32; InstanceStatus::ALL.len()];
        for v in statuses.values() {
            if let Some(i) = InstanceStatus::ALL.iter().position(|s| s == v) {
                counts[i] += 1;
            }
        }
        let gauges = (counts, updated, desired);
        let before = {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            match published.get_mut(ns).and_then(|m| m.get_mut(name)) {
                Some(last) if *last == gauges => return,
                Some(last) => Some(std::mem::replace(last, gauges)),
                None => {
                    published
                        .entry(ns.to_string())
                        .or_default()
                        .insert(name.to_string(), gauges);
                    None
                }
            }
        };
        // Only statuses some instance has: 11 statuses x thousands of TApps of mostly-zero
        // series cost memory and scrape time for nothing. Only series set before are removed
        // (removing an absent one builds an error message).
        for (i, (s, n)) in InstanceStatus::ALL.iter().zip(counts).enumerate() {
            if n > 0 {
                self.instances
                    .with_label_values(&[ns, name, s.as_str()])
                    .set(i64::from(n));
            } else if before.is_some_and(|(b, _, _)| b[i] > 0) {
                let _ = self.instances.remove_label_values(&[ns, name, s.as_str()]);
            }
        }
        self.rollout_updated
            .with_label_values(&[ns, name])
            .set(i64::from(updated));
        self.rollout_desired
            .with_label_values(&[ns, name])
            .set(i64::from(desired));
    }

    /// Removes the gauges of a TApp that no longer exists.
    pub fn forget_tapp(&self, ns: &str, name: &str) {
        {
            let mut published = self.published.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tapps) = published.get_mut(ns) {
                tapps.remove(name);
                if tapps.is_empty() {
                    published.remove(ns);
                }
            }
        }
        for s in InstanceStatus::ALL {
            let _ = self.instances.remove_label_values(&[ns, name, s.as_str()]);
        }
        let _ = self.rollout_updated.remove_label_values(&[ns, name]);
        let _ = self.rollout_desired.remove_label_values(&[ns, name]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn series(registry: &Registry) -> Vec<String> {
        let mut out = Vec::new();
        for family in registry.gather() {
            if family.name() != "tapp_controller_instances" {
                continue;
            }
            for m in family.get_metric() {
                let status = m
                    .get_label()
                    .iter()
                    .find(|l| l.name() == "status")
                    .map(|l| l.value().to_string())
                    .unwrap_or_default();
                out.push(format!("{status}={}", m.get_gauge().get_value()));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn instance_gauges_exist_only_for_statuses_some_instance_has() {
        let registry = Registry::new();
        let metrics = Metrics::register(&registry).expect("register");
        let statuses = |list: &[(&str, InstanceStatus)]| -> BTreeMap<String, InstanceStatus> {
            list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        use InstanceStatus::{Pending, Running};
        metrics.set_tapp(
            "ns",
            "t",
            &statuses(&[("0", Running), ("1", Pending)]),
            1,
            2,
        );
        assert_eq!(series(&registry), ["Pending=1", "Running=1"]);
        metrics.set_tapp(
            "ns",
            "t",
            &statuses(&[("0", Running), ("1", Running)]),
            2,
            2,
        );
        assert_eq!(series(&registry), ["Running=2"]);
        metrics.forget_tapp("ns", "t");
        assert!(series(&registry).is_empty());
        // The values last set before forgetting: set again all the same (what was last set
        // is forgotten with the gauges), and a repeat keeps them.
        let two = statuses(&[("0", Running), ("1", Running)]);
        metrics.set_tapp("ns", "t", &two, 2, 2);
        assert_eq!(series(&registry), ["Running=2"]);
        metrics.set_tapp("ns", "t", &two, 2, 2);
        assert_eq!(series(&registry), ["Running=2"]);
    }
}
