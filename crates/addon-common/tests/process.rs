//! The process harness end to end against a mocked Lease API: controllers run only while
//! this replica leads, readiness reports leadership, and shutdown releases the lease.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use addon_common::{
    cli::{CommonArgs, LeaderElectionArgs},
    runtime::Process,
};
use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::get,
};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct LeaseApi {
    lease: Option<Value>,
    rv: u64,
}

type Shared = Arc<Mutex<LeaseApi>>;

fn status(code: u16, reason: &str) -> Response {
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code});
    (StatusCode::from_u16(code).expect("code"), Json(body)).into_response()
}

async fn get_lease(
    State(s): State<Shared>,
    Path((_ns, _name)): Path<(String, String)>,
) -> Response {
    match s.lock().expect("lock").lease.clone() {
        Some(lease) => Json(lease).into_response(),
        None => status(404, "NotFound"),
    }
}

async fn create_lease(
    State(s): State<Shared>,
    Path(ns): Path<String>,
    Json(mut lease): Json<Value>,
) -> Response {
    let mut api = s.lock().expect("lock");
    if api.lease.is_some() {
        return status(409, "AlreadyExists");
    }
    api.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(api.rv.to_string());
    lease["metadata"]["namespace"] = json!(ns);
    api.lease = Some(lease.clone());
    (StatusCode::CREATED, Json(lease)).into_response()
}

async fn replace_lease(
    State(s): State<Shared>,
    Path((_ns, _name)): Path<(String, String)>,
    Json(mut lease): Json<Value>,
) -> Response {
    let mut api = s.lock().expect("lock");
    let current = api
        .lease
        .as_ref()
        .map(|l| l["metadata"]["resourceVersion"].clone());
    if current != Some(lease["metadata"]["resourceVersion"].clone()) {
        return status(409, "Conflict");
    }
    api.rv += 1;
    lease["metadata"]["resourceVersion"] = json!(api.rv.to_string());
    api.lease = Some(lease.clone());
    Json(lease).into_response()
}

fn mock_client(shared: &Shared) -> kube::Client {
    let router = Router::new()
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
            axum::routing::post(create_lease),
        )
        .route(
            "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
            get(get_lease).put(replace_lease),
        )
        .with_state(shared.clone());
    kube::Client::new(router, "default")
}

fn args(leader_elect: bool) -> CommonArgs {
    let mut args = CommonArgs::default();
    args.admin.admin_address = "127.0.0.1:0".parse().expect("addr");
    args.leader_election = LeaderElectionArgs {
        leader_elect,
        lease_name: Some("demo".into()),
        lease_namespace: Some("kube-system".into()),
        lease_duration: Duration::from_secs(3),
        renew_deadline: Duration::from_secs(2),
        retry_period: Duration::from_millis(50),
    };
    args
}

fn holder(shared: &Shared) -> Option<String> {
    shared
        .lock()
        .expect("lock")
        .lease
        .as_ref()
        .and_then(|l| l["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

async fn readyz(addr: std::net::SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut out = String::new();
    stream.read_to_string(&mut out).await.expect("read");
    out
}

/// Starts `Process::run` with a controller that records when it runs.
async fn start(
    shared: &Shared,
    leader_elect: bool,
) -> (
    CancellationToken,
    Arc<Notify>,
    Arc<AtomicBool>,
    std::net::SocketAddr,
    tokio::task::JoinHandle<addon_common::Result<()>>,
) {
    let shutdown = CancellationToken::new();
    let process = Process::start_with_client(
        "demo",
        &args(leader_elect),
        mock_client(shared),
        shutdown.clone(),
    )
    .await
    .expect("process starts");
    let addr = process.admin_address;
    let started = Arc::new(Notify::new());
    let stopped = Arc::new(AtomicBool::new(false));
    let (s, st) = (started.clone(), stopped.clone());
    let task = tokio::spawn(process.run(move |stop| {
        let (s, st) = (s.clone(), st.clone());
        async move {
            s.notify_one();
            stop.cancelled().await;
            st.store(true, Ordering::SeqCst);
        }
    }));
    (shutdown, started, stopped, addr, task)
}

#[tokio::test]
async fn controllers_run_while_leading_and_shutdown_releases_the_lease() {
    let shared: Shared = Arc::default();
    let (shutdown, started, stopped, addr, task) = start(&shared, true).await;
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("controllers start once the lease is acquired");
    assert!(holder(&shared).is_some(), "lease created with us as holder");
    let body = readyz(addr).await;
    assert!(body.contains("leader-election: leader"), "{body}");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("run returns after shutdown")
        .expect("no panic")
        .expect("clean exit");
    assert!(
        stopped.load(Ordering::SeqCst),
        "controllers saw the stop token"
    );
    assert_eq!(holder(&shared), None, "lease released on shutdown");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "admin server stopped"
    );
}

#[tokio::test]
async fn standby_waits_for_a_held_lease_then_takes_over_when_released() {
    let shared: Shared = Arc::default();
    {
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        let mut api = shared.lock().expect("lock");
        api.rv = 1;
        api.lease = Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "demo", "namespace": "kube-system", "resourceVersion": "1"},
            "spec": {"holderIdentity": "other-replica", "leaseDurationSeconds": 3600, "renewTime": now}
        }));
    }
    let (shutdown, started, _stopped, addr, task) = start(&shared, true).await;
    let waited = tokio::time::timeout(Duration::from_millis(600), started.notified()).await;
    assert!(
        waited.is_err(),
        "controllers must not run while another replica holds the lease"
    );
    let body = readyz(addr).await;
    assert!(body.contains("leader-election: standby"), "{body}");

    // The other replica releases (as on its shutdown): we take over without waiting for expiry.
    {
        let mut api = shared.lock().expect("lock");
        let lease = api.lease.as_mut().expect("lease");
        lease["spec"]["holderIdentity"] = Value::Null;
        lease["spec"]["leaseDurationSeconds"] = json!(1);
        lease["metadata"]["resourceVersion"] = json!("2");
        api.rv = 2;
    }
    tokio::time::timeout(Duration::from_secs(10), started.notified())
        .await
        .expect("takes over a released lease");
    assert_ne!(holder(&shared).as_deref(), Some("other-replica"));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("ok");
}

#[tokio::test]
async fn without_leader_election_controllers_start_at_once() {
    let shared: Shared = Arc::default();
    let (shutdown, started, stopped, addr, task) = start(&shared, false).await;
    tokio::time::timeout(Duration::from_secs(5), started.notified())
        .await
        .expect("starts");
    assert!(readyz(addr).await.contains("leader-election: disabled"));
    assert!(
        shared.lock().expect("lock").lease.is_none(),
        "no lease written"
    );
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic")
        .expect("ok");
    assert!(stopped.load(Ordering::SeqCst));
}
