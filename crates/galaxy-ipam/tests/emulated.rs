//! The real galaxy-ipam (its extender and REST servers on loopback, leader election, the
//! leader's recovery, watches and resync, wired as `main.rs` wires them) against the
//! in-process emulated API server and a simulated cluster whose scheduler calls galaxy-ipam
//! as its extender exactly as kube-scheduler does (filter / priority / bind,
//! `nodeCacheCapable`, `managedResources` with `ignoredByScheduler`). The kubelets take the
//! pod IP from the `k8s.v1.cni.galaxy.io/args` annotation; the nodes' InternalIPs are in the
//! seed pool's node subnet (`routableSubnet` 172.21.64.0/20).
//!
//! Each galaxy-ipam "process" runs on a tokio runtime of its own; killing it is
//! `Runtime::shutdown_background` (every task dropped at its next await, sockets closed, no
//! graceful step: the lease is not released), the in-process equivalent of `kill -9`.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    time::Duration,
};

use addon_common::k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{ConfigMap, Event, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use addon_common::kube::{
    Api, Client, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use addon_common::{
    api::{
        all_crds,
        galaxy::{FloatingIP, ReleasePolicy},
    },
    cli::CommonArgs,
    kube,
    runtime::Process,
};
use clap::Parser;
use e2e::cluster::{
    ClusterConfig, ExtenderConfig, NodeSpec, SchedulerConfig, SimCluster, harness::http_json,
    scheduler::extender,
};
use e2e::wait::until;
use galaxy_ipam::{
    config::PluginConf,
    controller::{self, READY_CHECK},
    key::KeyObj,
    metrics::Metrics,
    plugin::Slot,
    server::{self, ServerState},
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const SEED_CONFIGMAP: &str = include_str!("../../../manifests/galaxy-ipam/floatingip-config.yaml");
const SEED_POOL: &str = r#"[{"routableSubnet":"172.21.64.0/20","ips":["192.168.64.200~192.168.64.251"],"subnet":"192.168.64.0/24","gateway":"192.168.64.1"}]"#;
const ENI_IP: &str = "tke.cloud.tencent.com/eni-ip";
const ARGS: &str = "k8s.v1.cni.galaxy.io/args";

/// The seed's Deployment `nnn` (the parts the seed shows; selector and replicas filled in).
const SEED_DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: nnn
  namespace: default
spec:
  replicas: 1
  selector:
    matchLabels:
      k8s-app: nnn
      qcloud-app: nnn
  template:
    metadata:
      annotations:
        k8s.v1.cni.cncf.io/networks: galaxy-k8s-vlan
        k8s.v1.cni.galaxy.io/release-policy: immutable
      creationTimestamp: null
      labels:
        k8s-app: nnn
        qcloud-app: nnn
    spec:
      containers:
      - image: nginx
        imagePullPolicy: Always
        name: nnn
        resources:
          limits:
            cpu: 500m
            memory: 1Gi
            tke.cloud.tencent.com/eni-ip: "1"
          requests:
            cpu: 250m
            memory: 256Mi
            tke.cloud.tencent.com/eni-ip: "1"
"#;

// ---------------------------------------------------------------------------------------
// galaxy-ipam as a killable process

#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    common: CommonArgs,
}

/// One galaxy-ipam replica on its own runtime.
struct Replica {
    rt: Option<tokio::runtime::Runtime>,
    slot: Slot,
}

impl Replica {
    fn start(server: &e2e::ApiServer, ports: (u16, u16), conf: PluginConf) -> Replica {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("galaxy-ipam")
            .enable_all()
            .build()
            .expect("runtime");
        let slot = Slot::default();
        let (server, s) = (server.clone(), slot.clone());
        rt.spawn(async move {
            if let Err(error) = replica_main(server, ports, conf, s).await {
                eprintln!("galaxy-ipam replica failed: {error:#}");
            }
        });
        Replica { rt: Some(rt), slot }
    }

    /// `kill -9`: every task is dropped, nothing is cleaned up.
    fn kill(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `main.rs` without the flags and the signal handling: Process (admin server, Lease leader
/// election), the extender and REST servers on fixed loopback ports, `app::lead` while leading.
async fn replica_main(
    server: e2e::ApiServer,
    (ext_port, api_port): (u16, u16),
    conf: PluginConf,
    slot: Slot,
) -> anyhow::Result<()> {
    let flags = Flags::try_parse_from([
        "galaxy-ipam",
        "--admin-address",
        "127.0.0.1:0",
        "--leader-elect",
        "true",
        "--leader-elect-namespace",
        "kube-system",
        "--leader-elect-lease-duration",
        "2s",
        "--leader-elect-renew-deadline",
        "1500ms",
        "--leader-elect-retry-period",
        "200ms",
    ])?;
    let client = server.client();
    let process = Process::start_with_client(
        "galaxy-ipam",
        &flags.common,
        client,
        CancellationToken::new(),
    )
    .await?;
    let metrics = Metrics::register(&process.registry, slot.clone())?;
    process.health.set(READY_CHECK, false, "standby");
    let state = ServerState {
        slot: slot.clone(),
        metrics: metrics.clone(),
        registry: process.registry.clone(),
    };
    // A killed predecessor's listeners close asynchronously: retry binding the same ports.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let (servers_stop, ext, api) = loop {
        let stop = CancellationToken::new();
        match server::start_servers(
            SocketAddr::from(([127, 0, 0, 1], ext_port)),
            SocketAddr::from(([127, 0, 0, 1], api_port)),
            state.clone(),
            stop.clone(),
        )
        .await
        {
            Ok((ext, api)) => break (stop, ext, api),
            Err(error) => {
                stop.cancel();
                anyhow::ensure!(
                    tokio::time::Instant::now() < deadline,
                    "cannot bind: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    let deps = process.deps();
    let config = controller::Config { plugin: conf, slot };
    process
        .run(move |stop| controller::run(deps.clone(), config.clone(), metrics.clone(), stop))
        .await?;
    servers_stop.cancel();
    let _ = ext.task.await;
    let _ = api.task.await;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// the cluster

struct Env {
    server: e2e::ApiServer,
    client: Client,
    cluster: SimCluster,
    ipam: Replica,
    ports: (u16, u16),
}

impl Drop for Env {
    fn drop(&mut self) {
        self.cluster.cancellation_token().cancel();
        self.ipam.kill();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// The scheduler's extender entry, as `manifests/galaxy-ipam/scheduler-config.yaml` has it.
fn extender_config(port: u16) -> ExtenderConfig {
    ExtenderConfig {
        url_prefix: format!("http://127.0.0.1:{port}/v1"),
        filter_verb: "filter".into(),
        prioritize_verb: "priority".into(),
        preempt_verb: "preempt".into(),
        bind_verb: "bind".into(),
        weight: 1,
        node_cache_capable: true,
        http_timeout: Some("10s".into()),
        managed_resources: vec![extender::ManagedResource {
            name: ENI_IP.into(),
            ignored_by_scheduler: true,
        }],
        ..Default::default()
    }
}

/// API server + CRDs + the seed's ConfigMap (with `pools` as its data) + galaxy-ipam + a
/// simulated cluster of `nodes` nodes in 172.21.64.0/20 scheduling through galaxy-ipam.
async fn env(pools: &str, nodes: usize) -> Env {
    env_with(pools, nodes, &[]).await
}

/// As [`env`], with FloatingIPs written before galaxy-ipam starts as the Go original could
/// leave them: into a FloatingIP CRD without a schema (as its v1beta1 CRD was), any field of
/// any type. Without `legacy` the CRD has its schema.
async fn env_with(pools: &str, nodes: usize, legacy: &[Value]) -> Env {
    let server = e2e::ApiServer::new(e2e::Config {
        graceful_pod_deletion: true,
        ..Default::default()
    });
    let client = server.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for mut crd in all_crds() {
        if !legacy.is_empty() && crd.spec.names.kind == "FloatingIP" {
            for version in &mut crd.spec.versions {
                version.schema = Some(
                    serde_json::from_value(json!({"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true
                    }}))
                    .expect("schemaless"),
                );
            }
        }
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    let raw = raw_floatingips(&client);
    for fip in legacy {
        let fip: kube::api::DynamicObject = serde_json::from_value(fip.clone()).expect("object");
        raw.create(&PostParams::default(), &fip)
            .await
            .expect("the schemaless CRD stores any field");
    }
    let mut cm: ConfigMap = serde_yaml::from_str(SEED_CONFIGMAP).expect("seed ConfigMap");
    cm.data
        .get_or_insert_default()
        .insert("floatingips".into(), pools.into());
    Api::<ConfigMap>::namespaced(client.clone(), "kube-system")
        .create(&PostParams::default(), &cm)
        .await
        .expect("create floatingip-config");

    let ports = (free_port(), free_port());
    let ipam = Replica::start(&server, ports, PluginConf::default());
    wait_active(ports.1).await;

    let scheduler = SchedulerConfig {
        extenders: vec![extender_config(ports.0)],
        ..Default::default()
    };
    extender::validate(&scheduler.extenders).expect("valid extender config");
    let config = ClusterConfig {
        nodes: (0..nodes)
            .map(|i| NodeSpec::new(format!("node-{i}")))
            .collect(),
        scheduler: Some(scheduler),
        node_address_cidr: e2e::cluster::Cidr::parse("172.21.64.0/20").expect("cidr"),
        kubelet_events: false,
        ..Default::default()
    };
    let cluster = SimCluster::start_with_server(&server, config)
        .await
        .expect("cluster");
    Env {
        server,
        client,
        cluster,
        ipam,
        ports,
    }
}

/// FloatingIPs as untyped objects (they may not decode as [`FloatingIP`]).
fn raw_floatingips(client: &Client) -> Api<kube::api::DynamicObject> {
    Api::all_with(
        client.clone(),
        &kube::api::ApiResource::erase::<FloatingIP>(&()),
    )
}

/// Waits until a replica leads and has recovered (the REST API answers 200, not 503).
async fn wait_active(api_port: u16) {
    until("galaxy-ipam to lead", Duration::from_secs(20), || async {
        let (code, _) = http_json(api_port, "GET", "/v1/ip", None).await.ok()?;
        (code == 200).then_some(())
    })
    .await;
}

// ---------------------------------------------------------------------------------------
// objects

fn eni_template(app: &str, policy: Option<&str>) -> Value {
    let mut annotations = json!({"k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan"});
    if let Some(p) = policy {
        annotations["k8s.v1.cni.galaxy.io/release-policy"] = json!(p);
    }
    json!({
        "metadata": {"labels": {"app": app}, "annotations": annotations},
        "spec": {"terminationGracePeriodSeconds": 5, "containers": [{
            "name": "c", "image": "nginx",
            "resources": {"requests": {ENI_IP: "1"}, "limits": {ENI_IP: "1"}}
        }]}
    })
}

async fn create_deployment(client: &Client, name: &str, replicas: i32, policy: Option<&str>) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": eni_template(name, policy)}
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
}

async fn create_statefulset(client: &Client, name: &str, replicas: i32, policy: Option<&str>) {
    let s: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": name, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": name}},
                 "template": eni_template(name, policy)}
    }))
    .expect("statefulset");
    Api::<StatefulSet>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &s)
        .await
        .expect("create statefulset");
}

async fn scale_statefulset(client: &Client, name: &str, replicas: i32) {
    Api::<StatefulSet>::namespaced(client.clone(), "default")
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": replicas}})),
        )
        .await
        .expect("scale statefulset");
}

async fn app_pods(client: &Client, app: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .expect("list pods")
        .items
}

/// The IP of Galaxy's annotation (prefix length stripped).
fn annotated_ip(pod: &Pod) -> Option<String> {
    let args: Value = serde_json::from_str(pod.annotations().get(ARGS)?).ok()?;
    let ip = args["common"]["ipinfos"][0]["ip"].as_str()?;
    Some(ip.split('/').next()?.to_string())
}

fn running(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        && pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.as_ref())
            .is_some()
}

fn pod_ip(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.pod_ip.clone()
}

/// Waits for exactly `n` live pods of `app`, all Running with a Galaxy IP; returns name → pod.
async fn running_pods(client: &Client, app: &str, n: usize) -> BTreeMap<String, Pod> {
    until(
        &format!("{n} running pods of {app}"),
        Duration::from_secs(60),
        || async {
            let pods = app_pods(client, app).await;
            let live: Vec<Pod> = pods
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            (live.len() == n && live.iter().all(|p| running(p) && annotated_ip(p).is_some()))
                .then(|| live.into_iter().map(|p| (p.name_any(), p)).collect())
        },
    )
    .await
}

async fn fips(client: &Client) -> BTreeMap<String, FloatingIP> {
    Api::<FloatingIP>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("list floatingips")
        .items
        .into_iter()
        .map(|f| (f.name_any(), f))
        .collect()
}

fn in_seed_pool(ip: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().expect("ipv4");
    let o = ip.octets();
    o[..3] == [192, 168, 64] && (200..=251).contains(&o[3])
}

// ---------------------------------------------------------------------------------------
// tests

/// The seed's Deployment with `eni-ip` is scheduled through galaxy-ipam: the pod carries the
/// seed's annotation byte for byte (an IP of the seed's pool), runs with that IP, and the
/// FloatingIP records its key, node and policy. A pod without the resource is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_deployment_gets_an_ip_from_the_seed_pool() {
    let env = env(SEED_POOL, 3).await;
    let d: Deployment = serde_yaml::from_str(SEED_DEPLOYMENT).expect("seed deployment");
    Api::<Deployment>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create nnn");
    let pod = until("the nnn pod running", Duration::from_secs(30), || async {
        let pods = Api::<Pod>::namespaced(env.client.clone(), "default")
            .list(&ListParams::default().labels("k8s-app=nnn"))
            .await
            .ok()?;
        pods.items.into_iter().find(running)
    })
    .await;
    let ip = annotated_ip(&pod).expect("args annotation");
    assert!(in_seed_pool(&ip), "{ip} is not in the seed's pool");
    let annotations = pod.annotations();
    assert_eq!(
        annotations.get(ARGS).map(String::as_str),
        Some(
            format!(
                r#"{{"common":{{"ipinfos":[{{"ip":"{ip}/24","vlan":0,"gateway":"192.168.64.1","routable_subnet":"172.21.64.0/20"}}]}}}}"#
            )
            .as_str()
        ),
        "the seed's annotation"
    );
    assert_eq!(
        annotations
            .get("k8s.v1.cni.galaxy.io/release-policy")
            .map(String::as_str),
        Some("immutable")
    );
    assert_eq!(
        annotations
            .get("k8s.v1.cni.cncf.io/networks")
            .map(String::as_str),
        Some("galaxy-k8s-vlan")
    );
    let status = pod.status.clone().expect("status");
    assert_eq!(status.pod_ip.as_deref(), Some(ip.as_str()), "pod IP");
    assert_eq!(
        status
            .pod_ips
            .as_ref()
            .and_then(|v| v.first())
            .map(|p| p.ip.as_str()),
        Some(ip.as_str())
    );
    let host_ip = status.host_ip.expect("hostIP");
    assert!(
        host_ip.starts_with("172.21.64."),
        "node in the pool's node subnet: {host_ip}"
    );
    let node = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.clone())
        .expect("bound");

    let fip = Api::<FloatingIP>::all(env.client.clone())
        .get(&ip)
        .await
        .expect("FloatingIP named after the IP");
    assert_eq!(fip.spec.key, format!("dp_default_nnn_{}", pod.name_any()));
    assert_eq!(fip.spec.policy, ReleasePolicy::Immutable);
    assert_eq!(fip.spec.policy.as_int(), 1);
    let attr = fip.spec.parsed_attribute().expect("attribute JSON");
    assert_eq!(attr.node_name, node);
    assert!(
        fip.spec.attribute.contains(r#""NodeName""#),
        "{}",
        fip.spec.attribute
    );
    assert_eq!(fips(&env.client).await.len(), 1, "one FloatingIP");

    // The scheduler recorded the binding galaxy-ipam made.
    until("the Scheduled event", Duration::from_secs(10), || async {
        let events = Api::<Event>::namespaced(env.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?;
        events.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("Scheduled")
                && e.involved_object.name.as_deref() == Some(pod.name_any().as_str())
        })
    })
    .await;

    // A pod without the resource is scheduled by the scheduler alone, no annotation.
    let plain: Pod = serde_json::from_value(json!({
        "metadata": {"name": "plain", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]}
    }))
    .expect("pod");
    let pods = Api::<Pod>::namespaced(env.client.clone(), "default");
    pods.create(&PostParams::default(), &plain)
        .await
        .expect("plain pod");
    let plain = until("the plain pod running", Duration::from_secs(20), || async {
        pods.get("plain").await.ok().filter(running)
    })
    .await;
    assert!(annotated_ip(&plain).is_none());
    assert!(
        !pod_ip(&plain).is_some_and(|ip| ip.starts_with("192.168.64.")),
        "not a floating IP"
    );
    assert_eq!(fips(&env.client).await.len(), 1);
}

/// `immutable` StatefulSet: a deleted pod comes back (new UID) with the same IP; scaling below
/// an ordinal releases that pod's IP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_immutable_keeps_ips_across_deletion_and_releases_when_scaled_below() {
    let env = env(SEED_POOL, 3).await;
    create_statefulset(&env.client, "web", 3, Some("immutable")).await;
    let before = running_pods(&env.client, "web", 3).await;
    let ips: BTreeMap<String, String> = before
        .iter()
        .map(|(n, p)| (n.clone(), annotated_ip(p).expect("ip")))
        .collect();
    assert_eq!(
        ips.values().collect::<BTreeSet<_>>().len(),
        3,
        "unique IPs {ips:?}"
    );
    let records = fips(&env.client).await;
    for (name, ip) in &ips {
        assert!(in_seed_pool(ip));
        let f = &records[ip];
        assert_eq!(f.spec.key, format!("sts_default_web_{name}"));
        assert_eq!(f.spec.policy, ReleasePolicy::Immutable);
    }

    // Delete web-1 (and web-2 at once): the controller recreates them; same IPs.
    let pods = Api::<Pod>::namespaced(env.client.clone(), "default");
    for name in ["web-1", "web-2"] {
        pods.delete(name, &DeleteParams::default())
            .await
            .expect("delete pod");
    }
    let after = until(
        "web-1 and web-2 recreated",
        Duration::from_secs(60),
        || async {
            let now = running_pods(&env.client, "web", 3).await;
            ["web-1", "web-2"]
                .iter()
                .all(|n| now[*n].metadata.uid != before[*n].metadata.uid)
                .then_some(now)
        },
    )
    .await;
    for (name, p) in &after {
        assert_eq!(
            annotated_ip(p).as_ref(),
            Some(&ips[name]),
            "{name} kept its IP"
        );
        assert_eq!(pod_ip(p).as_ref(), Some(&ips[name]), "{name} pod IP");
    }
    let records = fips(&env.client).await;
    assert_eq!(records.len(), 3);
    for (name, ip) in &ips {
        assert_eq!(records[ip].spec.key, format!("sts_default_web_{name}"));
        let attr = records[ip].spec.parsed_attribute().expect("attribute");
        assert_eq!(
            Some(attr.node_name.as_str()),
            after[name]
                .spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
        );
    }

    // Scale to 1: web-1 and web-2 go, so do their IPs; web-0 keeps its own.
    scale_statefulset(&env.client, "web", 1).await;
    running_pods(&env.client, "web", 1).await;
    until(
        "the IPs of web-1 and web-2 released",
        Duration::from_secs(30),
        || async {
            let records = fips(&env.client).await;
            (records.len() == 1).then_some(records)
        },
    )
    .await;
    let records = fips(&env.client).await;
    assert_eq!(records[&ips["web-0"]].spec.key, "sts_default_web_web-0");

    // Scale up again: new pods get IPs (from the pool, unique).
    scale_statefulset(&env.client, "web", 3).await;
    let again = running_pods(&env.client, "web", 3).await;
    assert_eq!(annotated_ip(&again["web-0"]).as_ref(), Some(&ips["web-0"]));
    let set: BTreeSet<String> = again.values().filter_map(annotated_ip).collect();
    assert_eq!(set.len(), 3);
    assert_eq!(fips(&env.client).await.len(), 3);
}

/// `never`: deleting the Deployment keeps its IPs (re-keyed to the app), re-creating it with
/// the same name gets exactly those IPs back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_survives_deleting_and_recreating_the_workload() {
    let env = env(SEED_POOL, 3).await;
    create_deployment(&env.client, "keep", 2, Some("never")).await;
    let first = running_pods(&env.client, "keep", 2).await;
    let ips: BTreeSet<String> = first.values().filter_map(annotated_ip).collect();
    assert_eq!(ips.len(), 2);

    Api::<Deployment>::namespaced(env.client.clone(), "default")
        .delete("keep", &DeleteParams::background())
        .await
        .expect("delete deployment");
    let gone = tokio::time::timeout(Duration::from_secs(30), async {
        while !app_pods(&env.client, "keep").await.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if gone.is_err() {
        let left: Vec<_> = app_pods(&env.client, "keep")
            .await
            .iter()
            .map(|p| {
                (
                    p.name_any(),
                    p.metadata.deletion_timestamp.clone(),
                    p.metadata.finalizers.clone(),
                    p.metadata.owner_references.clone(),
                    p.status.as_ref().and_then(|s| s.phase.clone()),
                    p.spec.as_ref().and_then(|s| s.node_name.clone()),
                )
            })
            .collect();
        panic!("the pods of keep are still there: {left:#?}");
    }
    let records = until(
        "the IPs re-keyed to the app",
        Duration::from_secs(20),
        || async {
            let records = fips(&env.client).await;
            records
                .values()
                .all(|f| f.spec.key == "dp_default_keep_")
                .then_some(records)
        },
    )
    .await;
    assert_eq!(
        records.keys().cloned().collect::<BTreeSet<_>>(),
        ips,
        "kept"
    );
    for f in records.values() {
        assert_eq!(f.spec.policy, ReleasePolicy::Never);
    }

    create_deployment(&env.client, "keep", 2, Some("never")).await;
    let second = running_pods(&env.client, "keep", 2).await;
    let again: BTreeSet<String> = second.values().filter_map(annotated_ip).collect();
    assert_eq!(again, ips, "the re-created Deployment got its IPs back");
    for p in second.values() {
        assert!(
            first.values().all(|old| old.metadata.uid != p.metadata.uid),
            "new pods"
        );
        let ip = annotated_ip(p).expect("ip");
        let f = &fips(&env.client).await[&ip];
        assert_eq!(f.spec.key, format!("dp_default_keep_{}", p.name_any()));
    }
}

/// With 2 IPs and 3 replicas the third pod stays Pending with `PodScheduled=False` naming
/// galaxy-ipam's reason; a freed IP goes to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_leaves_pods_pending_with_the_reason() {
    let pool = SEED_POOL.replace(
        "192.168.64.200~192.168.64.251",
        "192.168.64.200~192.168.64.201",
    );
    let env = env(&pool, 3).await;
    create_deployment(&env.client, "big", 3, None).await;
    let (pending, ran) = until(
        "two running pods and one unschedulable",
        Duration::from_secs(30),
        || async {
            let pods = app_pods(&env.client, "big").await;
            let ran: Vec<Pod> = pods.iter().filter(|p| running(p)).cloned().collect();
            let pending: Vec<Pod> = pods
                .into_iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| {
                                c.type_ == "PodScheduled"
                                    && c.status == "False"
                                    && c.reason.as_deref() == Some("Unschedulable")
                            })
                        })
                })
                .collect();
            (ran.len() == 2 && pending.len() == 1).then(|| (pending[0].clone(), ran))
        },
    )
    .await;
    let cond = pending
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "PodScheduled"))
        .cloned()
        .expect("condition");
    let message = cond.message.unwrap_or_default();
    assert!(
        message.contains("FloatingIPPlugin:NoFIPLeft"),
        "reason names the cause: {message}"
    );
    assert!(message.starts_with("0/3 nodes are available"), "{message}");
    assert_eq!(
        pending.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Pending")
    );
    assert!(
        pending
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none()
    );
    until(
        "a FailedScheduling event naming NoFIPLeft",
        Duration::from_secs(10),
        || async {
            let events = Api::<Event>::namespaced(env.client.clone(), "default")
                .list(&ListParams::default())
                .await
                .ok()?;
            events.items.into_iter().find(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.message
                        .as_deref()
                        .is_some_and(|m| m.contains("NoFIPLeft"))
            })
        },
    )
    .await;
    assert_eq!(fips(&env.client).await.len(), 2);

    // Still pending a while later (the scheduler retries every 2 s; nothing can change).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let still = Api::<Pod>::namespaced(env.client.clone(), "default")
        .get(&pending.name_any())
        .await
        .expect("pending pod");
    assert!(
        still
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_ref())
            .is_none(),
        "bound without an IP"
    );

    // Free one IP: the pending pod (or the replacement) gets it.
    let victim = &ran[0];
    let freed = annotated_ip(victim).expect("ip");
    Api::<Pod>::namespaced(env.client.clone(), "default")
        .delete(&victim.name_any(), &DeleteParams::default())
        .await
        .expect("delete");
    until(
        "the freed IP reused by another pod",
        Duration::from_secs(30),
        || async {
            let pods = app_pods(&env.client, "big").await;
            pods.into_iter()
                .find(|p| {
                    running(p)
                        && p.metadata.uid != victim.metadata.uid
                        && annotated_ip(p).as_ref() == Some(&freed)
                })
                .map(|_| ())
        },
    )
    .await;
}

/// The REST API against the live state: list by app, release refused while the pod runs,
/// allowed once the pod is gone; the FloatingIP goes with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_lists_and_releases_live_state() {
    let env = env(SEED_POOL, 3).await;
    let api = env.ports.1;
    create_statefulset(&env.client, "db", 2, Some("never")).await;
    create_statefulset(&env.client, "live", 1, Some("immutable")).await;
    let db = running_pods(&env.client, "db", 2).await;
    let live = running_pods(&env.client, "live", 1).await;
    let db_ips: BTreeMap<String, String> = db
        .iter()
        .map(|(n, p)| (n.clone(), annotated_ip(p).expect("ip")))
        .collect();

    let (code, body) = http_json(api, "GET", "/v1/ip?appName=db&namespace=default", None)
        .await
        .expect("GET /v1/ip");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["totalElements"], 2, "{body}");
    for item in body["content"].as_array().expect("content") {
        let pod = item["podName"].as_str().expect("podName");
        assert_eq!(item["ip"].as_str(), Some(db_ips[pod].as_str()));
        assert_eq!(item["appName"], "db");
        assert_eq!(item["namespace"], "default");
        assert_eq!(item["appType"], "statefulset");
        assert_eq!(item["policy"], 2);
        assert_eq!(item["status"], "Running", "{item}");
        assert_eq!(item["releasable"], false, "{item}");
    }
    // Everything, sorted by IP ascending.
    let (_, all) = http_json(api, "GET", "/v1/ip?size=100", None)
        .await
        .expect("GET all");
    assert_eq!(all["totalElements"], 3, "{all}");
    let listed: Vec<&str> = all["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter_map(|i| i["ip"].as_str())
        .collect();
    let mut sorted = listed.clone();
    sorted.sort_by_key(|ip| ip.parse::<std::net::Ipv4Addr>().expect("ip"));
    assert_eq!(listed, sorted);
    let (_, kw) = http_json(api, "GET", "/v1/ip?keyword=live", None)
        .await
        .expect("GET keyword");
    assert_eq!(kw["totalElements"], 1, "{kw}");
    assert_eq!(
        kw["content"][0]["ip"].as_str(),
        annotated_ip(&live["live-0"]).as_deref()
    );

    // Releasing a running pod's IP is refused.
    let item = |pod: &str| json!({"ip": db_ips[pod], "appName": "db", "appType": "statefulset", "podName": pod, "namespace": "default"});
    let (code, resp) = http_json(api, "POST", "/v1/ip", Some(json!({"ips": [item("db-0")]})))
        .await
        .expect("POST /v1/ip");
    assert_eq!(code, 202, "{resp}");
    assert_eq!(resp["unreleased"], json!([db_ips["db-0"]]), "{resp}");
    assert!(fips(&env.client).await.contains_key(&db_ips["db-0"]));

    // Delete the StatefulSet: `never` keeps the IPs; the API shows them Deleted, releasable.
    Api::<StatefulSet>::namespaced(env.client.clone(), "default")
        .delete("db", &DeleteParams::background())
        .await
        .expect("delete sts");
    until("the db pods gone", Duration::from_secs(30), || async {
        app_pods(&env.client, "db").await.is_empty().then_some(())
    })
    .await;
    let body = until(
        "db IPs listed as Deleted",
        Duration::from_secs(20),
        || async {
            let (_, body) = http_json(api, "GET", "/v1/ip?appName=db&namespace=default", None)
                .await
                .ok()?;
            body["content"]
                .as_array()?
                .iter()
                .all(|i| i["status"] == "Deleted" && i["releasable"] == true)
                .then_some(body)
        },
    )
    .await;
    assert_eq!(body["totalElements"], 2, "{body}");

    let (code, resp) = http_json(api, "POST", "/v1/ip", Some(json!({"ips": [item("db-0")]})))
        .await
        .expect("POST /v1/ip");
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["code"], 200, "{resp}");
    until(
        "db-0's FloatingIP deleted",
        Duration::from_secs(10),
        || async { (!fips(&env.client).await.contains_key(&db_ips["db-0"])).then_some(()) },
    )
    .await;
    let (_, body) = http_json(api, "GET", "/v1/ip?appName=db&namespace=default", None)
        .await
        .expect("GET");
    assert_eq!(body["totalElements"], 1, "{body}");
    assert_eq!(body["content"][0]["podName"], "db-1");
    let records = fips(&env.client).await;
    assert_eq!(records.len(), 2, "db-1 and live-0 kept");
    assert!(records.contains_key(&db_ips["db-1"]));

    // A malformed request is a 400.
    let (code, _) = http_json(
        api,
        "POST",
        "/v1/ip",
        Some(json!({"ips": [{"ip": "not-an-ip"}]})),
    )
    .await
    .expect("POST");
    assert_eq!(code, 400);
}

/// 200 pods at once (100 from a Deployment, 100 bare pods, 20 of those deleted meanwhile) on
/// 3 nodes, galaxy-ipam killed (`kill -9` equivalent) and restarted 4 times while they are
/// scheduled. Afterwards (and one resync) every running pod has a unique IP matching its
/// FloatingIP, and every FloatingIP belongs to an existing pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_with_ipam_killed_repeatedly_never_double_allocate() {
    let pool = r#"[{"routableSubnet":"172.21.64.0/20","ips":["192.168.64.10~192.168.64.250"],"subnet":"192.168.64.0/24","gateway":"192.168.64.1"}]"#;
    let mut env = env(pool, 3).await;
    create_deployment(&env.client, "crowd", 100, None).await;
    let pods_api = Api::<Pod>::namespaced(env.client.clone(), "default");
    let creates = (0..100).map(|i| {
        let pods_api = pods_api.clone();
        async move {
            let mut template = eni_template("bare", None);
            template["metadata"]["name"] = json!(format!("bare-{i}"));
            let pod: Pod = serde_json::from_value(template).expect("pod");
            pods_api
                .create(&PostParams::default(), &pod)
                .await
                .expect("create bare pod");
        }
    });
    futures::future::join_all(creates).await;

    let mut bound_at_kill = Vec::new();
    for round in 0..4u64 {
        tokio::time::sleep(Duration::from_millis(300 + 150 * round)).await;
        let bound = pods_api
            .list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some())
            .count();
        bound_at_kill.push(bound);
        env.ipam.kill();
        if round == 1 {
            // Pods deleted while no IPAM runs: only the re-list / resync can release them.
            for i in 0..10 {
                let _ = pods_api
                    .delete(&format!("bare-{i}"), &DeleteParams::default())
                    .await;
            }
        }
        env.ipam = Replica::start(&env.server, env.ports, PluginConf::default());
        if round == 2 {
            for i in 10..20 {
                let _ = pods_api
                    .delete(&format!("bare-{i}"), &DeleteParams::default())
                    .await;
            }
        }
    }
    println!("pods bound when galaxy-ipam was killed: {bound_at_kill:?}");
    assert!(
        bound_at_kill[0] < 200,
        "the first kill came after scheduling was over: {bound_at_kill:?}"
    );
    wait_active(env.ports.1).await;

    let pods = until("180 pods running", Duration::from_secs(180), || async {
        let mut all = app_pods(&env.client, "crowd").await;
        all.extend(app_pods(&env.client, "bare").await);
        (all.len() == 180 && all.iter().all(running)).then_some(all)
    })
    .await;

    // One resync, as the periodic one would do.
    let plugin = env.ipam.slot.get().expect("active plugin");
    controller::resync(&plugin).await.expect("resync");

    let records = fips(&env.client).await;
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for p in &pods {
        let name = p.name_any();
        let ip = annotated_ip(p).unwrap_or_else(|| panic!("{name} has no Galaxy IP"));
        assert_eq!(
            pod_ip(p).as_ref(),
            Some(&ip),
            "{name}: pod IP is the annotation's"
        );
        if let Some(other) = seen.insert(ip.clone(), name.clone()) {
            panic!("{ip} given to both {other} and {name}");
        }
        let f = records
            .get(&ip)
            .unwrap_or_else(|| panic!("{name}'s IP {ip} has no FloatingIP"));
        assert_eq!(
            f.spec.key,
            galaxy_ipam::pod::key_of(p).key(),
            "{ip}: FloatingIP key"
        );
        let attr = f.spec.parsed_attribute().expect("attribute");
        assert_eq!(
            Some(attr.node_name.as_str()),
            p.spec.as_ref().and_then(|s| s.node_name.as_deref()),
            "{ip}: FloatingIP node"
        );
    }
    let live: BTreeMap<String, &Pod> = pods.iter().map(|p| (p.name_any(), p)).collect();
    for (ip, f) in &records {
        let key = KeyObj::parse(&f.spec.key).expect("key");
        let pod = live.get(&key.pod);
        assert!(
            pod.is_some(),
            "FloatingIP {ip} ({}) points at a pod that does not exist",
            f.spec.key
        );
        let attr = f.spec.parsed_attribute().expect("attribute");
        if !attr.uid.is_empty() {
            assert_eq!(
                pod.and_then(|p| p.metadata.uid.as_deref()),
                Some(attr.uid.as_str()),
                "FloatingIP {ip} records another pod's UID"
            );
        }
    }
    assert_eq!(records.len(), 180, "one FloatingIP per pod");
}

/// The `PodScheduled=False` message of a pod the scheduler could not place.
fn unschedulable_message(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| {
            c.type_ == "PodScheduled"
                && c.status == "False"
                && c.reason.as_deref() == Some("Unschedulable")
        })?
        .message
        .clone()
}

/// The IPs of Galaxy's annotation with their ipinfo (prefix length stripped from `ip`).
fn ipinfos(pod: &Pod) -> Vec<(String, Value)> {
    let Some(args) = pod
        .annotations()
        .get(ARGS)
        .and_then(|a| serde_json::from_str::<Value>(a).ok())
    else {
        return Vec::new();
    };
    args["common"]["ipinfos"]
        .as_array()
        .map(|infos| {
            infos
                .iter()
                .filter_map(|i| {
                    let ip = i["ip"].as_str()?.split('/').next()?.to_owned();
                    Some((ip, i.clone()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ip_in(ip: &str, first: &str, last: &str) -> bool {
    let v = |s: &str| u32::from(s.parse::<std::net::Ipv4Addr>().expect("ipv4"));
    (v(first)..=v(last)).contains(&v(ip))
}

/// Multi-IP (`request_ip_range`, one IP per inner list) on the cluster, from two pools of the
/// same node subnet (different pod subnets, gateways and vlans): a bare pod gets one IP per
/// range in one annotation (its pod IP is the first), both recorded as FloatingIPs of its key
/// and both released when it is deleted; a StatefulSet pod with `immutable` gets both back
/// when it is re-created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_ip_request_ranges_on_the_cluster() {
    let pools = r#"[{"routableSubnet":"172.21.64.0/20","ips":["192.168.64.200~192.168.64.251"],"subnet":"192.168.64.0/24","gateway":"192.168.64.1"},
                    {"routableSubnet":"172.21.64.0/20","ips":["10.0.0.2~10.0.0.30"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1","vlan":3}]"#;
    let env = env(pools, 3).await;
    let request =
        r#"{"request_ip_range":[["192.168.64.240~192.168.64.245"],["10.0.0.2~10.0.0.30"]]}"#;
    let mut template = eni_template("multi", None);
    template["metadata"]["name"] = json!("multi");
    template["metadata"]["annotations"][ARGS] = json!(request);
    let pod: Pod = serde_json::from_value(template).expect("pod");
    let pods_api = Api::<Pod>::namespaced(env.client.clone(), "default");
    pods_api
        .create(&PostParams::default(), &pod)
        .await
        .expect("create pod");
    let mut sts = eni_template("multi-sts", Some("immutable"));
    sts["metadata"]["annotations"][ARGS] = json!(request);
    let s: StatefulSet = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "multi-sts", "namespace": "default"},
        "spec": {"replicas": 1, "serviceName": "multi-sts", "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": "multi-sts"}}, "template": sts}
    }))
    .expect("statefulset");
    Api::<StatefulSet>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &s)
        .await
        .expect("create statefulset");

    let pod = running_pods(&env.client, "multi", 1).await["multi"].clone();
    let infos = ipinfos(&pod);
    assert_eq!(infos.len(), 2, "one IP per range: {infos:?}");
    let (first, second) = (&infos[0], &infos[1]);
    assert!(
        ip_in(&first.0, "192.168.64.240", "192.168.64.245"),
        "{first:?}"
    );
    assert_eq!(first.1["ip"], format!("{}/24", first.0));
    assert_eq!(first.1["gateway"], "192.168.64.1");
    assert_eq!(first.1["vlan"], 0);
    assert!(ip_in(&second.0, "10.0.0.2", "10.0.0.30"), "{second:?}");
    assert_eq!(second.1["gateway"], "10.0.0.1");
    assert_eq!(second.1["vlan"], 3);
    assert_eq!(pod_ip(&pod).as_ref(), Some(&first.0), "pod IP is the first");
    let args: Value = serde_json::from_str(&pod.annotations()[ARGS]).expect("args");
    assert_eq!(
        args["request_ip_range"],
        json!([["192.168.64.240~192.168.64.245"], ["10.0.0.2~10.0.0.30"]]),
        "the request is kept"
    );
    let records = fips(&env.client).await;
    for (ip, _) in &infos {
        assert_eq!(records[ip].spec.key, "NULL_default_NULL_multi", "{ip}");
    }

    let sts_pod = running_pods(&env.client, "multi-sts", 1).await["multi-sts-0"].clone();
    let sts_ips: Vec<String> = ipinfos(&sts_pod).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(sts_ips.len(), 2, "{sts_ips:?}");
    assert!(!sts_ips.contains(&first.0) && !sts_ips.contains(&second.0));

    // Deleting the bare pod releases both IPs; the StatefulSet pod comes back with its two.
    pods_api
        .delete("multi", &DeleteParams::default())
        .await
        .expect("delete");
    pods_api
        .delete("multi-sts-0", &DeleteParams::default())
        .await
        .expect("delete");
    until(
        "both FloatingIPs of the bare pod deleted",
        Duration::from_secs(20),
        || async {
            let records = fips(&env.client).await;
            infos
                .iter()
                .all(|(ip, _)| !records.contains_key(ip))
                .then_some(())
        },
    )
    .await;
    let again = until(
        "multi-sts-0 re-created and running",
        Duration::from_secs(30),
        || async {
            let pods = app_pods(&env.client, "multi-sts").await;
            pods.into_iter().find(|p| {
                running(p) && p.metadata.uid != sts_pod.metadata.uid && !ipinfos(p).is_empty()
            })
        },
    )
    .await;
    let again_ips: Vec<String> = ipinfos(&again).into_iter().map(|(ip, _)| ip).collect();
    assert_eq!(again_ips, sts_ips, "immutable: the same two IPs");
    let records = fips(&env.client).await;
    assert_eq!(records.len(), 2, "{:?}", records.keys());
    for ip in &sts_ips {
        assert_eq!(records[ip].spec.key, "sts_default_multi-sts_multi-sts-0");
    }
}

/// Pools shared by Deployments (`tke.cloud.tencent.com/eni-ip-pool`) on the cluster: a Pool
/// created through the REST API with `preAllocateIP` holds `size` IPs at once (FloatingIPs
/// keyed `pool__<pool>_`); pods of two Deployments sharing it claim only those, the pod over
/// the size stays Pending with the quota reason, and when one Deployment is deleted its IPs
/// return to the pool (policy `never`) and the waiting pod gets one. A Pool CR created with
/// the API (no pre-allocation) allocates new IPs up to its size, then makes pods wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_with_size_and_preallocation_on_the_cluster() {
    let env = env(SEED_POOL, 3).await;
    let api = env.ports.1;
    let (code, body) = http_json(
        api,
        "POST",
        "/v1/pool",
        Some(json!({"name": "p1", "size": 3, "preAllocateIP": true})),
    )
    .await
    .expect("POST /v1/pool");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["realPoolSize"], 3, "{body}");
    let pool_ips: BTreeSet<String> = fips(&env.client)
        .await
        .into_iter()
        .filter(|(_, f)| f.spec.key == "pool__p1_" && f.spec.policy == ReleasePolicy::Never)
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(pool_ips.len(), 3, "pre-allocated");
    let (code, body) = http_json(api, "GET", "/v1/pool/p1", None)
        .await
        .expect("GET pool");
    assert_eq!(code, 200);
    assert_eq!(
        body["pool"],
        json!({"name": "p1", "size": 3, "preAllocateIP": true})
    );
    // A Pool CR made with the API: size 1, nothing pre-allocated.
    let p2: addon_common::api::galaxy::Pool = serde_json::from_value(json!({
        "apiVersion": "galaxy.k8s.io/v1alpha1", "kind": "Pool",
        "metadata": {"name": "p2", "namespace": "kube-system"}, "size": 1
    }))
    .expect("pool");
    Api::<addon_common::api::galaxy::Pool>::namespaced(env.client.clone(), "kube-system")
        .create(&PostParams::default(), &p2)
        .await
        .expect("create Pool p2");

    let in_pool = |app: &str, pool: &str, replicas: i32| {
        let mut template = eni_template(app, None);
        template["metadata"]["annotations"]["tke.cloud.tencent.com/eni-ip-pool"] = json!(pool);
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": app, "namespace": "default"},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                     "template": template}
        })
    };
    let deployments = Api::<Deployment>::namespaced(env.client.clone(), "default");
    for (app, pool, replicas) in [("a", "p1", 2), ("c", "p2", 2)] {
        let d: Deployment = serde_json::from_value(in_pool(app, pool, replicas)).expect("d");
        deployments
            .create(&PostParams::default(), &d)
            .await
            .expect("create deployment");
    }
    let a = running_pods(&env.client, "a", 2).await;
    let a_ips: BTreeSet<String> = a.values().filter_map(annotated_ip).collect();
    assert!(a_ips.is_subset(&pool_ips), "{a_ips:?} ⊄ {pool_ips:?}");
    let d: Deployment = serde_json::from_value(in_pool("b", "p1", 2)).expect("d");
    deployments
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment b");

    // b: one pod claims the pool's last IP, the other waits for the pool.
    let waiting = |app: &'static str, pool: &'static str, size: usize| {
        let client = env.client.clone();
        async move {
            until(
                &format!("one running and one waiting pod of {app}"),
                Duration::from_secs(30),
                || async {
                    let pods = app_pods(&client, app).await;
                    let ran: Vec<&Pod> = pods.iter().filter(|p| running(p)).collect();
                    let msg = pods.iter().find_map(unschedulable_message)?;
                    (ran.len() == 1
                        && msg.contains(&format!(
                            "pool {pool} has allocated {size} ips with replicas of {size}, wait for releasing"
                        )))
                    .then(|| annotated_ip(ran[0]).expect("ip"))
                },
            )
            .await
        }
    };
    let b_ip = waiting("b", "p1", 3).await;
    assert!(pool_ips.contains(&b_ip) && !a_ips.contains(&b_ip), "{b_ip}");
    let c_ip = waiting("c", "p2", 1).await;
    assert!(!pool_ips.contains(&c_ip));
    let records = fips(&env.client).await;
    for (name, pod) in &a {
        let ip = annotated_ip(pod).expect("ip");
        assert_eq!(
            records[&ip].spec.key,
            format!("pool__p1_dp_default_a_{name}")
        );
        assert_eq!(records[&ip].spec.policy, ReleasePolicy::Never);
    }
    assert!(
        records[&c_ip]
            .spec
            .key
            .starts_with("pool__p2_dp_default_c_")
    );

    // a goes: its IPs return to the pool, b's waiting pod takes one.
    deployments
        .delete("a", &DeleteParams::background())
        .await
        .expect("delete a");
    let b = running_pods(&env.client, "b", 2).await;
    let b_ips: BTreeSet<String> = b.values().filter_map(annotated_ip).collect();
    assert!(b_ips.is_subset(&pool_ips), "{b_ips:?} ⊄ {pool_ips:?}");
    let records = until(
        "a's other IP back under pool__p1_",
        Duration::from_secs(20),
        || async {
            let records = fips(&env.client).await;
            let back = pool_ips
                .iter()
                .filter(|ip| records.get(*ip).is_some_and(|f| f.spec.key == "pool__p1_"))
                .count();
            (back == 1).then_some(records)
        },
    )
    .await;
    let p1_ips: BTreeSet<&String> = records
        .iter()
        .filter(|(_, f)| f.spec.key.starts_with("pool__p1_"))
        .map(|(ip, _)| ip)
        .collect();
    assert_eq!(p1_ips, pool_ips.iter().collect(), "the pool never grows");
}

/// A pod deleted while no galaxy-ipam runs (force-deleted: no replica sees it go) has its IP
/// released by the resync a new leader runs as soon as it has recovered, not an interval later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ips_of_pods_deleted_while_down_are_released_at_start() {
    let mut env = env(SEED_POOL, 3).await;
    let pods_api = Api::<Pod>::namespaced(env.client.clone(), "default");
    for name in ["gone", "stays"] {
        let mut template = eni_template("solo", None);
        template["metadata"]["name"] = json!(name);
        let pod: Pod = serde_json::from_value(template).expect("pod");
        pods_api
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
    }
    let pods = running_pods(&env.client, "solo", 2).await;
    let gone_ip = annotated_ip(&pods["gone"]).expect("ip");
    let stays_ip = annotated_ip(&pods["stays"]).expect("ip");

    env.ipam.kill();
    pods_api
        .delete("gone", &DeleteParams::default().grace_period(0))
        .await
        .expect("force delete");
    until("the pod gone", Duration::from_secs(10), || async {
        pods_api.get_opt("gone").await.ok()?.is_none().then_some(())
    })
    .await;
    assert!(fips(&env.client).await.contains_key(&gone_ip), "not yet");
    env.ipam = Replica::start(&env.server, env.ports, PluginConf::default());
    assert_eq!(PluginConf::default().resync_interval_minutes, 1);
    until(
        "the deleted pod's FloatingIP released (well before the 1-minute resync)",
        Duration::from_secs(15),
        || async { (!fips(&env.client).await.contains_key(&gone_ip)).then_some(()) },
    )
    .await;
    assert!(fips(&env.client).await.contains_key(&stays_ip));
}

/// A FloatingIP written by the Go original with a wrong-typed field (`policy` as a string)
/// does not stop galaxy-ipam: the recovery skips it (Warning Event `InvalidObject`), its IP is
/// kept out of use, pods still get IPs, the resync runs, and one arriving later through the
/// watch is reported the same way. (Without the decoding guard the recovery's list fails as
/// a whole and galaxy-ipam never becomes active.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_floatingip_is_reported_and_allocation_goes_on() {
    let legacy = |ip: &str| {
        json!({
            "apiVersion": "galaxy.k8s.io/v1alpha1", "kind": "FloatingIP",
            "metadata": {"name": ip},
            "spec": {"key": "sts_default_old_old-0", "attribute": "", "policy": "2",
                     "updateTime": "2020-01-01T00:00:00Z"}
        })
    };
    // The first IP of the pool: the one the allocator would hand out first.
    let env = env_with(SEED_POOL, 2, &[legacy("192.168.64.200")]).await;
    let invalid_event = |name: &'static str| {
        let client = env.client.clone();
        async move {
            until(
                &format!("the InvalidObject Event on {name}"),
                Duration::from_secs(20),
                || async {
                    let list = Api::<Event>::all(client.clone())
                        .list(&ListParams::default())
                        .await
                        .ok()?;
                    list.items.into_iter().find(|e| {
                        e.reason.as_deref() == Some("InvalidObject")
                            && e.involved_object.name.as_deref() == Some(name)
                    })
                },
            )
            .await
        }
    };
    let warning = invalid_event("192.168.64.200").await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert_eq!(warning.involved_object.kind.as_deref(), Some("FloatingIP"));

    create_deployment(&env.client, "web", 1, None).await;
    let pods = running_pods(&env.client, "web", 1).await;
    let ip = pods.values().find_map(annotated_ip).expect("an IP");
    assert!(in_seed_pool(&ip), "{ip}");
    assert_ne!(
        ip, "192.168.64.200",
        "the undecodable record's IP stays out of use"
    );

    let plugin = env.ipam.slot.get().expect("active plugin");
    controller::resync(&plugin).await.expect("resync");

    // One written while galaxy-ipam runs reaches it through the watch.
    raw_floatingips(&env.client)
        .create(
            &PostParams::default(),
            &serde_json::from_value(legacy("192.168.64.230")).expect("object"),
        )
        .await
        .expect("create");
    invalid_event("192.168.64.230").await;
    create_deployment(&env.client, "api", 1, None).await;
    let pods = running_pods(&env.client, "api", 1).await;
    let second = pods.values().find_map(annotated_ip).expect("an IP");
    assert!(
        in_seed_pool(&second) && second != ip && second != "192.168.64.200",
        "{second}"
    );
}
