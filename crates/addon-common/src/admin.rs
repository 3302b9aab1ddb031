//! The admin HTTP server every binary runs: `/metrics`, `/healthz`, `/readyz`.
//!
//! `/readyz` answers 200 only when every registered readiness check passes (for a
//! controller: its caches have synced). The body lists each check and, when leader
//! election is on, whether this replica leads, in the style of kube-apiserver's
//! `/readyz?verbose`.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{Arc, RwLock},
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use prometheus::Registry;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use crate::{Error, Result, metrics::encode_text};

/// Leadership as reported by `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    /// Leader election is off: this replica always acts.
    Disabled,
    /// This replica holds the lease.
    Leader,
    /// Another replica holds the lease; this one waits.
    Standby,
}

#[derive(Debug)]
struct HealthState {
    checks: BTreeMap<String, (bool, String)>,
    leadership: Leadership,
}

/// Shared readiness state; cheap to clone.
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<RwLock<HealthState>>,
}

impl Default for Health {
    fn default() -> Self {
        Self {
            inner: Arc::new(RwLock::new(HealthState {
                checks: BTreeMap::new(),
                leadership: Leadership::Disabled,
            })),
        }
    }
}

impl Health {
    /// Sets a named readiness check; `/readyz` fails while any check is false.
    pub fn set(&self, check: &str, ok: bool, detail: impl Into<String>) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        state.checks.insert(check.to_owned(), (ok, detail.into()));
    }

    /// Removes a named check.
    pub fn remove(&self, check: &str) {
        let mut state = self.inner.write().unwrap_or_else(|p| p.into_inner());
        state.checks.remove(check);
    }

    /// Records this replica's leadership for `/readyz`.
    pub fn set_leadership(&self, leadership: Leadership) {
        self.inner
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .leadership = leadership;
    }

    /// Current leadership.
    pub fn leadership(&self) -> Leadership {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .leadership
    }

    /// True when every readiness check passes.
    pub fn is_ready(&self) -> bool {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        state.checks.values().all(|(ok, _)| *ok)
    }

    /// The verbose `/readyz` body.
    pub fn report(&self) -> String {
        let state = self.inner.read().unwrap_or_else(|p| p.into_inner());
        let mut out = String::new();
        for (name, (ok, detail)) in &state.checks {
            let mark = if *ok { "+" } else { "-" };
            let verdict = if *ok { "ok" } else { "failed" };
            if detail.is_empty() {
                out.push_str(&format!("[{mark}]{name} {verdict}\n"));
            } else {
                out.push_str(&format!("[{mark}]{name} {verdict}: {detail}\n"));
            }
        }
        let leader = match state.leadership {
            Leadership::Disabled => "disabled",
            Leadership::Leader => "leader",
            Leadership::Standby => "standby",
        };
        out.push_str(&format!("leader-election: {leader}\n"));
        let all_ok = state.checks.values().all(|(ok, _)| *ok);
        out.push_str(if all_ok {
            "readyz check passed\n"
        } else {
            "readyz check failed\n"
        });
        out
    }
}

#[derive(Clone)]
struct AdminState {
    registry: Registry,
    health: Health,
}

/// The admin router, for embedding or testing without a socket.
pub fn router(registry: Registry, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/livez", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(AdminState { registry, health })
}

async fn metrics(State(state): State<AdminState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        encode_text(&state.registry),
    )
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(state): State<AdminState>) -> impl IntoResponse {
    let code = if state.health.is_ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, state.health.report())
}

/// A running admin server.
pub struct AdminServer {
    /// The address actually bound (useful with port 0).
    pub local_addr: SocketAddr,
    /// Completes when the server has stopped.
    pub task: JoinHandle<()>,
}

/// Binds `addr` and serves the admin router until `shutdown` is cancelled.
pub async fn serve(
    addr: SocketAddr,
    registry: Registry,
    health: Health,
    shutdown: CancellationToken,
) -> Result<AdminServer> {
    let listener = TcpListener::bind(addr).await.map_err(|source| Error::Io {
        what: "admin server bind",
        address: addr.to_string(),
        source,
    })?;
    let local_addr = listener.local_addr().map_err(|source| Error::Io {
        what: "admin server address",
        address: addr.to_string(),
        source,
    })?;
    let app = router(registry, health);
    let task = tokio::spawn(async move {
        let server = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await });
        if let Err(error) = server.await {
            tracing::error!(%error, "admin server failed");
        }
    });
    tracing::info!(address = %local_addr, "admin server listening (/metrics, /healthz, /readyz)");
    Ok(AdminServer { local_addr, task })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check() {
        let h = Health::default();
        assert!(h.is_ready(), "no checks: ready");
        h.set("caches", false, "waiting for tapps");
        h.set("webhook", true, "");
        assert!(!h.is_ready());
        let report = h.report();
        assert!(
            report.contains("[-]caches failed: waiting for tapps"),
            "{report}"
        );
        assert!(report.contains("[+]webhook ok"), "{report}");
        assert!(report.contains("readyz check failed"), "{report}");
        h.set("caches", true, "synced");
        assert!(h.is_ready());
        h.set_leadership(Leadership::Standby);
        assert!(h.report().contains("leader-election: standby"));
    }
}
