//! Benchmark of the emulated API server: write throughput with 10k pods stored, list latency, and
//! fan-out to many concurrent watchers. Run with
//! `cargo run --release -p e2e --bin apiserver-bench -- [--pods 10000] [--watchers 200]`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use clap::Parser;
use e2e::{ApiServer, Config};
use http::Request;
use http_body_util::BodyExt;
use serde_json::json;
use tower::ServiceExt;

#[derive(Parser, Debug)]
struct Args {
    /// Pods stored before measuring.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Writes per measurement.
    #[arg(long, default_value_t = 20_000)]
    writes: usize,
    /// Concurrent watchers for the fan-out measurement.
    #[arg(long, default_value_t = 200)]
    watchers: usize,
    /// Skip the loopback TCP (plain HTTP) measurement with kube::Client.
    #[arg(long)]
    no_tcp: bool,
}

fn pod(i: usize) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pod-{i}"), "namespace": "default", "labels": {"app": format!("a{}", i % 50)}},
        "spec": {"nodeName": format!("node-{}", i % 100), "containers": [{"name": "c", "image": "registry.example/app:1", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}})
}

async fn send(router: &axum::Router, method: &str, uri: &str, ct: &str, body: Vec<u8>) -> u16 {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", ct)
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    status
}

async fn parallel_writes<F>(
    router: &axum::Router,
    writers: usize,
    total: usize,
    make: F,
) -> (f64, u64)
where
    F: Fn(usize) -> (String, String, String, Vec<u8>) + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let failures = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let router = router.clone();
        let make = make.clone();
        let failures = failures.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < total {
                let (m, uri, ct, body) = make(i);
                let s = send(&router, &m, &uri, &ct, body).await;
                if !(200..300).contains(&s) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                i += writers;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    (total as f64 / secs, failures.load(Ordering::Relaxed))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let srv = ApiServer::new(Config {
        history_limit: 50_000,
        ..Default::default()
    });
    let router = srv.router();
    println!(
        "apiserver-bench: {} pods, {} writers, {} writes, {} watchers, {} worker threads",
        args.pods,
        args.writers,
        args.writes,
        args.watchers,
        tokio::runtime::Handle::current().metrics().num_workers()
    );

    // 1. seed pods (creates)
    let (rate, fail) = parallel_writes(&router, args.writers, args.pods, |i| {
        (
            "POST".into(),
            "/api/v1/namespaces/default/pods".into(),
            "application/json".into(),
            serde_json::to_vec(&pod(i)).unwrap_or_default(),
        )
    })
    .await;
    println!("create pods:                  {rate:>9.0} writes/s  (failures {fail})");

    // 2. status patches with 10k pods stored
    let n = args.pods;
    let (rate, fail) = parallel_writes(&router, args.writers, args.writes, move |i| {
        let body = json!({"status": {"phase": "Running", "podIP": format!("10.0.{}.{}", (i / 250) % 250, i % 250)}});
        ("PATCH".into(), format!("/api/v1/namespaces/default/pods/pod-{}/status", i % n), "application/merge-patch+json".into(), serde_json::to_vec(&body).unwrap_or_default())
    })
    .await;
    println!("merge-patch pods/status:      {rate:>9.0} writes/s  (failures {fail})");

    // 3. list latency
    let start = Instant::now();
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/pods")
        .body(Body::empty())?;
    let resp = router.clone().oneshot(req).await?;
    let bytes = resp.into_body().collect().await?.to_bytes();
    println!(
        "list {} pods:                {:>9.1} ms  ({} MB)",
        n,
        start.elapsed().as_secs_f64() * 1000.0,
        bytes.len() / 1_000_000
    );
    let start = Instant::now();
    let req = Request::builder()
        .uri("/api/v1/namespaces/default/pods?labelSelector=app%3Da7")
        .body(Body::empty())?;
    let resp = router.clone().oneshot(req).await?;
    let _ = resp.into_body().collect().await?;
    println!(
        "list with label selector:     {:>9.1} ms",
        start.elapsed().as_secs_f64() * 1000.0
    );

    // 4. watchers: each watches all pods from the current resourceVersion; half use a label selector
    let rv = srv.store().current_rv();
    let received = Arc::new(AtomicU64::new(0));
    let mut watch_tasks = Vec::new();
    for w in 0..args.watchers {
        let router = router.clone();
        let received = received.clone();
        let uri = if w % 2 == 0 {
            format!("/api/v1/pods?watch=true&resourceVersion={rv}&allowWatchBookmarks=true")
        } else {
            format!(
                "/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&labelSelector=app%3Da{}",
                w % 50
            )
        };
        watch_tasks.push(tokio::spawn(async move {
            let req = Request::builder()
                .uri(uri)
                .body(Body::empty())
                .expect("request");
            let resp = router.oneshot(req).await.expect("infallible");
            let mut body = resp.into_body();
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    let lines = data.iter().filter(|b| **b == b'\n').count() as u64;
                    received.fetch_add(lines, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let writes = args.writes / 2;
    let full_watchers = args.watchers.div_ceil(2) as u64;
    let selective_watchers = (args.watchers / 2) as u64;
    // each write is seen by every full watcher and by the selective watchers whose selector matches (1 in 50 apps)
    let start = Instant::now();
    let (rate, fail) = parallel_writes(&router, args.writers, writes, move |i| {
        let body = json!({"metadata": {"annotations": {"bench": i.to_string()}}});
        (
            "PATCH".into(),
            format!("/api/v1/namespaces/default/pods/pod-{}", i % n),
            "application/merge-patch+json".into(),
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    })
    .await;
    println!(
        "merge-patch pods with {} watchers: {rate:>9.0} writes/s  (failures {fail})",
        args.watchers
    );
    let expected_min = writes as u64 * full_watchers;
    let deadline = Instant::now() + Duration::from_secs(120);
    while received.load(Ordering::Relaxed) < expected_min && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let got = received.load(Ordering::Relaxed);
    println!(
        "watch fan-out: {} events delivered to {} watchers ({} full, {} selective) in {:.2}s = {:.0} events/s",
        got,
        args.watchers,
        full_watchers,
        selective_watchers,
        secs,
        got as f64 / secs
    );
    for t in watch_tasks {
        t.abort();
    }

    // 5. over TCP with kube::Client (what a controller binary sees)
    if !args.no_tcp {
        let running = srv.serve_tcp("127.0.0.1:0".parse()?, false).await?;
        let client = running.client().await?;
        let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
            kube::Api::namespaced(client, "default");
        let total = 4000usize;
        let start = Instant::now();
        let mut tasks = Vec::new();
        let writers = args.writers;
        for w in 0..writers {
            let api = api.clone();
            tasks.push(tokio::spawn(async move {
                let mut i = w;
                while i < total {
                    let cm: k8s_openapi::api::core::v1::ConfigMap = serde_json::from_value(
                        json!({"metadata": {"name": format!("cm-{i}")}, "data": {"k": "v"}}),
                    )
                    .expect("cm");
                    let _ = api.create(&Default::default(), &cm).await;
                    i += writers;
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        println!(
            "kube::Client creates over TCP: {:>9.0} writes/s",
            total as f64 / start.elapsed().as_secs_f64()
        );
    }
    println!("stored objects: {}", srv.store().len());
    Ok(())
}
