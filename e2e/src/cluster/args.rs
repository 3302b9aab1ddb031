//! `sandbox` command-line flags for the simulated cluster ([`ClusterArgs`], flattened into the
//! sandbox's clap parser).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::{Cidr, ClusterConfig, NodeSpec, SchedulerConfig};

/// Flags of the simulated cluster.
#[derive(Clone, Debug, clap::Args)]
pub struct ClusterArgs {
    /// Number of simulated nodes (`node-0` … `node-<N-1>`); 0 runs no kubelet.
    #[arg(long, default_value_t = 3, env = "SANDBOX_NODES")]
    pub nodes: usize,
    /// Range the nodes' InternalIPs are taken from (the n-th node gets the (n+2)-th address).
    #[arg(long, default_value = "192.168.0.0/16")]
    pub node_address_cidr: String,
    /// Range the nodes' pod CIDRs are carved from (one /24 per node). A 127.x range gives pod
    /// IPs that loopback servers can listen on.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub pod_cidr: String,
    /// Node capacity entries `name=quantity` (repeatable or comma-separated), added to the
    /// defaults cpu=8, memory=32Gi, pods=110, e.g. `tencent.com/vcuda-core=400`.
    #[arg(long = "node-capacity", value_delimiter = ',')]
    pub node_capacity: Vec<String>,
    /// Node labels `key=value` (repeatable or comma-separated).
    #[arg(long = "node-label", value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// Node taints `key[=value]:Effect` (repeatable or comma-separated).
    #[arg(long = "node-taint", value_delimiter = ',')]
    pub node_taints: Vec<String>,
    /// A KubeSchedulerConfiguration file (kubescheduler.config.k8s.io/v1): profile
    /// schedulerNames and `extenders` are used.
    #[arg(long)]
    pub scheduler_config: Option<PathBuf>,
    /// Run without the simulated scheduler.
    #[arg(long)]
    pub no_scheduler: bool,
    /// Run without the workload controllers (ReplicaSet, Deployment, StatefulSet, DaemonSet, Job, PVC binder).
    #[arg(long)]
    pub no_controllers: bool,
    /// Load the stored objects from this file at start (if it exists) and write them back on
    /// shutdown, so the sandbox survives its own restart.
    #[arg(long)]
    pub state_file: Option<PathBuf>,
    /// Do not record kubelet events (Pulled, Created, Started, ...).
    #[arg(long)]
    pub no_kubelet_events: bool,
    /// Node lease renewal interval in seconds.
    #[arg(long, default_value_t = 10)]
    pub lease_interval_seconds: u64,
}

fn kv(s: &str, what: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("invalid {what} {s:?}: expected key=value"))
}

/// Parses `key[=value]:Effect`.
pub fn parse_taint(s: &str) -> Result<k8s_openapi::api::core::v1::Taint, String> {
    let (kv, effect) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("invalid taint {s:?}: expected key[=value]:Effect"))?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(format!("invalid taint effect {effect:?} in {s:?}"));
    }
    let (key, value) = kv
        .split_once('=')
        .map_or((kv, None), |(k, v)| (k, Some(v.to_string())));
    Ok(k8s_openapi::api::core::v1::Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

impl ClusterArgs {
    /// Starts the cluster these flags describe against `server` (installing the webhook
    /// dispatcher). The server should be built with `graceful_pod_deletion: true`.
    pub async fn start(&self, server: &crate::ApiServer) -> anyhow::Result<super::SimCluster> {
        let cfg = self.to_config().map_err(anyhow::Error::msg)?;
        if let Some(path) = &self.state_file {
            let n = super::state::load(server, path)?;
            if n > 0 {
                tracing::info!(objects = n, file = %path.display(), "state loaded");
            }
        }
        let cluster = super::SimCluster::start_with_server(server, cfg).await?;
        if let Some(path) = &self.state_file {
            cluster.save_state_on_shutdown(server.clone(), path.clone());
        }
        Ok(cluster)
    }

    /// The cluster configuration these flags describe.
    pub fn to_config(&self) -> Result<ClusterConfig, String> {
        let mut capacity = BTreeMap::new();
        for c in self.node_capacity.iter().filter(|s| !s.is_empty()) {
            let (k, v) = kv(c, "node capacity")?;
            if crate::cluster::quantity::parse_milli(&v).is_none() {
                return Err(format!("invalid quantity {v:?} for {k}"));
            }
            capacity.insert(k, v);
        }
        let labels = self
            .node_labels
            .iter()
            .filter(|s| !s.is_empty())
            .map(|l| kv(l, "node label"))
            .collect::<Result<BTreeMap<_, _>, _>>()?;
        let taints = self
            .node_taints
            .iter()
            .filter(|s| !s.is_empty())
            .map(|t| parse_taint(t))
            .collect::<Result<Vec<_>, _>>()?;
        let nodes = (0..self.nodes)
            .map(|i| {
                let mut n = NodeSpec::new(format!("node-{i}"));
                n.capacity.extend(capacity.clone());
                n.labels = labels.clone();
                n.taints = taints.clone();
                n
            })
            .collect();
        let scheduler = if self.no_scheduler {
            None
        } else {
            Some(match &self.scheduler_config {
                Some(p) => SchedulerConfig::from_file(p)?,
                None => SchedulerConfig::default(),
            })
        };
        let mut controllers = super::ControllersConfig::default();
        if self.no_controllers {
            controllers = super::ControllersConfig {
                deployments: false,
                statefulsets: false,
                daemonsets: false,
                jobs: false,
                pvc_binder: false,
                taint_eviction: false,
                endpoints: false,
            };
        }
        Ok(ClusterConfig {
            nodes,
            scheduler,
            controllers,
            node_address_cidr: Cidr::parse(&self.node_address_cidr)?,
            pod_cidr: Cidr::parse(&self.pod_cidr)?,
            lease_interval: Duration::from_secs(self.lease_interval_seconds.max(1)),
            kubelet_events: !self.no_kubelet_events,
            kubelet_hooks: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        cluster: ClusterArgs,
    }

    #[test]
    fn flags_to_config() {
        let cli = Cli::parse_from([
            "sandbox",
            "--nodes",
            "2",
            "--node-address-cidr",
            "10.0.0.0/24",
            "--node-capacity",
            "tencent.com/vcuda-core=400,tke.cloud.tencent.com/eni-ip=10",
            "--node-label",
            "zone=a",
            "--node-taint",
            "dedicated=gpu:NoSchedule",
        ]);
        let c = cli.cluster.to_config().expect("config");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.nodes[1].name, "node-1");
        assert_eq!(
            c.nodes[0]
                .capacity
                .get("tencent.com/vcuda-core")
                .map(String::as_str),
            Some("400")
        );
        assert_eq!(
            c.nodes[0].capacity.get("cpu").map(String::as_str),
            Some("8")
        );
        assert_eq!(c.nodes[0].labels.get("zone").map(String::as_str), Some("a"));
        assert_eq!(c.nodes[0].taints[0].value.as_deref(), Some("gpu"));
        assert_eq!(c.node_address_cidr.to_string(), "10.0.0.0/24");
        assert!(parse_taint("a:Bad").is_err());
        let bad = Cli::parse_from(["sandbox", "--node-capacity", "cpu=lots"]);
        assert!(bad.cluster.to_config().is_err());
    }
}
