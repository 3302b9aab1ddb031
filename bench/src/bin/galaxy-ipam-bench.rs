//! Decision-time benchmark of galaxy-ipam: 10k IPs in the pool, 5k allocated.
//!
//! 1. `decision`: the in-memory work of filter + bind (key lookup, subnets with free IPs,
//!    allocation in the node's subnet) with a release to keep 5k allocated: p50/p99 and
//!    allocations/s, on 1 and 2 threads.
//! 2. `plugin`: the whole `Plugin::filter` + `Plugin::bind` against an in-process API stub
//!    that answers at once (JSON, client and HTTP plumbing included; no network).
//!
//! 3. `cluster` (`--cluster`): scheduling throughput of 1,000 pods through the simulated
//!    cluster's scheduler (the e2e crate's emulated API server and kube-scheduler in this
//!    process, calling galaxy-ipam's extender over loopback HTTP), compared with the same pods
//!    without the resource (no extender involved). In-process rather than through the
//!    `sandbox` binary: it reads the scheduler's own counters (`SchedulerStats`).
//!
//! `hack/bench.sh galaxy-ipam-bench [--iterations N]`
//! `hack/bench.sh galaxy-ipam-bench --cluster [--pods N]`
//! (or `cargo run --release -p addon-bench --bin galaxy-ipam-bench -- ...`)

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use addon_common::api::galaxy::ReleasePolicy;
use addon_common::{k8s_openapi, kube};
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
    addon_bench::percentile(sorted, p).unwrap_or_default()
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

fn arg(name: &str) -> Option<usize> {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|n| n.parse().ok())
}

fn main() {
    if std::env::args().any(|a| a == "--cluster") {
        let pods = arg("--pods").unwrap_or(1_000);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        rt.block_on(cluster::run(pods));
        return;
    }
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

/// Scheduling throughput through the simulated cluster (e2e crate).
mod cluster {
    use std::{
        collections::HashMap,
        time::{Duration, Instant},
    };

    use addon_common::{k8s_openapi, kube};
    use e2e::cluster::{
        Cidr, ClusterConfig, ControllersConfig, ExtenderConfig, NodeSpec, SchedulerConfig,
        SimCluster,
        scheduler::{SchedulerStats, extender::ManagedResource},
    };
    use futures::StreamExt;
    use galaxy_ipam::{
        config::PluginConf, controller, metrics::Metrics, plugin::Slot, server, server::ServerState,
    };
    use k8s_openapi::api::{
        apps::v1::Deployment,
        core::v1::{ConfigMap, Pod},
    };
    use kube::{
        Api, Client, ResourceExt,
        api::{DeleteParams, ListParams, PostParams},
        runtime::{WatchStreamExt, watcher},
    };
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    const ENI_IP: &str = "tke.cloud.tencent.com/eni-ip";
    /// 1,021 IPs; nodes in the seed's node subnet.
    const POOL: &str = r#"[{"routableSubnet":"172.21.64.0/20","ips":["192.168.64.2~192.168.67.254"],"subnet":"192.168.64.0/22","gateway":"192.168.64.1"}]"#;
    const NODES: usize = 10;

    fn must<T, E: std::fmt::Display>(r: Result<T, E>, what: &str) -> T {
        r.unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// CPU time of this process (user + system), from `/proc/self/stat` (clock ticks of 10 ms).
    fn cpu_time() -> Duration {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        // fields after the command: state is [0], utime [11], stime [12]
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|i| fields.get(*i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        Duration::from_millis(ticks * 10)
    }

    fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    }

    async fn deployment(client: &Client, name: &str, replicas: usize, eni: bool) {
        let resources = if eni {
            json!({"requests": {ENI_IP: "1"}, "limits": {ENI_IP: "1"}})
        } else {
            json!({})
        };
        let d: Deployment = must(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                    "template": {"metadata": {"labels": {"app": name}},
                        "spec": {"terminationGracePeriodSeconds": 0,
                            "containers": [{"name": "c", "image": "nginx", "resources": resources}]}}}
            })),
            "deployment",
        );
        must(
            Api::<Deployment>::namespaced(client.clone(), "default")
                .create(&PostParams::default(), &d)
                .await,
            "create deployment",
        );
    }

    /// What one run measured.
    struct Phase {
        bound: Duration,
        running: Duration,
        /// Per pod: first seen (created) → bound.
        latency: Vec<Duration>,
        cpu: Duration,
    }

    /// Creates `replicas` pods through a Deployment and follows them with a watch (a list
    /// per poll would cost the API server more than the scheduling being measured).
    async fn measure(client: &Client, name: &str, replicas: usize, eni: bool) -> Phase {
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        let mut events = watcher(
            pods,
            watcher::Config::default().labels(&format!("app={name}")),
        )
        .default_backoff()
        .boxed();
        // the watch is established before anything is created
        loop {
            match events.next().await {
                Some(Ok(watcher::Event::InitDone)) => break,
                Some(_) => {}
                None => panic!("pod watch ended"),
            }
        }
        let cpu = cpu_time();
        let start = Instant::now();
        deployment(client, name, replicas, eni).await;
        let mut seen: HashMap<String, Instant> = HashMap::new();
        let mut bound: HashMap<String, Duration> = HashMap::new();
        let mut last_bound = start;
        let mut running = 0usize;
        let mut is_running: HashMap<String, bool> = HashMap::new();
        while running < replicas {
            let ev = match tokio::time::timeout(Duration::from_secs(600), events.next()).await {
                Ok(Some(ev)) => ev,
                _ => panic!(
                    "{name}: {} bound, {running} running after 10 min",
                    bound.len()
                ),
            };
            let Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) = ev else {
                continue;
            };
            let now = Instant::now();
            let pod = p.name_any();
            let first = *seen.entry(pod.clone()).or_insert(now);
            if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()
                && !bound.contains_key(&pod)
            {
                bound.insert(pod.clone(), now - first);
                last_bound = now;
            }
            let up = p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some();
            if up && !is_running.insert(pod, true).unwrap_or(false) {
                running += 1;
            }
        }
        Phase {
            bound: last_bound - start,
            running: start.elapsed(),
            latency: bound.into_values().collect(),
            cpu: cpu_time().saturating_sub(cpu),
        }
    }

    /// Deletes the Deployment and waits until its pods are gone.
    async fn delete(client: &Client, name: &str) -> Duration {
        let start = Instant::now();
        must(
            Api::<Deployment>::namespaced(client.clone(), "default")
                .delete(name, &DeleteParams::background())
                .await,
            "delete",
        );
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        loop {
            let left = must(
                pods.list(&ListParams::default().labels(&format!("app={name}")))
                    .await,
                "list",
            );
            if left.items.is_empty() {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "{name}: {} pods left 5 min after deletion",
                left.items.len()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn run(replicas: usize) {
        let server = e2e::ApiServer::new(e2e::Config {
            graceful_pod_deletion: true,
            ..Default::default()
        });
        let client = server.client();
        must(addon_bench::install_crds(&client).await, "CRDs");
        let cm: ConfigMap = must(
            serde_json::from_value(
                json!({"metadata": {"name": "floatingip-config", "namespace": "kube-system"},
                "data": {"floatingips": POOL}}),
            ),
            "configmap",
        );
        must(
            Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
                .create(&PostParams::default(), &cm)
                .await,
            "create configmap",
        );

        // galaxy-ipam as main.rs wires it, without leader election (one replica).
        let registry = prometheus::Registry::new();
        let slot = Slot::default();
        let metrics = must(Metrics::register(&registry, slot.clone()), "metrics");
        let stop = CancellationToken::new();
        let state = ServerState {
            slot: slot.clone(),
            metrics: metrics.clone(),
            registry,
        };
        let (ext, _api) = must(
            server::start_servers(
                "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
                "127.0.0.1:0".parse().unwrap_or_else(|e| panic!("{e}")),
                state,
                stop.clone(),
            )
            .await,
            "servers",
        );
        let deps = addon_common::runtime::Deps {
            client: client.clone(),
            health: addon_common::admin::Health::default(),
            events: addon_common::events::EventRecorder::new(client.clone(), "galaxy-ipam"),
        };
        let config = controller::Config {
            plugin: PluginConf::default(),
            slot: slot.clone(),
        };
        tokio::spawn(controller::run(deps, config, metrics.clone(), stop.clone()));
        while slot.get().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let scheduler = SchedulerConfig {
            extenders: vec![ExtenderConfig {
                url_prefix: format!("http://{}/v1", ext.local_addr),
                filter_verb: "filter".into(),
                prioritize_verb: "priority".into(),
                bind_verb: "bind".into(),
                weight: 1,
                node_cache_capable: true,
                http_timeout: Some("10s".into()),
                managed_resources: vec![ManagedResource {
                    name: ENI_IP.into(),
                    ignored_by_scheduler: true,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let config = ClusterConfig {
            nodes: (0..NODES)
                .map(|i| NodeSpec::new(format!("node-{i}")))
                .collect(),
            scheduler: Some(scheduler),
            controllers: ControllersConfig::default(),
            node_address_cidr: must(Cidr::parse("172.21.64.0/20"), "cidr"),
            kubelet_events: false,
            ..Default::default()
        };
        let cluster = must(
            SimCluster::start_with_server(&server, config).await,
            "cluster",
        );
        let stats = cluster
            .scheduler_stats()
            .unwrap_or_else(|| panic!("no scheduler"));
        println!(
            "galaxy-ipam-bench --cluster: {replicas} pods (one Deployment) on {NODES} simulated nodes, pool of 1021 IPs; load average {}",
            loadavg()
        );

        let before = Snapshot::of(&stats);
        let phase = measure(&client, "plain", replicas, false).await;
        report("without the extender (no eni-ip)", replicas, &phase);
        Snapshot::of(&stats).since(&before).print(replicas);
        let took = delete(&client, "plain").await;
        println!("  (pods deleted in {took:.2?})");

        let before = Snapshot::of(&stats);
        let phase = measure(&client, "eni", replicas, true).await;
        report("with galaxy-ipam (eni-ip, filter+bind)", replicas, &phase);
        Snapshot::of(&stats).since(&before).print(replicas);
        let fips = must(
            Api::<addon_common::api::galaxy::FloatingIP>::all(client.clone())
                .list(&ListParams::default())
                .await,
            "floatingips",
        );
        assert_eq!(fips.items.len(), replicas, "one FloatingIP per pod");
        for func in ["filter", "bind"] {
            let h = metrics.schedule_latency.with_label_values(&[func]);
            let d = metrics.decision.with_label_values(&[func]);
            println!(
                "  galaxy-ipam {func:<6} requests={:<5} mean request {:>8.2?} (galaxy_schedule_latency), mean decision {:>8.2?}",
                h.get_sample_count(),
                Duration::from_secs_f64(h.get_sample_sum() / h.get_sample_count().max(1) as f64),
                Duration::from_secs_f64(d.get_sample_sum() / d.get_sample_count().max(1) as f64),
            );
        }
        println!("load average {}", loadavg());
        cluster.shutdown().await;
        stop.cancel();
    }

    /// The scheduler's counters at one point: (count, total) per kind.
    struct Snapshot([(u64, Duration); 5]);

    impl Snapshot {
        fn of(s: &SchedulerStats) -> Self {
            Self([
                s.cycles.get(),
                s.extender_filter.get(),
                s.extender_prioritize.get(),
                s.extender_bind.get(),
                s.api_bind.get(),
            ])
        }

        fn since(&self, before: &Snapshot) -> Snapshot {
            let mut out = [(0, Duration::ZERO); 5];
            for (i, o) in out.iter_mut().enumerate() {
                *o = (
                    self.0[i].0 - before.0[i].0,
                    self.0[i].1.saturating_sub(before.0[i].1),
                );
            }
            Snapshot(out)
        }

        fn print(&self, pods: usize) {
            let names = [
                "scheduling cycle",
                "extender filter (round trip)",
                "extender prioritize (round trip)",
                "extender bind (background)",
                "pods/binding (background)",
            ];
            for (name, (n, total)) in names.iter().zip(self.0) {
                if n == 0 {
                    continue;
                }
                println!(
                    "  {name:<34} n={n:<5} mean {:>9.2?}  total {:>8.2?} ({:>7.2?} per pod)",
                    total / u32::try_from(n).unwrap_or(u32::MAX),
                    total,
                    total / u32::try_from(pods.max(1)).unwrap_or(u32::MAX),
                );
            }
        }
    }

    fn report(name: &str, n: usize, phase: &Phase) {
        let mut lat = phase.latency.clone();
        lat.sort_unstable();
        println!(
            "{name:<40} all bound in {:>6.2?} ({:>6.0} pods/s), all running in {:>6.2?}; created→bound p50 {:>8.2?} p99 {:>8.2?}; CPU {:>6.2?} ({:.2} cores)",
            phase.bound,
            n as f64 / phase.bound.as_secs_f64(),
            phase.running,
            super::percentile(&lat, 0.5),
            super::percentile(&lat, 0.99),
            phase.cpu,
            phase.cpu.as_secs_f64() / phase.running.as_secs_f64(),
        );
    }
}
