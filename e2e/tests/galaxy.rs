//! galaxy-ipam end to end: the binary and the pinned kubectl against the sandbox over
//! loopback. The simulated scheduler calls the galaxy-ipam binary as its HTTP extender
//! exactly as kube-scheduler does (filter / priority / bind, `nodeCacheCapable`,
//! `managedResources` eni-ip `ignoredByScheduler`, as `manifests/galaxy-ipam/scheduler-config.yaml`);
//! the nodes' InternalIPs are in the seed pool's node subnet (172.21.64.0/20) and they report
//! `tke.cloud.tencent.com/eni-ip` capacity. The CRDs go in with `kubectl apply --server-side`,
//! the seed's ConfigMap (`manifests/galaxy-ipam/floatingip-config.yaml`) with `kubectl apply -f`,
//! and every workload and check goes through kubectl; the REST API is called over plain HTTP.
//! Needs the `galaxy-ipam` binary next to `sandbox` (building the workspace's integration
//! tests builds both).

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use e2e::cluster::{
    Cidr, ClusterConfig, ExtenderConfig, NodeSpec, SchedulerConfig,
    harness::{
        ChildProcess, Kubectl, Sandbox, ScratchDir, http_json, wait_for, workspace_binary,
        workspace_root,
    },
    scheduler::extender,
};
use serde_json::{Value, json};

const ENI_IP: &str = "tke.cloud.tencent.com/eni-ip";
const ARGS: &str = "k8s.v1.cni.galaxy.io/args";
const SEED_RANGE: &str = "192.168.64.200~192.168.64.251";
const DEADLINE: Duration = Duration::from_secs(60);

/// The seed's Deployment as `make run` applies it (the seed's excerpt, completed).
const SEED_DEPLOYMENT: &str = include_str!("../../manifests/galaxy-ipam/example-deployment.yaml");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

struct Setup {
    // Dropped first: galaxy-ipam (kill_on_drop), then the sandbox.
    ipam: ChildProcess,
    kubectl: Kubectl,
    api_port: u16,
    _dir: ScratchDir,
    _sandbox: Sandbox,
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

/// How a test's galaxy-ipam is set up.
struct Opts {
    /// Replaces the seed's range in the pool ConfigMap.
    range: Option<&'static str>,
    /// `resyncInterval` of the config file (minutes).
    resync_minutes: u32,
    /// Capture galaxy-ipam's output in a file (`ChildProcess::logs`) instead of the test's.
    log: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Self {
            range: None,
            resync_minutes: 1,
            log: false,
        }
    }
}

/// Sandbox with 3 nodes in 172.21.64.0/20 scheduling through galaxy-ipam, the CRDs, the
/// seed's ConfigMap (its range replaced by `range` when given) and the galaxy-ipam binary.
async fn setup(range: Option<&'static str>) -> Setup {
    setup_with(Opts {
        range,
        ..Opts::default()
    })
    .await
}

async fn setup_with(opts: Opts) -> Setup {
    let range = opts.range;
    let ext_port = free_port();
    let api_port = free_port();
    let scheduler = SchedulerConfig {
        extenders: vec![extender_config(ext_port)],
        ..Default::default()
    };
    extender::validate(&scheduler.extenders).expect("valid extender config");
    let config = ClusterConfig {
        nodes: (0..3)
            .map(|i| {
                let mut n = NodeSpec::new(format!("node-{i}"));
                n.capacity.insert(ENI_IP.into(), "32".into());
                n
            })
            .collect(),
        scheduler: Some(scheduler),
        node_address_cidr: Cidr::parse("172.21.64.0/20").expect("cidr"),
        ..Default::default()
    };
    let sandbox = Sandbox::start(config).await.expect("sandbox");
    let kubectl = sandbox.kubectl();
    for crd in ["floatingips.galaxy.k8s.io", "pools.galaxy.k8s.io"] {
        let file = workspace_root().join(format!("manifests/crds/{crd}.yaml"));
        kubectl
            .ok(&["apply", "--server-side", "-f", file.to_str().expect("path")])
            .await
            .expect("install CRD");
        kubectl
            .ok(&[
                "wait",
                "--for=condition=Established",
                &format!("crd/{crd}"),
                "--timeout=30s",
            ])
            .await
            .expect("CRD established");
    }
    let cm = workspace_root().join("manifests/galaxy-ipam/floatingip-config.yaml");
    match range {
        None => {
            let out = kubectl
                .ok(&["apply", "-f", cm.to_str().expect("path")])
                .await
                .expect("apply the seed's ConfigMap");
            assert!(out.contains("configmap/floatingip-config created"), "{out}");
        }
        Some(range) => {
            let text = std::fs::read_to_string(&cm).expect("seed ConfigMap");
            assert!(text.contains(SEED_RANGE));
            kubectl
                .apply(&text.replace(SEED_RANGE, range))
                .await
                .expect("apply the ConfigMap");
        }
    }

    // Galaxy's config file: pools from the ConfigMap, the resync interval (1 minute, the
    // shortest, by default).
    let dir = ScratchDir::new("galaxy-e2e").expect("scratch dir");
    let conf = dir.path().join("galaxy-ipam.json");
    std::fs::write(
        &conf,
        json!({"schedule_plugin": {"resyncInterval": opts.resync_minutes}}).to_string(),
    )
    .expect("config");
    let kubeconfig = sandbox.kubeconfig.to_str().expect("path").to_owned();
    let admin = format!("127.0.0.1:{}", free_port());
    let (ext, api) = (ext_port.to_string(), api_port.to_string());
    let bin = workspace_binary("galaxy-ipam");
    let args = [
        "--kubeconfig",
        &kubeconfig,
        "--config",
        conf.to_str().expect("path"),
        "--bind",
        "127.0.0.1",
        "--port",
        &ext,
        "--api-port",
        &api,
        "--admin-address",
        &admin,
        "--leader-elect",
        "false",
    ];
    let ipam = if opts.log {
        ChildProcess::start_logged(&bin, &args, &[], &dir.path().join("galaxy-ipam.log"))
    } else {
        ChildProcess::start(&bin, &args, &[])
    }
    .expect("start galaxy-ipam");
    let mut s = Setup {
        ipam,
        kubectl,
        api_port,
        _dir: dir,
        _sandbox: sandbox,
    };
    wait_active(&mut s).await;
    s
}

/// Waits until galaxy-ipam has recovered and serves (the REST API answers 200, not 503).
async fn wait_active(s: &mut Setup) {
    let port = s.api_port;
    wait_for("galaxy-ipam to serve", DEADLINE, || async {
        let (code, _) = http_json(port, "GET", "/v1/ip", None).await.ok()?;
        (code == 200).then_some(())
    })
    .await
    .expect("galaxy-ipam active");
    assert!(s.ipam.is_running(), "galaxy-ipam exited");
}

// ---------------------------------------------------------------------------------------
// kubectl helpers

async fn get_json(k: &Kubectl, args: &[&str]) -> Option<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    let out = k.ok(&all).await.ok()?;
    serde_json::from_str(&out).ok()
}

/// Pods matching `selector` (`-l`), or all pods of the namespace when empty.
async fn pods(k: &Kubectl, selector: &str) -> Option<Vec<Value>> {
    let v = if selector.is_empty() {
        get_json(k, &["pods"]).await?
    } else {
        get_json(k, &["pods", "-l", selector]).await?
    };
    v["items"].as_array().cloned()
}

/// FloatingIPs by name (= IP).
async fn fips(k: &Kubectl) -> Option<BTreeMap<String, Value>> {
    let v = get_json(k, &["floatingips.galaxy.k8s.io"]).await?;
    Some(
        v["items"]
            .as_array()?
            .iter()
            .map(|f| (name(f), f.clone()))
            .collect(),
    )
}

fn name(o: &Value) -> String {
    o["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn uid(o: &Value) -> String {
    o["metadata"]["uid"].as_str().unwrap_or_default().to_owned()
}

/// The IP of Galaxy's annotation (prefix length stripped).
fn annotated_ip(pod: &Value) -> Option<String> {
    let args: Value = serde_json::from_str(pod["metadata"]["annotations"][ARGS].as_str()?).ok()?;
    let ip = args["common"]["ipinfos"][0]["ip"].as_str()?;
    Some(ip.split('/').next()?.to_owned())
}

fn pod_ip(pod: &Value) -> Option<String> {
    pod["status"]["podIP"].as_str().map(str::to_owned)
}

fn node_of(pod: &Value) -> Option<String> {
    pod["spec"]["nodeName"].as_str().map(str::to_owned)
}

fn running(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
        && pod["status"]["phase"] == "Running"
        && pod_ip(pod).is_some()
        && annotated_ip(pod).is_some()
}

fn live(pod: &Value) -> bool {
    pod["metadata"]["deletionTimestamp"].is_null()
}

/// Waits for exactly `n` live pods matching `selector`, all Running with a Galaxy IP.
async fn running_pods(k: &Kubectl, selector: &str, n: usize) -> BTreeMap<String, Value> {
    wait_for(
        &format!("{n} running pods with {selector}"),
        DEADLINE,
        || async {
            let all: Vec<Value> = pods(k, selector).await?.into_iter().filter(live).collect();
            (all.len() == n && all.iter().all(running))
                .then(|| all.into_iter().map(|p| (name(&p), p)).collect())
        },
    )
    .await
    .expect("running pods")
}

fn in_seed_pool(ip: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().expect("ipv4");
    let o = ip.octets();
    o[..3] == [192, 168, 64] && (200..=251).contains(&o[3])
}

fn eni_pod_template(app: &str, policy: Option<&str>) -> Value {
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

fn deployment(app: &str, replicas: i32, policy: Option<&str>) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": app}},
                 "template": eni_pod_template(app, policy)}
    })
}

fn statefulset(app: &str, replicas: i32, policy: Option<&str>) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": app, "namespace": "default"},
        "spec": {"replicas": replicas, "serviceName": app, "podManagementPolicy": "Parallel",
                 "selector": {"matchLabels": {"app": app}},
                 "template": eni_pod_template(app, policy)}
    })
}

/// `kubectl apply -f -` of objects (one YAML stream of JSON documents).
async fn apply(k: &Kubectl, objects: Vec<Value>) -> String {
    let docs: Vec<String> = objects.iter().map(Value::to_string).collect();
    k.apply(&docs.join("\n---\n")).await.expect("kubectl apply")
}

// ---------------------------------------------------------------------------------------
// tests

/// The seed's Deployment (through `kubectl apply`) gets an IP of the seed's pool: the pod's
/// `k8s.v1.cni.galaxy.io/args` annotation is the seed's byte for byte, the pod runs with that
/// IP, and `kubectl get floatingips.galaxy.k8s.io <ip> -o yaml` shows its key, node and policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_deployment_gets_an_ip_from_the_seed_pool() {
    let s = setup(None).await;
    let k = &s.kubectl;
    let out = k.apply(SEED_DEPLOYMENT).await.expect("apply nnn");
    assert!(out.contains("deployment.apps/nnn created"), "{out}");
    let pods = running_pods(k, "k8s-app=nnn", 1).await;
    let (pod_name, pod) = pods.into_iter().next().expect("pod");
    let ip = annotated_ip(&pod).expect("args annotation");
    assert!(in_seed_pool(&ip), "{ip} is not in the seed's pool");
    assert_eq!(
        pod["metadata"]["annotations"][ARGS].as_str(),
        Some(
            format!(
                r#"{{"common":{{"ipinfos":[{{"ip":"{ip}/24","vlan":0,"gateway":"192.168.64.1","routable_subnet":"172.21.64.0/20"}}]}}}}"#
            )
            .as_str()
        ),
        "the seed's annotation"
    );
    assert_eq!(pod_ip(&pod).as_deref(), Some(ip.as_str()), "pod IP");
    assert_eq!(pod["status"]["podIPs"][0]["ip"].as_str(), Some(ip.as_str()));
    let host_ip = pod["status"]["hostIP"].as_str().expect("hostIP");
    assert!(host_ip.starts_with("172.21.64."), "{host_ip}");
    let node = node_of(&pod).expect("bound");

    // The annotation as kubectl's jsonpath prints it.
    let args = k
        .ok(&[
            "get",
            "pod",
            &pod_name,
            "-o",
            r"jsonpath={.metadata.annotations.k8s\.v1\.cni\.galaxy\.io/args}",
        ])
        .await
        .expect("jsonpath");
    assert!(args.contains(&format!(r#""ip":"{ip}/24""#)), "{args}");

    let yaml = k
        .ok(&["get", "floatingips.galaxy.k8s.io", &ip, "-o", "yaml"])
        .await
        .expect("kubectl get floatingip");
    let fip: serde_yaml::Value = serde_yaml::from_str(&yaml).expect("yaml");
    assert_eq!(fip["apiVersion"].as_str(), Some("galaxy.k8s.io/v1alpha1"));
    assert_eq!(fip["kind"].as_str(), Some("FloatingIP"));
    assert_eq!(fip["metadata"]["name"].as_str(), Some(ip.as_str()));
    assert_eq!(
        fip["spec"]["key"].as_str(),
        Some(format!("dp_default_nnn_{pod_name}").as_str()),
        "{yaml}"
    );
    assert_eq!(fip["spec"]["policy"].as_i64(), Some(1), "immutable: {yaml}");
    let attr: Value =
        serde_json::from_str(fip["spec"]["attribute"].as_str().expect("attribute")).expect("json");
    assert_eq!(attr["NodeName"].as_str(), Some(node.as_str()), "{yaml}");
    assert_eq!(attr["Uid"].as_str(), Some(uid(&pod).as_str()), "{yaml}");
    assert_eq!(fips(k).await.expect("fips").len(), 1);

    // A pod without the resource passes through: no annotation, no FloatingIP.
    k.ok(&["run", "plain", "--image=nginx"]).await.expect("run");
    let plain = wait_for("the plain pod running", DEADLINE, || async {
        let p = get_json(k, &["pod", "plain"]).await?;
        (p["status"]["phase"] == "Running").then_some(p)
    })
    .await
    .expect("plain pod");
    assert!(annotated_ip(&plain).is_none());
    assert!(!pod_ip(&plain).is_some_and(|ip| ip.starts_with("192.168.64.")));
    assert_eq!(fips(k).await.expect("fips").len(), 1);
}

/// `immutable` StatefulSet: `kubectl delete pod web-1` brings web-1 back (new UID) with the
/// same IP; `kubectl scale statefulset web --replicas=1` releases the FloatingIPs of web-1 and
/// web-2 while web-0 keeps its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_immutable_keeps_ips_across_deletion_and_releases_when_scaled_below() {
    let s = setup(None).await;
    let k = &s.kubectl;
    apply(k, vec![statefulset("web", 3, Some("immutable"))]).await;
    let before = running_pods(k, "app=web", 3).await;
    let ips: BTreeMap<String, String> = before
        .iter()
        .map(|(n, p)| (n.clone(), annotated_ip(p).expect("ip")))
        .collect();
    assert_eq!(ips.values().collect::<BTreeSet<_>>().len(), 3, "{ips:?}");
    let records = fips(k).await.expect("fips");
    assert_eq!(records.len(), 3);
    for (pod, ip) in &ips {
        assert!(in_seed_pool(ip));
        assert_eq!(
            records[ip]["spec"]["key"].as_str(),
            Some(format!("sts_default_web_{pod}").as_str())
        );
        assert_eq!(records[ip]["spec"]["policy"], 1);
    }

    let out = k
        .ok(&["delete", "pod", "web-1"])
        .await
        .expect("delete web-1");
    assert!(out.contains(r#"pod "web-1" deleted"#), "{out}");
    let after = wait_for("web-1 recreated and running", DEADLINE, || async {
        let p = get_json(k, &["pod", "web-1"]).await?;
        (uid(&p) != uid(&before["web-1"]) && running(&p)).then_some(p)
    })
    .await
    .expect("web-1 back");
    assert_eq!(
        annotated_ip(&after).as_ref(),
        Some(&ips["web-1"]),
        "same IP"
    );
    assert_eq!(pod_ip(&after).as_ref(), Some(&ips["web-1"]), "pod IP");
    let records = fips(k).await.expect("fips");
    assert_eq!(records.len(), 3);
    let attr: Value = serde_json::from_str(
        records[&ips["web-1"]]["spec"]["attribute"]
            .as_str()
            .expect("attribute"),
    )
    .expect("json");
    assert_eq!(attr["NodeName"].as_str(), node_of(&after).as_deref());
    assert_eq!(attr["Uid"].as_str(), Some(uid(&after).as_str()));

    let out = k
        .ok(&["scale", "statefulset", "web", "--replicas=1"])
        .await
        .expect("scale");
    assert!(out.contains("statefulset.apps/web scaled"), "{out}");
    running_pods(k, "app=web", 1).await;
    let records = wait_for(
        "the FloatingIPs of web-1 and web-2 released",
        DEADLINE,
        || async {
            let records = fips(k).await?;
            (records.len() == 1).then_some(records)
        },
    )
    .await
    .expect("released");
    assert_eq!(
        records[&ips["web-0"]]["spec"]["key"].as_str(),
        Some("sts_default_web_web-0")
    );
    for pod in ["web-1", "web-2"] {
        let out = k
            .run(&["get", "floatingips.galaxy.k8s.io", &ips[pod]], None)
            .await
            .expect("kubectl");
        assert!(
            !out.success && out.stderr.contains("NotFound"),
            "{pod}: {out:?}"
        );
    }
}

/// `never`: `kubectl delete deployment keep` keeps its IPs (re-keyed to the app,
/// `dp_default_keep_`); re-creating it with the same name gets exactly those IPs back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn never_survives_deleting_and_recreating_the_deployment() {
    let s = setup(None).await;
    let k = &s.kubectl;
    apply(k, vec![deployment("keep", 2, Some("never"))]).await;
    let first = running_pods(k, "app=keep", 2).await;
    let ips: BTreeSet<String> = first.values().filter_map(annotated_ip).collect();
    assert_eq!(ips.len(), 2);

    k.ok(&["delete", "deployment", "keep"])
        .await
        .expect("delete deployment");
    wait_for("the keep pods gone", DEADLINE, || async {
        pods(k, "app=keep").await?.is_empty().then_some(())
    })
    .await
    .expect("gone");
    let records = wait_for("the IPs re-keyed to the app", DEADLINE, || async {
        let records = fips(k).await?;
        records
            .values()
            .all(|f| f["spec"]["key"] == "dp_default_keep_")
            .then_some(records)
    })
    .await
    .expect("re-keyed");
    assert_eq!(
        records.keys().cloned().collect::<BTreeSet<_>>(),
        ips,
        "kept"
    );
    for f in records.values() {
        assert_eq!(f["spec"]["policy"], 2, "{f}");
    }

    apply(k, vec![deployment("keep", 2, Some("never"))]).await;
    let second = running_pods(k, "app=keep", 2).await;
    let again: BTreeSet<String> = second.values().filter_map(annotated_ip).collect();
    assert_eq!(again, ips, "the re-created Deployment got its IPs back");
    let records = fips(k).await.expect("fips");
    for (pod, p) in &second {
        assert!(first.values().all(|old| uid(old) != uid(p)), "{pod} is new");
        let ip = annotated_ip(p).expect("ip");
        assert_eq!(
            records[&ip]["spec"]["key"].as_str(),
            Some(format!("dp_default_keep_{pod}").as_str())
        );
    }
}

/// Pool of 2 IPs, a Deployment of 3: the third pod stays Pending, its PodScheduled condition
/// (`kubectl get pod -o jsonpath={.status.conditions}`) is Unschedulable with galaxy-ipam's
/// reason, and it stays so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_exhaustion_leaves_pods_pending_with_the_reason() {
    let s = setup(Some("192.168.64.200~192.168.64.201")).await;
    let k = &s.kubectl;
    apply(k, vec![deployment("big", 3, None)]).await;
    let pending = wait_for("two pods running and one pending", DEADLINE, || async {
        let all: Vec<Value> = pods(k, "app=big").await?.into_iter().filter(live).collect();
        let ran = all.iter().filter(|p| running(p)).count();
        let pending: Vec<&Value> = all
            .iter()
            .filter(|p| p["status"]["phase"] == "Pending" && node_of(p).is_none())
            .collect();
        (all.len() == 3 && ran == 2 && pending.len() == 1).then(|| name(pending[0]))
    })
    .await
    .expect("exhausted");
    let conditions = wait_for("the Unschedulable condition", DEADLINE, || async {
        let out = k
            .ok(&[
                "get",
                "pod",
                &pending,
                "-o",
                "jsonpath={.status.conditions}",
            ])
            .await
            .ok()?;
        out.contains("Unschedulable").then_some(out)
    })
    .await
    .expect("condition");
    let conds: Value = serde_json::from_str(&conditions).expect("conditions JSON");
    let scheduled = conds
        .as_array()
        .expect("array")
        .iter()
        .find(|c| c["type"] == "PodScheduled")
        .expect("PodScheduled");
    assert_eq!(scheduled["status"], "False", "{conditions}");
    assert_eq!(scheduled["reason"], "Unschedulable", "{conditions}");
    let message = scheduled["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("FloatingIPPlugin:NoFIPLeft"),
        "the reason names the cause: {message}"
    );
    assert!(message.starts_with("0/3 nodes are available"), "{message}");
    assert_eq!(fips(k).await.expect("fips").len(), 2);

    // Still Pending after a few scheduler retries (every 2 s): nothing can change.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let pod = get_json(k, &["pod", &pending]).await.expect("pod");
    assert_eq!(pod["status"]["phase"], "Pending");
    assert!(node_of(&pod).is_none(), "bound without an IP");
    assert_eq!(fips(k).await.expect("fips").len(), 2);
}

/// The REST API: `GET /v1/ip` lists the live allocations; a release of a running pod's IP is
/// refused, and once the `never` StatefulSet is deleted (`kubectl delete statefulset`) its IP
/// is releasable and `POST /v1/ip` removes its FloatingIP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_api_lists_and_releases_live_allocations() {
    let s = setup(None).await;
    let k = &s.kubectl;
    let api = s.api_port;
    apply(
        k,
        vec![
            statefulset("db", 2, Some("never")),
            deployment("front", 1, None),
        ],
    )
    .await;
    let db = running_pods(k, "app=db", 2).await;
    let front = running_pods(k, "app=front", 1).await;
    let db_ips: BTreeMap<String, String> = db
        .iter()
        .map(|(n, p)| (n.clone(), annotated_ip(p).expect("ip")))
        .collect();
    let front_ip = annotated_ip(front.values().next().expect("front")).expect("ip");

    // Everything, sorted by IP.
    let (code, all) = http_json(api, "GET", "/v1/ip?size=100", None)
        .await
        .expect("GET /v1/ip");
    assert_eq!(code, 200, "{all}");
    assert_eq!(all["totalElements"], 3, "{all}");
    let listed: Vec<String> = all["content"]
        .as_array()
        .expect("content")
        .iter()
        .filter_map(|i| i["ip"].as_str().map(str::to_owned))
        .collect();
    let mut expected: Vec<String> = db_ips.values().cloned().collect();
    expected.push(front_ip.clone());
    expected.sort_by_key(|ip| ip.parse::<std::net::Ipv4Addr>().expect("ip"));
    assert_eq!(listed, expected, "sorted by IP");
    let records = fips(k).await.expect("fips");
    assert_eq!(
        records.keys().cloned().collect::<BTreeSet<_>>(),
        expected.iter().cloned().collect::<BTreeSet<_>>(),
        "the API lists what the FloatingIPs record"
    );

    let (code, body) = http_json(api, "GET", "/v1/ip?appName=db&namespace=default", None)
        .await
        .expect("GET by app");
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["totalElements"], 2, "{body}");
    for item in body["content"].as_array().expect("content") {
        let pod = item["podName"].as_str().expect("podName");
        assert_eq!(item["ip"].as_str(), Some(db_ips[pod].as_str()), "{item}");
        assert_eq!(item["appName"], "db");
        assert_eq!(item["namespace"], "default");
        assert_eq!(item["appType"], "statefulset");
        assert_eq!(item["policy"], 2);
        assert_eq!(item["status"], "Running", "{item}");
        assert_eq!(item["releasable"], false, "{item}");
    }
    let (_, dp) = http_json(
        api,
        "GET",
        "/v1/ip?appType=deployment&appName=front&namespace=default",
        None,
    )
    .await
    .expect("GET deployment");
    assert_eq!(dp["totalElements"], 1, "{dp}");
    assert_eq!(dp["content"][0]["ip"].as_str(), Some(front_ip.as_str()));

    // Releasing a running pod's IP is refused.
    let item = |pod: &str| {
        json!({"ip": db_ips[pod], "appName": "db", "appType": "statefulset",
               "podName": pod, "namespace": "default"})
    };
    let (code, resp) = http_json(api, "POST", "/v1/ip", Some(json!({"ips": [item("db-0")]})))
        .await
        .expect("POST /v1/ip");
    assert_eq!(code, 202, "{resp}");
    assert_eq!(resp["unreleased"], json!([db_ips["db-0"]]), "{resp}");
    assert!(fips(k).await.expect("fips").contains_key(&db_ips["db-0"]));

    // `never` keeps the IPs when the StatefulSet goes; they become releasable.
    k.ok(&["delete", "statefulset", "db"])
        .await
        .expect("delete sts");
    wait_for("the db pods gone", DEADLINE, || async {
        pods(k, "app=db").await?.is_empty().then_some(())
    })
    .await
    .expect("gone");
    let body = wait_for("db IPs Deleted and releasable", DEADLINE, || async {
        let (_, body) = http_json(api, "GET", "/v1/ip?appName=db&namespace=default", None)
            .await
            .ok()?;
        let items = body["content"].as_array()?;
        (items.len() == 2
            && items
                .iter()
                .all(|i| i["status"] == "Deleted" && i["releasable"] == true))
        .then_some(body)
    })
    .await
    .expect("releasable");
    assert_eq!(body["totalElements"], 2, "{body}");

    let (code, resp) = http_json(api, "POST", "/v1/ip", Some(json!({"ips": [item("db-0")]})))
        .await
        .expect("POST /v1/ip");
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["code"], 200, "{resp}");
    wait_for("db-0's FloatingIP deleted", DEADLINE, || async {
        (!fips(k).await?.contains_key(&db_ips["db-0"])).then_some(())
    })
    .await
    .expect("released");
    let (_, body) = http_json(api, "GET", "/v1/ip?appName=db&namespace=default", None)
        .await
        .expect("GET");
    assert_eq!(body["totalElements"], 1, "{body}");
    assert_eq!(body["content"][0]["podName"], "db-1");
    let records = fips(k).await.expect("fips");
    assert_eq!(
        records.keys().cloned().collect::<BTreeSet<_>>(),
        [db_ips["db-1"].clone(), front_ip].into_iter().collect(),
        "db-1 (never) and front kept"
    );

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

/// The rolling-update deadlock fix through a real rollout: an `immutable` Deployment of 2
/// replicas with `maxSurge: 1, maxUnavailable: 0` holds its 2 IPs when its template changes
/// (`kubectl patch`). Each surge pod borrows a free IP (a FloatingIP labelled
/// `galaxy-ipam.tkestack.io/borrowed`), and when an old pod goes its IP is the surplus and is
/// freed while the borrowed one loses its mark: `kubectl rollout status` completes (Galaxy
/// deadlocked here) and the app ends with 2 IPs, those of its new pods, none borrowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_update_of_an_immutable_deployment_borrows_then_frees_the_surplus() {
    let s = setup(None).await;
    let k = &s.kubectl;
    let mut d = deployment("roll", 2, Some("immutable"));
    d["spec"]["strategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
    apply(k, vec![d]).await;
    let old = running_pods(k, "app=roll", 2).await;

    // A new template: another image, and new pods that turn Ready only after 1.5 s (the
    // simulated kubelet's script annotation), so the surge pod's borrowed IP can be seen.
    let patch = json!({"spec": {"template": {
        "metadata": {"annotations": {"sim.e2e.tkestack.io/ready-delay-ms": "1500"}},
        "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}});
    k.ok(&["patch", "deployment", "roll", "-p", &patch.to_string()])
        .await
        .expect("kubectl patch");
    let borrowed = wait_for("a borrowed FloatingIP", DEADLINE, || async {
        let v = get_json(
            k,
            &[
                "floatingips.galaxy.k8s.io",
                "-l",
                "galaxy-ipam.tkestack.io/borrowed=true",
            ],
        )
        .await?;
        v["items"].as_array()?.first().cloned()
    })
    .await
    .expect("the surge pod borrows an IP");
    let key = borrowed["spec"]["key"].as_str().unwrap_or_default();
    assert!(key.starts_with("dp_default_roll_"), "{borrowed}");
    assert!(
        !old.contains_key(key.trim_start_matches("dp_default_roll_")),
        "borrowed by a new pod: {key}"
    );

    let out = k
        .ok(&["rollout", "status", "deployment/roll", "--timeout=60s"])
        .await
        .expect("the rollout completes");
    assert!(out.contains("successfully rolled out"), "{out}");
    let new = running_pods(k, "app=roll", 2).await;
    assert!(
        new.keys().all(|n| !old.contains_key(n)),
        "only new pods: {:?}",
        new.keys()
    );
    let records = wait_for("the old pods' IPs released", DEADLINE, || async {
        let r = fips(k).await?;
        (r.len() == 2).then_some(r)
    })
    .await
    .expect("two FloatingIPs");
    for (pod, p) in &new {
        let ip = annotated_ip(p).expect("ip");
        let f = records
            .get(&ip)
            .unwrap_or_else(|| panic!("{pod}: no FloatingIP for {ip}"));
        assert_eq!(
            f["spec"]["key"].as_str(),
            Some(format!("dp_default_roll_{pod}").as_str())
        );
        assert!(
            f["metadata"]["labels"]["galaxy-ipam.tkestack.io/borrowed"].is_null(),
            "{f}"
        );
    }
    let (_, metrics) = http_json(s.api_port, "GET", "/metrics", None)
        .await
        .expect("GET /metrics");
    let metrics = metrics.as_str().unwrap_or_default();
    assert!(
        metrics.contains(r#"galaxy_ipam_releases_total{decision="free_surplus"} 2"#),
        "each old pod's IP freed as the surplus: {metrics}"
    );
}

/// A new `floatingip-config` (through `kubectl apply`) whose pools no longer contain an
/// allocated IP is refused: a Warning Event `ConfigRefused` naming the IP shows in `kubectl
/// describe configmap`, galaxy-ipam logs it, and the old pools stay in force (a new pod still
/// gets a seed-pool IP; the running pod keeps its FloatingIP). A valid change then applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_change_dropping_allocated_ips_is_refused_with_an_event() {
    let s = setup_with(Opts {
        log: true,
        ..Opts::default()
    })
    .await;
    let k = &s.kubectl;
    apply(k, vec![deployment("keep", 1, None)]).await;
    let (_, pod) = running_pods(k, "app=keep", 1)
        .await
        .into_iter()
        .next()
        .expect("pod");
    let ip = annotated_ip(&pod).expect("ip");
    assert!(in_seed_pool(&ip));

    let seed = std::fs::read_to_string(
        workspace_root().join("manifests/galaxy-ipam/floatingip-config.yaml"),
    )
    .expect("seed ConfigMap");
    let out = k
        .apply(&seed.replace(SEED_RANGE, "192.168.64.100~192.168.64.199"))
        .await
        .expect("kubectl apply");
    assert!(
        out.contains("configmap/floatingip-config configured"),
        "{out}"
    );
    let described = wait_for("the ConfigRefused event", DEADLINE, || async {
        let out = k
            .ok(&[
                "describe",
                "configmap",
                "-n",
                "kube-system",
                "floatingip-config",
            ])
            .await
            .ok()?;
        out.contains("ConfigRefused").then_some(out)
    })
    .await
    .expect("event");
    let line = described
        .lines()
        .find(|l| l.contains("ConfigRefused"))
        .unwrap_or_default();
    assert!(line.trim_start().starts_with("Warning"), "{described}");
    assert!(
        line.contains("configuration refused") && line.contains(&ip),
        "{described}"
    );
    wait_for("the log line", DEADLINE, || async {
        let logs = s.ipam.logs();
        (logs.contains("pool configuration not applied") && logs.contains(&ip)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {}", s.ipam.logs()));

    // The old pools stay: a new pod gets a seed-pool IP, the running pod keeps its record.
    apply(k, vec![deployment("after", 1, None)]).await;
    let (_, after) = running_pods(k, "app=after", 1)
        .await
        .into_iter()
        .next()
        .expect("pod");
    let after_ip = annotated_ip(&after).expect("ip");
    assert!(
        in_seed_pool(&after_ip),
        "{after_ip} is from the refused pools"
    );
    assert!(fips(k).await.expect("fips").contains_key(&ip));
    let (_, metrics) = http_json(s.api_port, "GET", "/metrics", None)
        .await
        .expect("GET /metrics");
    assert!(
        metrics
            .as_str()
            .unwrap_or_default()
            .contains(r#"galaxy_ipam_config_updates_total{result="refused"} 1"#),
        "{metrics}"
    );

    // A change that keeps every allocated IP applies.
    k.apply(&seed.replace(SEED_RANGE, "192.168.64.100~192.168.64.251"))
        .await
        .expect("kubectl apply");
    wait_for("the new pools applied", DEADLINE, || async {
        let (_, m) = http_json(s.api_port, "GET", "/metrics", None).await.ok()?;
        m.as_str()?
            .contains(r#"galaxy_ipam_config_updates_total{result="applied"} 1"#)
            .then_some(())
    })
    .await
    .expect("applied");
    assert!(s.ipam.logs().contains("pool configuration applied"));
}

/// The Galaxy key of a pod of the reliability test (bare pod or Deployment `crowd`).
fn key_of(pod: &str) -> String {
    if pod.starts_with("bare-") {
        format!("NULL_default_NULL_{pod}")
    } else {
        format!("dp_default_crowd_{pod}")
    }
}

/// Pods bound to a node (scheduled), counted through kubectl.
async fn bound(k: &Kubectl) -> Option<usize> {
    Some(
        pods(k, "")
            .await?
            .iter()
            .filter(|p| node_of(p).is_some())
            .count(),
    )
}

/// 200 pods created at once (a 100-replica Deployment and 100 bare pods, in one `kubectl
/// apply`) on 3 nodes while the galaxy-ipam binary is killed with SIGKILL and restarted 3
/// times during scheduling; while it is down the second time, 10 bare pods that already have
/// an IP are force-deleted, so nothing but a resync can release their IPs. Afterwards every
/// running pod has a unique IP equal to its FloatingIP (key, node and UID), and no FloatingIP
/// points at a missing pod. The config file sets a 60-minute resync interval: the resync that
/// releases those IPs is the one galaxy-ipam runs when it starts (as Galaxy's `wait.Until`
/// does), so the outcome is awaited with a short deadline instead of a periodic tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_with_the_binary_killed_repeatedly_never_double_allocate() {
    const PODS: usize = 200;
    const DELETED: usize = 10;
    let mut s = setup_with(Opts {
        range: Some("192.168.64.10~192.168.64.250"),
        resync_minutes: 60,
        log: false,
    })
    .await;
    let k = s.kubectl.clone();
    let mut objects = vec![deployment("crowd", (PODS / 2) as i32, None)];
    for i in 0..PODS / 2 {
        let mut pod = eni_pod_template("bare", None);
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        pod["metadata"]["name"] = json!(format!("bare-{i}"));
        pod["metadata"]["namespace"] = json!("default");
        objects.push(pod);
    }
    apply(&k, objects).await;

    let mut bound_at_kill = Vec::new();
    let mut deleted: Vec<String> = Vec::new();
    for (round, threshold) in [1usize, 50, 100].into_iter().enumerate() {
        let n = wait_for(
            &format!("{threshold} pods bound before kill {}", round + 1),
            DEADLINE,
            || async {
                let n = bound(&k).await.filter(|n| *n >= threshold)?;
                if round == 1 {
                    // The scheduler takes the pods in any order: wait until enough bare pods
                    // hold an IP to delete while galaxy-ipam is down.
                    let with_ip = pods(&k, "app=bare")
                        .await?
                        .iter()
                        .filter(|p| node_of(p).is_some() && annotated_ip(p).is_some())
                        .count();
                    (with_ip >= DELETED).then_some(n)
                } else {
                    Some(n)
                }
            },
        )
        .await
        .expect("pods bound");
        s.ipam.kill9().await;
        bound_at_kill.push(n);
        if round == 1 {
            // Bare pods holding an IP, force-deleted while no galaxy-ipam runs: it never sees
            // them go, so only a resync can release their IPs.
            let all = pods(&k, "app=bare").await.expect("bare pods");
            deleted = all
                .iter()
                .filter(|p| node_of(p).is_some() && annotated_ip(p).is_some())
                .map(name)
                .take(DELETED)
                .collect();
            let mut args = vec!["delete", "pod", "--grace-period=0", "--force"];
            args.extend(deleted.iter().map(String::as_str));
            k.ok(&args).await.expect("delete bare pods");
        }
        s.ipam.restart().await.expect("restart galaxy-ipam");
        wait_active(&mut s).await;
    }
    println!("pods bound when galaxy-ipam was killed: {bound_at_kill:?}; deleted: {deleted:?}");
    assert!(
        bound_at_kill[0] < PODS,
        "the first kill came after scheduling was over: {bound_at_kill:?}"
    );
    assert_eq!(deleted.len(), DELETED, "bare pods with an IP to delete");
    assert_eq!(s.ipam.starts, 4);

    let live = PODS - DELETED;
    let all = wait_for(
        &format!("{live} pods running"),
        Duration::from_secs(180),
        || async {
            let all = pods(&k, "").await?;
            (all.len() == live && all.iter().all(running)).then_some(all)
        },
    )
    .await
    .expect("all running");

    // Every running pod: a unique IP, equal to its pod IP and to its FloatingIP.
    let records = fips(&k).await.expect("fips");
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for p in &all {
        let pod = name(p);
        let ip = annotated_ip(p).unwrap_or_else(|| panic!("{pod} has no Galaxy IP"));
        assert_eq!(pod_ip(p).as_ref(), Some(&ip), "{pod}: pod IP");
        if let Some(other) = seen.insert(ip.clone(), pod.clone()) {
            panic!("{ip} given to both {other} and {pod}");
        }
        let f = records
            .get(&ip)
            .unwrap_or_else(|| panic!("{pod}'s IP {ip} has no FloatingIP"));
        assert_eq!(
            f["spec"]["key"].as_str(),
            Some(key_of(&pod).as_str()),
            "{ip}"
        );
        let attr: Value = serde_json::from_str(f["spec"]["attribute"].as_str().expect("attribute"))
            .expect("json");
        assert_eq!(attr["NodeName"].as_str(), node_of(p).as_deref(), "{ip}");
        assert_eq!(attr["Uid"].as_str(), Some(uid(p).as_str()), "{ip}");
    }

    // No FloatingIP for a pod that does not exist: the resync at start released them.
    let keys: BTreeSet<String> = all.iter().map(|p| key_of(&name(p))).collect();
    let dangling = |records: &BTreeMap<String, Value>| -> Vec<String> {
        records
            .values()
            .filter(|f| !keys.contains(f["spec"]["key"].as_str().unwrap_or_default()))
            .map(|f| format!("{} {}", name(f), f["spec"]["key"]))
            .collect()
    };
    let left = dangling(&records);
    let records = wait_for(
        "one FloatingIP per running pod (resync at start)",
        Duration::from_secs(20),
        || async {
            let records = fips(&k).await?;
            (records.len() == live && dangling(&records).is_empty()).then_some(records)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}: left {left:?}"));
    let ips: BTreeSet<&String> = records.keys().collect();
    assert_eq!(ips, seen.keys().collect(), "FloatingIPs = pod IPs");
    assert!(s.ipam.is_running(), "galaxy-ipam still running");
}
