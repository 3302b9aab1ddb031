//! The process harness every controller binary uses:
//! client → metrics registry → admin server → signals → leader election → controllers.
//!
//! ```text
//! main ─ telemetry::init ─ Process::start ─┬─ admin server (/metrics /healthz /readyz)
//!                                          ├─ signal watcher (SIGTERM/SIGINT → shutdown)
//!                                          └─ leader elector (Lease) ──► leadership
//! Process::run(|stop| controllers(stop)) : runs the controllers while this replica leads,
//!                                          cancels them when it stops leading or on shutdown.
//! ```

use std::future::Future;
use std::time::Duration;

use kube::Client;
use prometheus::Registry;
use tokio::{sync::watch, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    admin::{self, AdminServer, Health, Leadership},
    cli::{CommonArgs, RuntimeArgs},
    events::EventRecorder,
    leader::{KubeLeaseStore, LeaderElector, Timing, default_identity},
    metrics::new_registry,
    shutdown,
};

/// What every controller's `controller::run(deps, config, metrics, stop)` gets from its
/// process: the client, the readiness state and the Event recorder (one per process, so its
/// series cache folds repeated Events across leadership terms). Cheap to clone.
#[derive(Clone)]
pub struct Deps {
    /// API client.
    pub client: Client,
    /// Readiness state served on `/readyz`.
    pub health: Health,
    /// Events, reported as the component.
    pub events: EventRecorder,
}

/// The namespace a component's own objects (its Lease, its webhook Secret) live in when no
/// flag names one: `explicit` when given, else `$POD_NAMESPACE` (the downward API), else
/// `kube-system`.
pub fn own_namespace(explicit: Option<&str>) -> String {
    namespace_or_fallback(explicit, std::env::var("POD_NAMESPACE").ok())
}

fn namespace_or_fallback(explicit: Option<&str>, pod_namespace: Option<String>) -> String {
    explicit
        .map(str::to_owned)
        .or(pod_namespace)
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "kube-system".into())
}

/// A component's async runtime when its [`RuntimeArgs`] flags are unset. Each `main.rs`
/// states its choice and the measured reason for it next to the constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RuntimeDefaults {
    /// Worker threads; `None`: one per CPU (tokio's default); 1: a current-thread runtime.
    pub threads: Option<u16>,
    /// Wake-up coalescing interval ([`crate::wakeups::coalesce`]); zero: off.
    pub coalesce_wakeups: Duration,
}

impl RuntimeDefaults {
    /// tokio's multi-threaded runtime with a worker per CPU and no coalescing (what
    /// `#[tokio::main]` builds).
    pub const MULTI_THREAD: Self = Self {
        threads: None,
        coalesce_wakeups: Duration::ZERO,
    };
}

/// The runtime `args` (falling back to `defaults`) describe, with I/O and timers enabled.
pub fn build_runtime(
    args: &RuntimeArgs,
    defaults: RuntimeDefaults,
) -> Result<tokio::runtime::Runtime> {
    let threads = args.threads.or(defaults.threads);
    let mut builder = match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(n) => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.worker_threads(usize::from(n));
            b
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    let coalesce = args.coalesce_wakeups.unwrap_or(defaults.coalesce_wakeups);
    crate::wakeups::coalesce(&mut builder, coalesce);
    builder.enable_all().build().map_err(Error::Runtime)
}

/// Runs a binary's `run(args)` future on the runtime [`build_runtime`] builds: what every
/// controller's `main()` does after parsing its flags.
pub fn block_on<F: Future>(
    args: &RuntimeArgs,
    defaults: RuntimeDefaults,
    future: F,
) -> Result<F::Output> {
    Ok(build_runtime(args, defaults)?.block_on(future))
}

/// A started controller process.
pub struct Process {
    /// The component name (binary name), e.g. `tapp-controller`.
    pub component: &'static str,
    /// API client.
    pub client: Client,
    /// The binary's one metrics registry.
    pub registry: Registry,
    /// Readiness state served on `/readyz`.
    pub health: Health,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// The admin server's bound address.
    pub admin_address: std::net::SocketAddr,
    leading: watch::Receiver<bool>,
    elector: Option<JoinHandle<()>>,
    admin: AdminServer,
    admin_stop: CancellationToken,
}

impl Process {
    /// Connects to the API server, starts the admin server, the signal watcher and (when
    /// enabled) leader election. Call after [`crate::telemetry::init`].
    pub async fn start(component: &'static str, args: &CommonArgs) -> Result<Self> {
        let client = args.kube.client().await?;
        Self::start_with_client(component, args, client, shutdown::on_signal()).await
    }

    /// As [`Process::start`], with a given client and shutdown token (tests, embedding).
    pub async fn start_with_client(
        component: &'static str,
        args: &CommonArgs,
        client: Client,
        shutdown: CancellationToken,
    ) -> Result<Self> {
        let registry = new_registry()?;
        let health = Health::default();
        let admin_stop = CancellationToken::new();
        let admin = admin::serve(
            args.admin.admin_address,
            registry.clone(),
            health.clone(),
            admin_stop.clone(),
        )
        .await?;
        let le = &args.leader_election;
        let (leading, elector) = if le.leader_elect {
            le.validate()?;
            let namespace = own_namespace(le.lease_namespace.as_deref());
            let name = le
                .lease_name
                .clone()
                .unwrap_or_else(|| component.to_owned());
            let identity = default_identity();
            tracing::info!(lease = %format!("{namespace}/{name}"), %identity, "leader election enabled");
            health.set_leadership(Leadership::Standby);
            let store = KubeLeaseStore::new(client.clone(), &namespace, &name);
            let elector = LeaderElector::new(store, identity, Timing::from(le));
            let (tx, rx) = watch::channel(false);
            let task = tokio::spawn(elector.run(shutdown.clone(), tx));
            (rx, Some(task))
        } else {
            let (_tx, rx) = watch::channel(true);
            // Keep the value `true` readable after the sender is gone.
            (rx, None)
        };
        Ok(Self {
            component,
            client,
            registry,
            health,
            shutdown,
            admin_address: admin.local_addr,
            leading,
            elector,
            admin,
            admin_stop,
        })
    }

    /// The client, readiness state and an Event recorder for the controllers.
    pub fn deps(&self) -> Deps {
        Deps {
            client: self.client.clone(),
            health: self.health.clone(),
            events: EventRecorder::new(self.client.clone(), self.component),
        }
    }

    /// Leadership as a watch channel: `true` while this replica leads (always `true` with
    /// leader election off). For components that serve on every replica but act only
    /// when leading.
    pub fn leading(&self) -> watch::Receiver<bool> {
        self.leading.clone()
    }

    /// Runs `controllers` while this replica leads. The future gets a token that is
    /// cancelled when leadership is lost or the process shuts down; it must return soon
    /// after. On shutdown the lease is released and the admin server stopped last.
    pub async fn run<F, Fut>(mut self, mut controllers: F) -> Result<()>
    where
        F: FnMut(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let elected = self.elector.is_some();
        loop {
            // Wait to lead (or for shutdown).
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                res = self.leading.wait_for(|l| *l) => {
                    if res.is_err() && elected {
                        break;
                    }
                }
            }
            if self.shutdown.is_cancelled() {
                break;
            }
            if elected {
                self.health.set_leadership(Leadership::Leader);
            }
            let stop = self.shutdown.child_token();
            let mut running = tokio::spawn(controllers(stop.clone()));
            let lost = tokio::select! {
                () = self.shutdown.cancelled() => false,
                _ = self.leading.wait_for(|l| !*l), if elected => true,
                res = &mut running => {
                    if let Err(error) = res {
                        tracing::error!(%error, "controllers panicked");
                    }
                    tracing::warn!("controllers stopped on their own; shutting down");
                    self.shutdown.cancel();
                    break;
                }
            };
            stop.cancel();
            if let Err(error) = running.await {
                tracing::error!(%error, "controllers panicked while stopping");
            }
            if lost {
                tracing::warn!("lost leadership: controllers stopped, standing by");
                self.health.set_leadership(Leadership::Standby);
                continue;
            }
            break;
        }
        tracing::info!(component = self.component, "shutting down");
        self.shutdown.cancel();
        if let Some(elector) = self.elector.take() {
            // The elector releases the lease when it sees the shutdown.
            let _ = elector.await;
        }
        self.admin_stop.cancel();
        let _ = self.admin.task.await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_namespace_prefers_the_flag_then_the_pod_namespace() {
        let pod = || Some("ops".to_owned());
        assert_eq!(namespace_or_fallback(Some("team"), pod()), "team");
        assert_eq!(namespace_or_fallback(None, pod()), "ops");
        assert_eq!(namespace_or_fallback(None, None), "kube-system");
        assert_eq!(
            namespace_or_fallback(None, Some(String::new())),
            "kube-system"
        );
    }

    #[test]
    fn runtimes_follow_the_flags_then_the_component_defaults() {
        let one_thread = RuntimeDefaults {
            threads: Some(1),
            coalesce_wakeups: Duration::from_millis(2),
        };
        let flavor = |args: &RuntimeArgs, defaults| {
            build_runtime(args, defaults)
                .expect("runtime")
                .handle()
                .runtime_flavor()
        };
        use tokio::runtime::RuntimeFlavor::{CurrentThread, MultiThread};
        assert_eq!(flavor(&RuntimeArgs::default(), one_thread), CurrentThread);
        assert_eq!(
            flavor(&RuntimeArgs::default(), RuntimeDefaults::MULTI_THREAD),
            MultiThread
        );
        let two = RuntimeArgs {
            threads: Some(2),
            coalesce_wakeups: Some(Duration::ZERO),
        };
        assert_eq!(flavor(&two, one_thread), MultiThread);
        let out = block_on(&RuntimeArgs::default(), one_thread, async { 7 }).expect("ran");
        assert_eq!(out, 7);
    }
}
