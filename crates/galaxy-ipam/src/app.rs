//! Wiring: the servers every replica runs, and what the leader runs.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use addon_common::{admin::Health, events::EventRecorder};
use kube::Client;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    config::PluginConf,
    controllers,
    metrics::Metrics,
    plugin::{Options, Plugin, Slot},
    server::{ServerState, api_router, extender_router},
};

/// Readiness check that passes only on the active (leading, recovered) replica, so a Service
/// in front of several replicas sends the scheduler to the leader.
pub const READY_CHECK: &str = "galaxy-ipam-active";

/// A running HTTP server.
pub struct Server {
    /// The bound address.
    pub local_addr: SocketAddr,
    /// Completes when the server stops.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves `router` until `shutdown`.
pub async fn serve(
    what: &str,
    addr: SocketAddr,
    router: axum::Router,
    shutdown: CancellationToken,
) -> Result<Server> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
        what: format!("{what} bind {addr}"),
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Io {
        what: format!("{what} address"),
        source,
    })?;
    let name = what.to_owned();
    // Small request/response exchanges on kept-alive connections: as Go's net/http (the
    // original and kube-scheduler), don't let Nagle's algorithm delay the response.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp: &mut tokio::net::TcpStream| {
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY");
        }
    });
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, router)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(%error, server = name, "server failed");
        }
    });
    tracing::info!(address = %local_addr, server = what, "listening");
    Ok(Server { local_addr, task })
}

/// Starts the extender and the REST API servers.
pub async fn start_servers(
    extender_addr: SocketAddr,
    api_addr: SocketAddr,
    state: ServerState,
    shutdown: CancellationToken,
) -> Result<(Server, Server)> {
    let ext = serve(
        "extender",
        extender_addr,
        extender_router(state.clone()),
        shutdown.clone(),
    )
    .await?;
    let api = serve("api", api_addr, api_router(state), shutdown).await?;
    Ok((ext, api))
}

/// Builds the plugin and recovers its state (retrying until it succeeds or `stop`).
pub async fn activate(
    client: &Client,
    conf: &PluginConf,
    metrics: &Metrics,
    events: Option<EventRecorder>,
    stop: &CancellationToken,
) -> Option<Arc<Plugin>> {
    let mut delay = Duration::from_millis(500);
    loop {
        let attempt = async {
            let config = controllers::load_config(client, conf).await?;
            let plugin = Plugin::new(
                client.clone(),
                config,
                metrics.clone(),
                events.clone(),
                Options::default(),
            );
            controllers::recover(&plugin).await?;
            Ok::<_, Error>(Arc::new(plugin))
        };
        tokio::select! {
            () = stop.cancelled() => return None,
            res = attempt => match res {
                Ok(p) => return Some(p),
                Err(error) => {
                    tracing::error!(%error, "cannot start the IPAM; retrying");
                    metrics.errors.with_label_values(&[error.metric_label()]).inc();
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return None,
            () = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// What the leader runs: recover, publish the plugin to the servers, run the watches and the
/// resync until `stop`, then withdraw the plugin.
pub async fn lead(
    client: Client,
    conf: PluginConf,
    slot: Slot,
    metrics: Metrics,
    health: Option<Health>,
    events: Option<EventRecorder>,
    stop: CancellationToken,
) {
    let Some(plugin) = activate(&client, &conf, &metrics, events, &stop).await else {
        return;
    };
    slot.set(Some(plugin.clone()));
    if let Some(h) = &health {
        h.set(READY_CHECK, true, "leading");
    }
    tracing::info!("IPAM active");
    controllers::run(plugin, conf, stop).await;
    slot.set(None);
    if let Some(h) = &health {
        h.set(READY_CHECK, false, "standby");
    }
    tracing::info!("IPAM inactive");
}
