//! The simulated cluster around the emulated API server: a kube-scheduler with HTTP extenders,
//! kubelets for simulated nodes, the built-in workload controllers, a PVC binder and the
//! admission-webhook dispatcher.
//!
//! Everything but the webhook dispatcher (which is part of the API server's write path) talks to
//! the API server through a `kube::Client`, exactly like the real components would, so the
//! same watch/list/patch paths are exercised. Each component is a small controller whose
//! decisions are pure, table-tested functions ([`scheduler::predicates`],
//! [`kubelet::lifecycle`], [`controllers::deployment::rolling_plan`], ...).
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use e2e::cluster::{ClusterConfig, NodeSpec, SimCluster};
//! let server = e2e::ApiServer::new(e2e::Config { graceful_pod_deletion: true, ..Default::default() });
//! let cluster = SimCluster::start_with_server(&server, ClusterConfig::with_nodes(3)).await?;
//! cluster.set_node_ready("node-1", false).await?; // node failure
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

pub mod args;
pub mod controllers;
pub mod harness;
pub mod http;
pub mod kubelet;
pub mod quantity;
pub mod scheduler;
pub mod state;
pub mod util;
pub mod webhook;

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use args::ClusterArgs;
pub use controllers::ControllersConfig;
pub use kubelet::node::{Cidr, NodeResources, NodeSpec};
pub use scheduler::{ExtenderConfig, SchedulerConfig};
pub use webhook::WebhookDispatcher;

use kubelet::Kubelets;

/// Errors starting or driving the simulated cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// Bad configuration.
    #[error("{0}")]
    Config(String),
    /// API failure.
    #[error(transparent)]
    Kube(#[from] kube::Error),
}

/// Configuration of the simulated cluster.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// Nodes created at start.
    pub nodes: Vec<NodeSpec>,
    /// Scheduler settings (names, extenders); `None` runs no scheduler.
    pub scheduler: Option<SchedulerConfig>,
    /// Workload controllers to run.
    pub controllers: ControllersConfig,
    /// Nodes without an explicit address get the n-th address of this range (from the
    /// second on: `.0` is the network, `.1` the conventional gateway).
    pub node_address_cidr: Cidr,
    /// Nodes without an explicit pod CIDR get the n-th /24 of this range.
    pub pod_cidr: Cidr,
    /// Lease renewal interval (leases last 4× this).
    pub lease_interval: Duration,
    /// Kubelets record events (Pulled, Created, Started, Killing, BackOff) as real ones do;
    /// turn off for benchmarks that count API writes.
    pub kubelet_events: bool,
    /// Called before containers start (device plugins); none by default.
    pub kubelet_hooks: Option<Arc<dyn kubelet::KubeletHooks>>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nodes: Vec::new(),
            scheduler: Some(SchedulerConfig::default()),
            controllers: ControllersConfig::default(),
            node_address_cidr: Cidr {
                base: u32::from(Ipv4Addr::new(192, 168, 0, 0)),
                prefix: 16,
            },
            pod_cidr: Cidr {
                base: u32::from(Ipv4Addr::new(10, 244, 0, 0)),
                prefix: 16,
            },
            lease_interval: Duration::from_secs(10),
            kubelet_events: true,
            kubelet_hooks: None,
        }
    }
}

impl ClusterConfig {
    /// `n` default-shaped nodes named `node-0` … `node-<n-1>`.
    pub fn with_nodes(n: usize) -> Self {
        ClusterConfig {
            nodes: (0..n).map(|i| NodeSpec::new(format!("node-{i}"))).collect(),
            ..Default::default()
        }
    }
}

/// A running simulated cluster. Dropping it does not stop it: call [`SimCluster::shutdown`]
/// (or cancel [`SimCluster::cancellation_token`]).
pub struct SimCluster {
    client: Client,
    kubelets: Arc<Kubelets>,
    cancel: CancellationToken,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    config: ClusterConfig,
    next_index: Mutex<u64>,
    save_state: Mutex<Option<(crate::ApiServer, std::path::PathBuf)>>,
    scheduler_stats: Option<Arc<scheduler::SchedulerStats>>,
}

impl std::fmt::Debug for SimCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCluster")
            .field("nodes", &self.kubelets.nodes())
            .finish_non_exhaustive()
    }
}

impl SimCluster {
    /// Installs the admission-webhook dispatcher into `server` and starts the cluster against
    /// its in-process client. The server should have `graceful_pod_deletion` on so kubelets
    /// finish pod deletions as in a real cluster.
    pub async fn start_with_server(
        server: &crate::ApiServer,
        config: ClusterConfig,
    ) -> Result<SimCluster, ClusterError> {
        if !server.config().graceful_pod_deletion {
            tracing::warn!(
                "graceful_pod_deletion is off: pod deletions will not wait for the kubelet"
            );
        }
        server.add_admission_hook(Arc::new(controllers::taints::DefaultTolerationSeconds));
        WebhookDispatcher::install(server);
        Self::start(server.client(), config).await
    }

    /// Starts the scheduler, kubelets (registering `config.nodes`) and controllers, talking to
    /// the API through `client`.
    pub async fn start(client: Client, config: ClusterConfig) -> Result<SimCluster, ClusterError> {
        let cancel = CancellationToken::new();
        let kubelets = Kubelets::new(
            client.clone(),
            config.kubelet_events,
            config.kubelet_hooks.clone(),
        );
        let mut tasks = Vec::new();
        let mut scheduler_stats = None;
        if let Some(sc) = &config.scheduler {
            let s = scheduler::Scheduler::new(client.clone(), sc).map_err(ClusterError::Config)?;
            scheduler_stats = Some(s.stats());
            tasks.push(tokio::spawn(Arc::new(s).run(cancel.clone())));
        }
        tasks.push(tokio::spawn(
            kubelets.clone().run(config.lease_interval, cancel.clone()),
        ));
        tasks.extend(controllers::spawn_all(
            client.clone(),
            &config.controllers,
            &cancel,
        ));
        let cluster = SimCluster {
            client,
            kubelets,
            cancel,
            tasks: Mutex::new(tasks),
            config: config.clone(),
            next_index: Mutex::new(0),
            save_state: Mutex::new(None),
            scheduler_stats,
        };
        for n in config.nodes {
            cluster.add_node(n).await?;
        }
        Ok(cluster)
    }

    /// The API client the components use.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The scheduler's counters (`None` without a scheduler).
    pub fn scheduler_stats(&self) -> Option<Arc<scheduler::SchedulerStats>> {
        self.scheduler_stats.clone()
    }

    /// Cancelled on shutdown; cancelling it stops every component.
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Adds a node (filling in its address and pod CIDR from the cluster ranges when unset).
    pub async fn add_node(&self, spec: NodeSpec) -> Result<(), ClusterError> {
        let i = {
            let mut n = self.next_index.lock().unwrap_or_else(|e| e.into_inner());
            *n += 1;
            *n - 1
        };
        let address = match spec.address {
            Some(a) => a,
            None => self.config.node_address_cidr.nth(i + 2).ok_or_else(|| {
                ClusterError::Config(format!(
                    "node address range {} exhausted",
                    self.config.node_address_cidr
                ))
            })?,
        };
        let pod_cidr = match &spec.pod_cidr {
            Some(c) => Cidr::parse(c).map_err(ClusterError::Config)?,
            None => self.config.pod_cidr.subnet(24, i).ok_or_else(|| {
                ClusterError::Config(format!("pod range {} exhausted", self.config.pod_cidr))
            })?,
        };
        self.kubelets.add_node(spec, address, pod_cidr).await?;
        Ok(())
    }

    /// Deletes a node; its pods are force-deleted (pod GC).
    pub async fn remove_node(&self, name: &str) -> Result<(), ClusterError> {
        Ok(self.kubelets.remove_node(name).await?)
    }

    /// Makes a node NotReady/unreachable (`false`: its kubelet stops updating pods and its
    /// lease, conditions go Unknown, unreachable taints are added) or Ready again (`true`).
    pub async fn set_node_ready(&self, name: &str, ready: bool) -> Result<(), ClusterError> {
        Ok(self.kubelets.set_node_ready(name, ready).await?)
    }

    /// Sets (`Some`) or removes (`None`) an extended resource (`tencent.com/vcuda-core`) of a
    /// node's capacity and allocatable at run time, as a device plugin manager advertises it
    /// through `nodes/status`. The kubelet keeps reporting it, the scheduler fits pods to it.
    pub async fn set_extended_resource(
        &self,
        node: &str,
        resource: &str,
        capacity: Option<&str>,
        allocatable: Option<&str>,
    ) -> Result<(), ClusterError> {
        Ok(self
            .kubelets
            .set_extended_resource(node, resource, capacity, allocatable)
            .await?)
    }

    /// A node's capacity and allocatable as its kubelet reports them now.
    pub fn node_resources(&self, node: &str) -> Option<NodeResources> {
        self.kubelets.node_resources(node)
    }

    /// The simulated nodes and whether each is Ready.
    pub fn nodes(&self) -> Vec<(String, bool)> {
        self.kubelets.nodes()
    }

    /// Writes `server`'s objects to `path` (see [`state`]) when the cluster shuts down.
    /// Also saved every 30 s while running, so a sandbox killed without Ctrl-C (SIGTERM, crash)
    /// loses at most that much.
    pub fn save_state_on_shutdown(&self, server: crate::ApiServer, path: std::path::PathBuf) {
        *self.save_state.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((server.clone(), path.clone()));
        let cancel = self.cancel.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
                let (server, path) = (server.clone(), path.clone());
                let saved = tokio::task::spawn_blocking(move || state::save(&server, &path)).await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(error = %e, "saving state");
                }
            }
        });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
    }

    /// Stops every component and waits for them (then saves the state file, if any).
    pub async fn shutdown(&self) {
        self.cancel.cancel();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
        let save = self
            .save_state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((server, path)) = save {
            match state::save(&server, &path) {
                Ok(n) => tracing::info!(objects = n, file = %path.display(), "state saved"),
                Err(e) => tracing::error!(error = %e, file = %path.display(), "saving state"),
            }
        }
    }
}
