//! Simulated nodes: registration, leases, node failure and recovery.

use e2e::cluster::{ClusterConfig, NodeSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use crate::common::*;

fn node_ready(n: &Node) -> Option<String> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_failure_and_recovery() {
    let env = Env::start(ClusterConfig {
        nodes: vec![
            NodeSpec::new("n0").with_capacity("tencent.com/vcuda-core", "400"),
            NodeSpec::new("n1"),
        ],
        lease_interval: std::time::Duration::from_millis(200),
        ..Default::default()
    })
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    let n0 = nodes.get("n0").await.unwrap();
    assert_eq!(node_ready(&n0).as_deref(), Some("True"));
    let st = n0.status.clone().unwrap();
    assert_eq!(st.allocatable.unwrap()["tencent.com/vcuda-core"].0, "400");
    assert_eq!(st.addresses.unwrap()[0].address, "192.168.0.2");
    assert_eq!(n0.spec.unwrap().pod_cidr.as_deref(), Some("10.244.0.0/24"));
    // leases are renewed
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let first = wait_for("lease", || {
        let leases = leases.clone();
        async move {
            leases
                .get_opt("n0")
                .await
                .unwrap()
                .and_then(|l| l.spec?.renew_time)
        }
    })
    .await;
    wait_for("lease renewed", || {
        let leases = leases.clone();
        let first = first.clone();
        async move {
            leases
                .get_opt("n0")
                .await
                .unwrap()
                .and_then(|l| l.spec?.renew_time)
                .filter(|t| t.0 > first.0)
                .map(|_| ())
        }
    })
    .await;

    let mut p = simple_pod("victim");
    p["spec"]["nodeName"] = json!("n0");
    env.create_pod(p).await;
    env.wait_pod("default", "victim", "Ready", |p| {
        (cond(p, "Ready").as_deref() == Some("True")).then_some(())
    })
    .await;

    let mut short = simple_pod("short-toleration");
    short["spec"]["nodeName"] = json!("n0");
    short["spec"]["tolerations"] = json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 0}]);
    env.create_pod(short).await;
    env.wait_pod("default", "short-toleration", "Running", |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    // DefaultTolerationSeconds admission
    let victim = env.pods("default").get("victim").await.unwrap();
    let tols = victim.spec.unwrap().tolerations.unwrap();
    assert!(
        tols.iter().any(
            |t| t.key.as_deref() == Some("node.kubernetes.io/unreachable")
                && t.toleration_seconds == Some(300)
        ),
        "{tols:?}"
    );

    env.cluster.set_node_ready("n0", false).await.unwrap();
    // taint-based eviction: tolerationSeconds 0 means evicted at once (it stays Terminating on the dead node)
    env.wait_pod("default", "short-toleration", "evicted", |p| {
        p.metadata.deletion_timestamp.as_ref().map(|_| ())
    })
    .await;
    let n0 = nodes.get("n0").await.unwrap();
    assert_eq!(node_ready(&n0).as_deref(), Some("Unknown"));
    let taints = n0.spec.unwrap().taints.unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t.key == "node.kubernetes.io/unreachable" && t.effect == "NoExecute")
    );
    env.wait_pod("default", "victim", "NotReady", |p| {
        (cond(p, "Ready").as_deref() == Some("False")).then_some(())
    })
    .await;
    // the dead kubelet does not act: deletion and spec changes wait
    env.pods("default")
        .delete("victim", &DeleteParams::default())
        .await
        .unwrap();
    let patch = json!({"spec": {"containers": [{"name": "app", "image": "nginx:9"}]}});
    env.pods("default")
        .patch("victim", &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .unwrap();
    // new pods avoid the unreachable node; once one runs on n1 the kubelet has processed later events
    env.create_pod(simple_pod("newcomer")).await;
    assert_eq!(
        env.wait_pod("default", "newcomer", "Running", |p| (phase(p)
            == "Running")
            .then(|| node_of(p)))
            .await
            .as_deref(),
        Some("n1")
    );
    let victim = env.pods("default").get("victim").await.unwrap();
    assert!(
        victim.metadata.deletion_timestamp.is_some(),
        "still terminating on the dead node"
    );
    assert_eq!(
        victim.status.unwrap().container_statuses.unwrap()[0].restart_count,
        0
    );
    // recovery: conditions back, taints gone, the pending deletion completes
    env.cluster.set_node_ready("n0", true).await.unwrap();
    let n0 = nodes.get("n0").await.unwrap();
    assert_eq!(node_ready(&n0).as_deref(), Some("True"));
    assert!(n0.spec.unwrap().taints.unwrap_or_default().is_empty());
    for name in ["victim", "short-toleration"] {
        wait_for("terminating pods deleted", || {
            let api = env.pods("default");
            async move { api.get_opt(name).await.unwrap().is_none().then_some(()) }
        })
        .await;
    }
    // removing a node deletes its pods
    let mut p = simple_pod("on-n1");
    p["spec"]["nodeName"] = json!("n1");
    env.create_pod(p).await;
    env.cluster.remove_node("n1").await.unwrap();
    assert!(nodes.get_opt("n1").await.unwrap().is_none());
    assert!(
        env.pods("default")
            .get_opt("on-n1")
            .await
            .unwrap()
            .is_none()
    );
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_cluster_adopts_running_pods_and_kubelet_records_events() {
    let env = Env::start(ClusterConfig::with_nodes(1)).await;
    env.create_pod(simple_pod("keeper")).await;
    let before = env
        .wait_pod("default", "keeper", "Running", |p| {
            (cond(p, "Ready").as_deref() == Some("True")).then(|| p.clone())
        })
        .await;
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(env.client.clone(), "default");
    let reasons = wait_for("kubelet events", || {
        let events = events.clone();
        async move {
            let list = events
                .list(&kube::api::ListParams::default().fields("involvedObject.name=keeper"))
                .await
                .unwrap();
            let mut r: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
            r.sort();
            (r.len() >= 4).then_some(r)
        }
    })
    .await;
    assert_eq!(reasons, vec!["Created", "Pulled", "Scheduled", "Started"]);
    // a new simulated cluster against the same API server takes the pod over unchanged
    env.cluster.shutdown().await;
    let again = e2e::cluster::SimCluster::start(env.server.client(), ClusterConfig::with_nodes(1))
        .await
        .unwrap();
    env.create_pod(simple_pod("later")).await;
    env.wait_pod("default", "later", "Running", |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    let after = env.pods("default").get("keeper").await.unwrap();
    let (b, a) = (before.status.unwrap(), after.status.unwrap());
    assert_eq!(a.pod_ip, b.pod_ip);
    assert_eq!(a.container_statuses.as_ref().unwrap()[0].restart_count, 0);
    assert_eq!(
        a.container_statuses.as_ref().unwrap()[0].state,
        b.container_statuses.as_ref().unwrap()[0].state
    );
    let later = env.pods("default").get("later").await.unwrap();
    assert_ne!(
        later.status.unwrap().pod_ip,
        a.pod_ip,
        "the adopted pod's IP stays reserved"
    );
    again.shutdown().await;
}

const CRD: &str = r#"{"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
 "metadata": {"name": "gadgets.example.com"},
 "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
  "versions": [{"name": "v1", "served": true, "storage": true,
    "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}}}]}}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_file_survives_a_sandbox_restart() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    use kube::api::{DynamicObject, PostParams};
    use kube::discovery::ApiResource;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let env = Env::start(ClusterConfig::with_nodes(2)).await;
    env.cluster
        .save_state_on_shutdown(env.server.clone(), state.clone());
    let crd: CustomResourceDefinition = serde_json::from_str(CRD).unwrap();
    Api::<CustomResourceDefinition>::all(env.client.clone())
        .create(&PostParams::default(), &crd)
        .await
        .unwrap();
    let ar = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    };
    let gadgets: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), "default", &ar);
    let g: DynamicObject = serde_json::from_value(json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g1"}, "spec": {"size": 3}})).unwrap();
    let g = wait_for("CRD served", || {
        let gadgets = gadgets.clone();
        let g = g.clone();
        async move { gadgets.create(&PostParams::default(), &g).await.ok() }
    })
    .await;
    env.create_pod(simple_pod("survivor")).await;
    let before = env
        .wait_pod("default", "survivor", "Ready", |p| {
            (cond(p, "Ready").as_deref() == Some("True")).then(|| p.clone())
        })
        .await;
    env.cluster.shutdown().await;
    assert!(state.is_file());

    // a new sandbox from the state file
    let server = e2e::ApiServer::new(e2e::Config {
        graceful_pod_deletion: true,
        ..Default::default()
    });
    let loaded = e2e::cluster::state::load(&server, &state).unwrap();
    assert!(loaded > 5, "{loaded}");
    let cluster =
        e2e::cluster::SimCluster::start_with_server(&server, ClusterConfig::with_nodes(2))
            .await
            .unwrap();
    let client = server.client();
    let gadgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let g2 = gadgets.get("g1").await.unwrap();
    assert_eq!(
        (g2.metadata.uid, g2.data["spec"]["size"].as_i64()),
        (g.metadata.uid, Some(3))
    );
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let after = pods.get("survivor").await.unwrap();
    assert_eq!(after.metadata.uid, before.metadata.uid);
    assert_eq!(
        after.status.as_ref().unwrap().pod_ip,
        before.status.as_ref().unwrap().pod_ip
    );
    // the new kubelet owns it: deletion completes
    pods.delete("survivor", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("survivor deleted", || {
        let pods = pods.clone();
        async move {
            pods.get_opt("survivor")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_in_one_process() {
    // e.g. a local and a remote cluster for burst-kubelet: same node names, separate state
    let local = Env::start(ClusterConfig::with_nodes(1)).await;
    let remote = Env::start(ClusterConfig {
        pod_cidr: e2e::cluster::Cidr::parse("127.1.0.0/16").unwrap(),
        ..ClusterConfig::with_nodes(1)
    })
    .await;
    local.create_pod(simple_pod("p")).await;
    remote.create_pod(simple_pod("p")).await;
    let a = local
        .wait_pod("default", "p", "Running", |p| {
            (phase(p) == "Running").then(|| p.status.clone()?.pod_ip)
        })
        .await
        .unwrap();
    let b = remote
        .wait_pod("default", "p", "Running", |p| {
            (phase(p) == "Running").then(|| p.status.clone()?.pod_ip)
        })
        .await
        .unwrap();
    assert_eq!(a, "10.244.0.2");
    assert_eq!(b, "127.1.0.2", "loopback pod IPs");
    // a loopback pod IP can be listened on
    let l = tokio::net::TcpListener::bind((b.as_str(), 0))
        .await
        .unwrap();
    drop(l);
    local.cluster.shutdown().await;
    remote.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_sandbox_kubectl_and_child_processes() {
    use e2e::cluster::harness::{Sandbox, wait_for as hwait};
    let sb = Sandbox::start(ClusterConfig::with_nodes(2)).await.unwrap();
    let k = sb.kubectl();
    let out = k.ok(&["get", "nodes", "-o", "name"]).await.unwrap();
    assert_eq!(out.lines().count(), 2, "{out}");
    k.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: h, namespace: default}\nspec: {containers: [{name: c, image: nginx}]}\n").await.unwrap();
    let client = sb.client().await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client, "default");
    hwait("pod running", DEADLINE, || {
        let pods = pods.clone();
        async move {
            pods.get("h")
                .await
                .ok()
                .filter(|p| phase(p) == "Running")
                .map(|_| ())
        }
    })
    .await
    .unwrap();
    // a long-running child (here kubectl --watch) against the sandbox: kill -9 and restart
    let mut child = sb
        .spawn(
            &k.bin,
            &[
                "get",
                "nodes",
                "--watch",
                "--cache-dir",
                k.home.join("cache2").to_str().unwrap(),
            ],
        )
        .unwrap();
    assert!(child.is_running());
    let pid = child.id();
    child.kill9().await;
    assert!(!child.is_running());
    child.restart().await.unwrap();
    assert!(child.is_running());
    assert_ne!(child.id(), pid);
    assert_eq!(child.starts, 2);
    child.kill9().await;
    assert!(sb.simulation("node failure").is_some());
    sb.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandbox_binary_as_a_child_process_with_a_state_file() {
    use e2e::cluster::harness::{Sandbox, wait_for as hwait};
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.json");
    let state_s = state.to_str().unwrap();
    let mut sb = Sandbox::start_process(
        env!("CARGO_BIN_EXE_sandbox"),
        &[
            "--nodes",
            "2",
            "--state-file",
            state_s,
            "--node-capacity",
            "tencent.com/vcuda-core=400",
        ],
    )
    .await
    .unwrap();
    assert!(sb.simulation("node failure").is_none());
    let k = sb.kubectl();
    let nodes = k
        .ok(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[*].status.allocatable.tencent\\.com/vcuda-core}",
        ])
        .await
        .unwrap();
    assert_eq!(nodes.trim(), "400 400");
    k.ok(&[
        "create",
        "deployment",
        "web",
        "--image=nginx",
        "--replicas=2",
    ])
    .await
    .unwrap();
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await
        .unwrap();
    let uids = k
        .ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"])
        .await
        .unwrap();
    // Ctrl-C saves the state; the restarted sandbox serves the same objects
    sb.stop_process().await.unwrap();
    assert!(state.is_file());
    sb.restart_process().await.unwrap();
    let k = sb.kubectl();
    let again = k
        .ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.uid}"])
        .await
        .unwrap();
    assert_eq!(again, uids);
    hwait("pods still running", DEADLINE, || {
        let k = k.clone();
        async move {
            let phases = k
                .ok(&["get", "pods", "-o", "jsonpath={.items[*].status.phase}"])
                .await
                .ok()?;
            (phases.trim() == "Running Running").then_some(())
        }
    })
    .await
    .unwrap();
    k.ok(&["scale", "deployment/web", "--replicas=3"])
        .await
        .unwrap();
    k.ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await
        .unwrap();
    sb.stop_process().await.unwrap();
}

fn allocatable(n: &Node, resource: &str) -> Option<String> {
    Some(
        n.status
            .as_ref()?
            .allocatable
            .as_ref()?
            .get(resource)?
            .0
            .clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_resources_written_at_run_time_are_kept_and_scheduled() {
    const VCUDA: &str = "tencent.com/vcuda-core";
    let env = Env::start(ClusterConfig {
        nodes: vec![NodeSpec::new("n0"), NodeSpec::new("n1")],
        lease_interval: std::time::Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let nodes: Api<Node> = Api::all(env.client.clone());
    // a device plugin manager advertises vcuda-core through nodes/status; the same write also
    // changes cpu, which the kubelet owns
    let patch = json!({"status": {
        "capacity": {VCUDA: "400", "cpu": "1"},
        "allocatable": {VCUDA: "400", "cpu": "1"},
    }});
    nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    // the kubelet's next status update puts its cpu back and keeps the extended resource
    let n1 = wait_for("the kubelet to restore cpu", || {
        let nodes = nodes.clone();
        async move {
            let n = nodes.get("n1").await.unwrap();
            (allocatable(&n, "cpu").as_deref() == Some("8")).then_some(n)
        }
    })
    .await;
    assert_eq!(allocatable(&n1, VCUDA).as_deref(), Some("400"));
    let reported = env.cluster.node_resources("n1").unwrap();
    assert_eq!(
        reported.allocatable.get(VCUDA).map(String::as_str),
        Some("400")
    );
    assert_eq!(reported.capacity.get("cpu").map(String::as_str), Some("8"));
    // still there after more heartbeats (lease renewals)
    let leases: Api<Lease> = Api::namespaced(env.client.clone(), "kube-node-lease");
    let renewed = |l: Option<Lease>| l.and_then(|l| l.spec?.renew_time);
    let mut last = renewed(leases.get_opt("n1").await.unwrap());
    for _ in 0..3 {
        let seen = last.clone();
        last = Some(
            wait_for("lease renewal", || {
                let leases = leases.clone();
                let seen = seen.clone();
                async move {
                    renewed(leases.get_opt("n1").await.unwrap())
                        .filter(|t| seen.as_ref().is_none_or(|s| t.0 > s.0))
                }
            })
            .await,
        );
    }
    let n1 = nodes.get("n1").await.unwrap();
    assert_eq!(allocatable(&n1, VCUDA).as_deref(), Some("400"));

    // a pod requesting vcuda-core lands on the only node that has it
    let mut p = simple_pod("gpu");
    p["spec"]["containers"][0]["resources"] =
        json!({"requests": {VCUDA: "100"}, "limits": {VCUDA: "100"}});
    env.create_pod(p).await;
    assert_eq!(env.wait_pod("default", "gpu", "bound", node_of).await, "n1");
    // more than any node has: Pending with the scheduler's usual reason
    let mut p = simple_pod("too-big");
    p["spec"]["containers"][0]["resources"] =
        json!({"requests": {VCUDA: "800"}, "limits": {VCUDA: "800"}});
    env.create_pod(p).await;
    let msg = env
        .wait_pod("default", "too-big", "Unschedulable", unschedulable_message)
        .await;
    assert_eq!(
        msg,
        "0/2 nodes are available: 2 Insufficient tencent.com/vcuda-core."
    );
    let pending = env.pods("default").get("too-big").await.unwrap();
    assert_eq!(phase(&pending), "Pending");
    assert_eq!(node_of(&pending), None);

    // the harness API (what gpu-manager's tests call): n0 gets 800, the pending pod fits there
    env.cluster
        .set_extended_resource("n0", VCUDA, Some("800"), Some("800"))
        .await
        .unwrap();
    assert_eq!(
        env.wait_pod("default", "too-big", "bound", node_of).await,
        "n0"
    );
    // removing it takes it out of the node's status (and the kubelet's state)
    env.cluster
        .set_extended_resource("n1", VCUDA, None, None)
        .await
        .unwrap();
    let n1 = nodes.get("n1").await.unwrap();
    assert_eq!(allocatable(&n1, VCUDA), None);
    wait_for("the kubelet to drop it", || {
        let gone = !env
            .cluster
            .node_resources("n1")
            .unwrap()
            .allocatable
            .contains_key(VCUDA);
        async move { gone.then_some(()) }
    })
    .await;
    assert!(
        env.cluster
            .set_extended_resource("n0", "cpu", Some("2"), Some("2"))
            .await
            .is_err(),
        "cpu is the kubelet's own"
    );
    env.cluster.shutdown().await;
}
