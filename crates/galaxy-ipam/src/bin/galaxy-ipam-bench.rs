//! Decision-time benchmark of galaxy-ipam: 10k IPs in the pool, 5k allocated.
//!
//! 1. `decision`: the in-memory work of filter + bind (key lookup, subnets with free IPs,
//!    allocation in the node's subnet) with a release to keep 5k allocated: p50/p99 and
//!    allocations/s, on 1 and 2 threads.
//! 2. `plugin`: the whole `Plugin::filter` + `Plugin::bind` against an in-process API stub
//!    that answers at once (JSON, client and HTTP plumbing included; no network).
//!
//! `cargo run --release -p galaxy-ipam --bin galaxy-ipam-bench [-- --iterations N]`

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use addon_common::api::galaxy::ReleasePolicy;
use axum::{
    Router,
    body::Bytes,
    http::{Method, StatusCode, Uri},
    response::{IntoResponse, Response},
};
use galaxy_ipam::{
    allocator::{Allocation, Ipam, Target},
    config::{Net, PoolConfig},
    extender::Nodes,
    metrics::Metrics,
    plugin::{Options, Plugin},
};
use serde_json::{Value, json};

const POOL: &str = r#"[{"nodeSubnets":["10.1.0.0/16"],"ips":["10.0.0.10~10.0.39.25"],"subnet":"10.0.0.0/16","gateway":"10.0.0.1"}]"#;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort_unstable();
    let n = samples.len();
    println!(
        "{name:<34} n={n:<7} p50={:>9.1?} p99={:>9.1?} max={:>9.1?} throughput={:>10.0}/s",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        samples.last().copied().unwrap_or_default(),
        n as f64 / wall.as_secs_f64()
    );
}

fn alloc(key: String) -> Allocation {
    Allocation {
        key,
        policy: ReleasePolicy::Default,
        node: "node-1".into(),
        uid: "uid".into(),
        ..Allocation::default()
    }
}

fn prepared() -> (Ipam, Net) {
    let config = PoolConfig::parse(POOL).unwrap_or_else(|e| panic!("pool: {e}"));
    assert_eq!(config.size(), 10_000);
    let ipam = Ipam::new(config);
    let subnet = Net::parse("10.1.0.0/16").unwrap_or_else(|e| panic!("{e}"));
    for i in 0..5_000 {
        ipam.allocate(&Target::default(), alloc(format!("sts_bench_app_app-{i}")));
    }
    (ipam, subnet)
}

/// One filter+bind decision for a new pod, then the release of an old pod's IP.
fn decide(ipam: &Ipam, subnet: Net, pod: usize) -> Duration {
    let key = format!("dp_bench_web_web-{pod}");
    let start = Instant::now();
    // filter: IPs held by the key, else the subnets with free IPs
    let held = ipam.by_key(&key);
    let allowed = if held.is_empty() {
        ipam.subnets_with_free(None)
    } else {
        Default::default()
    };
    assert!(allowed.contains(&subnet));
    // bind: reuse or allocate in the node's subnet
    let target = Target {
        node_subnet: Some(subnet),
        ranges: None,
    };
    let ip = ipam.allocate(&target, alloc(key.clone()));
    let took = start.elapsed();
    assert!(ip.is_some(), "pool exhausted");
    // keep 5k allocated: the previous pod goes
    if pod > 0 {
        let prev = format!("dp_bench_web_web-{}", pod - 1);
        for (ip, _) in ipam.by_key(&prev) {
            ipam.release(ip, &prev);
        }
    }
    took
}

fn bench_decisions(iterations: usize) {
    let (ipam, subnet) = prepared();
    // warm up
    for i in 0..1_000 {
        decide(&ipam, subnet, i);
    }
    let start = Instant::now();
    let samples: Vec<Duration> = (1_000..1_000 + iterations)
        .map(|i| decide(&ipam, subnet, i))
        .collect();
    report("decision filter+bind, 1 thread", samples, start.elapsed());

    let ipam = Arc::new(prepared().0);
    let start = Instant::now();
    let per_thread = iterations / 2;
    let samples: Vec<Duration> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|t| {
                let ipam = ipam.clone();
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| decide(&ipam, subnet, t * 10_000_000 + i))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    report("decision filter+bind, 2 threads", samples, start.elapsed());
    if let Err(e) = ipam.check_invariants() {
        panic!("invariants: {e}");
    }
}

fn pod_json(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "bench", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"tke.cloud.tencent.com/eni-ip": "1"}}}]}})
}

async fn stub(method: Method, uri: Uri, body: Bytes) -> Response {
    let path = uri.path();
    if path.ends_with("/binding") {
        return (
            StatusCode::CREATED,
            axum::Json(json!({"kind": "Status", "status": "Success"})),
        )
            .into_response();
    }
    if method == Method::GET && path.starts_with("/api/v1/namespaces/bench/pods/") {
        let name = path.rsplit('/').next().unwrap_or_default();
        return axum::Json(pod_json(name)).into_response();
    }
    if method == Method::GET && path.starts_with("/api/v1/nodes/") {
        return axum::Json(json!({"metadata": {"name": "node-1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.1.0.5"}]}}))
        .into_response();
    }
    if method == Method::POST || method == Method::PATCH {
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        return (StatusCode::CREATED, axum::Json(v)).into_response();
    }
    if method == Method::DELETE {
        return axum::Json(json!({"kind": "Status", "status": "Success"})).into_response();
    }
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"kind": "Status", "code": 404, "reason": "NotFound"})),
    )
        .into_response()
}

async fn bench_plugin(iterations: usize) {
    let client = kube::Client::new(Router::new().fallback(stub), "default");
    let config = PoolConfig::parse(POOL).unwrap_or_else(|e| panic!("pool: {e}"));
    let plugin = Plugin::new(
        client,
        config,
        Metrics::unregistered(),
        None,
        Options::default(),
    );
    for i in 0..5_000 {
        plugin
            .ipam
            .allocate(&Target::default(), alloc(format!("sts_bench_app_app-{i}")));
    }
    let nodes = Nodes::Names(vec!["node-1".into()]);
    plugin.set_node_ip("node-1", galaxy_ipam::allocator::parse_ip("10.1.0.5"));
    let mut samples = Vec::with_capacity(iterations);
    let start = Instant::now();
    for i in 0..iterations {
        let name = format!("web-{i}");
        let pod: k8s_openapi::api::core::v1::Pod =
            serde_json::from_value(pod_json(&name)).unwrap_or_else(|e| panic!("{e}"));
        let t = Instant::now();
        let out = plugin
            .filter(&pod, &nodes)
            .await
            .unwrap_or_else(|e| panic!("filter: {e}"));
        assert!(out.passed.contains("node-1"));
        plugin
            .bind("bench", &name, "", "node-1")
            .await
            .unwrap_or_else(|e| panic!("bind: {e}"));
        samples.push(t.elapsed());
        // keep 5k allocated
        let key = format!("NULL_bench_NULL_{name}");
        for (ip, _) in plugin.ipam.by_key(&key) {
            plugin.ipam.release(ip, &key);
        }
    }
    report(
        "plugin filter+bind, in-process API",
        samples,
        start.elapsed(),
    );
}

fn main() {
    let iterations = std::env::args()
        .skip_while(|a| a != "--iterations")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(20_000usize);
    println!("galaxy-ipam-bench: 10000 IPs in the pool, 5000 allocated, {iterations} pods");
    bench_decisions(iterations);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    rt.block_on(bench_plugin(iterations.min(5_000)));
}
