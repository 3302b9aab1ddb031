//! Metrics: Galaxy's names (`galaxy_ip_counter`, `galaxy_schedule_latency`,
//! `galaxy_cloud_provider_latency`) plus ours (`galaxy_ipam_*`), all in the binary's one
//! registry.

use prometheus::{
    HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use crate::{Result, allocator::ip_string, plugin::Slot};

/// Buckets of Galaxy's latency histograms: exponential from 0.1 s ×2, 7 buckets.
pub fn galaxy_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.1, 2.0, 7).unwrap_or_default()
}

/// Fine buckets for decision times (50 µs to 1 s).
pub const DECISION_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.25, 1.0,
];

/// The metrics of galaxy-ipam.
#[derive(Clone)]
pub struct Metrics {
    /// `galaxy_schedule_latency{func="filter"|"bind"}` (seconds, whole request).
    pub schedule_latency: HistogramVec,
    /// `galaxy_cloud_provider_latency{func}`; registered for dashboards, never observed (no
    /// cloud provider support).
    pub cloud_provider_latency: HistogramVec,
    /// `galaxy_ipam_decision_duration_seconds{func}`: in-memory decision time (no API calls).
    pub decision: HistogramVec,
    /// `galaxy_ipam_extender_requests_total{verb,result}`.
    pub requests: IntCounterVec,
    /// `galaxy_ipam_releases_total{decision}`.
    pub releases: IntCounterVec,
    /// `galaxy_ipam_errors_total{error}`.
    pub errors: IntCounterVec,
    /// `galaxy_ipam_config_updates_total{result="applied"|"refused"|"invalid"}`.
    pub config_updates: IntCounterVec,
}

impl Metrics {
    /// Registers every metric; `slot` feeds `galaxy_ip_counter`.
    pub fn register(registry: &Registry, slot: Slot) -> Result<Self> {
        let m = Self::unregistered();
        for c in [
            Box::new(m.schedule_latency.clone()) as Box<dyn Collector>,
            Box::new(m.cloud_provider_latency.clone()),
            Box::new(m.decision.clone()),
            Box::new(m.requests.clone()),
            Box::new(m.releases.clone()),
            Box::new(m.errors.clone()),
            Box::new(m.config_updates.clone()),
            Box::new(IpCounter::new(slot)),
        ] {
            registry
                .register(c)
                .map_err(|source| crate::Error::RegisterMetrics { source })?;
        }
        Ok(m)
    }

    /// The metrics without a registry (tests, bench).
    pub fn unregistered() -> Self {
        #[allow(clippy::expect_used)]
        let hist = |name: &str, help: &str, buckets: Vec<f64>| {
            HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["func"])
                .expect("valid histogram")
        };
        #[allow(clippy::expect_used)]
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter")
        };
        Self {
            schedule_latency: hist(
                "galaxy_schedule_latency",
                "Latency of the extender's filter and bind (seconds), as Galaxy.",
                galaxy_buckets(),
            ),
            cloud_provider_latency: hist(
                "galaxy_cloud_provider_latency",
                "Latency of cloud provider calls (seconds), as Galaxy; not used by this implementation.",
                galaxy_buckets(),
            ),
            decision: hist(
                "galaxy_ipam_decision_duration_seconds",
                "In-memory decision time of filter and bind, API calls excluded (seconds).",
                DECISION_BUCKETS.to_vec(),
            ),
            requests: counter(
                "galaxy_ipam_extender_requests_total",
                "Extender requests by verb and result.",
                &["verb", "result"],
            ),
            releases: counter(
                "galaxy_ipam_releases_total",
                "Release-policy decisions applied to IPs of deleted or finished pods.",
                &["decision"],
            ),
            errors: counter("galaxy_ipam_errors_total", "Errors by kind.", &["error"]),
            config_updates: counter(
                "galaxy_ipam_config_updates_total",
                "Pool configuration updates by result.",
                &["result"],
            ),
        }
    }
}

/// `galaxy_ip_counter{type="allocated"|"total",subnet,first_ip}`, collected live.
struct IpCounter {
    slot: Slot,
    desc: Desc,
}

impl IpCounter {
    fn new(slot: Slot) -> Self {
        #[allow(clippy::expect_used)]
        let desc = Desc::new(
            "galaxy_ip_counter".into(),
            "Floating IPs per pool: allocated and total.".into(),
            vec!["type".into(), "subnet".into(), "first_ip".into()],
            Default::default(),
        )
        .expect("valid desc");
        Self { slot, desc }
    }
}

impl Collector for IpCounter {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let Some(plugin) = self.slot.get() else {
            return Vec::new();
        };
        let gauge = prometheus::GaugeVec::new(
            Opts::new(
                "galaxy_ip_counter",
                "Floating IPs per pool: allocated and total.",
            ),
            &["type", "subnet", "first_ip"],
        );
        let Ok(gauge) = gauge else {
            return Vec::new();
        };
        for s in plugin.ipam.stats() {
            let subnet = s.subnet.to_string();
            let first = ip_string(s.first_ip);
            gauge
                .with_label_values(&["allocated", &subnet, &first])
                .set(s.allocated as f64);
            gauge
                .with_label_values(&["total", &subnet, &first])
                .set(s.total as f64);
        }
        gauge.collect()
    }
}
