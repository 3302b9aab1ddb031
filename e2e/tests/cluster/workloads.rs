//! Workload controllers through kubectl over loopback: Deployment rollout, StatefulSet scale,
//! DaemonSet placement.

use e2e::cluster::{ClusterConfig, NodeSpec};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::api::{Api, ListParams};
use serde_json::Value;

use crate::common::*;

async fn tcp_env(nodes: Vec<NodeSpec>) -> (Env, e2e::RunningServer, Kubectl) {
    let env = Env::start(ClusterConfig {
        nodes,
        ..Default::default()
    })
    .await;
    let running = env
        .server
        .serve_tcp("127.0.0.1:0".parse().unwrap(), true)
        .await
        .expect("serve");
    let k = Kubectl::new(&running);
    (env, running, k)
}

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web}
      annotations: {sim.e2e.tkestack.io/ready-delay-ms: "20"}
    spec:
      containers:
      - name: nginx
        image: nginx:1.25
"#;

async fn pods_with(client: &kube::Client, sel: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), "default")
        .list(&ListParams::default().labels(sel))
        .await
        .unwrap()
        .items
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployment_rollout_through_kubectl() {
    let (env, _running, k) =
        tcp_env((0..3).map(|i| NodeSpec::new(format!("node-{i}"))).collect()).await;
    k.ok_stdin(&["apply", "-f", "-"], Some(DEPLOYMENT)).await;
    let out = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = pods_with(&env.client, "app=web").await;
    assert_eq!(pods.len(), 3);
    let first_hash = pods[0].metadata.labels.as_ref().unwrap()["pod-template-hash"].clone();
    for p in &pods {
        let owner = &p.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("ReplicaSet", Some(true))
        );
        assert_eq!(owner.name, format!("web-{first_hash}"));
    }
    // never more than replicas + maxSurge pods asked for, never fewer than replicas ready during
    // the rollout. The surge bound holds for the ReplicaSets' replicas, as in Kubernetes: a pod
    // the ReplicaSet controller has yet to delete after a scale down may briefly be counted too.
    let watch_client = env.client.clone();
    let observer = tokio::spawn(async move {
        let mut max_asked = 0;
        let mut min_ready = usize::MAX;
        let rs_api: Api<ReplicaSet> = Api::namespaced(watch_client.clone(), "default");
        loop {
            let asked: i32 = rs_api
                .list(&ListParams::default().labels("app=web"))
                .await
                .unwrap()
                .items
                .iter()
                .filter_map(|r| r.spec.as_ref()?.replicas)
                .sum();
            max_asked = max_asked.max(usize::try_from(asked).unwrap());
            let pods = pods_with(&watch_client, "app=web").await;
            let live: Vec<&Pod> = pods
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            min_ready = min_ready.min(
                live.iter()
                    .filter(|p| cond(p, "Ready").as_deref() == Some("True"))
                    .count(),
            );
            let new = live
                .iter()
                .filter(|p| {
                    p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("nginx:1.26")
                })
                .count();
            if new == 3 && pods.len() == 3 {
                return (max_asked, min_ready);
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    k.ok(&["set", "image", "deployment/web", "nginx=nginx:1.26"])
        .await;
    let out = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let (max_asked, min_ready) = tokio::time::timeout(DEADLINE, observer)
        .await
        .unwrap()
        .unwrap();
    assert!(max_asked <= 4, "maxSurge 1 exceeded: {max_asked} replicas");
    assert!(min_ready >= 3, "maxUnavailable 0 violated: {min_ready}");
    let rs: Value =
        serde_json::from_str(&k.ok(&["get", "rs", "-l", "app=web", "-o", "json"]).await).unwrap();
    let mut counts: Vec<(i64, String)> = rs["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["spec"]["replicas"].as_i64().unwrap(),
                r["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(counts, vec![(0, "1".to_string()), (3, "2".to_string())]);
    // rollback reuses the first ReplicaSet as revision 3
    k.ok(&["rollout", "undo", "deployment/web"]).await;
    let out = k
        .ok(&["rollout", "status", "deployment/web", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let pods = pods_with(&env.client, "app=web").await;
    assert!(
        pods.iter()
            .all(|p| p.metadata.labels.as_ref().unwrap()["pod-template-hash"] == first_hash)
    );
    let rs = k
        .ok(&[
            "get",
            "rs",
            &format!("web-{first_hash}"),
            "-o",
            "jsonpath={.metadata.annotations.deployment\\.kubernetes\\.io/revision}",
        ])
        .await;
    assert_eq!(rs.trim(), "3");
    // scale through the scale subresource
    k.ok(&["scale", "deployment/web", "--replicas=1"]).await;
    wait_for("scaled to 1", || {
        let c = env.client.clone();
        async move { (pods_with(&c, "app=web").await.len() == 1).then_some(()) }
    })
    .await;
    // deleting the Deployment cascades to ReplicaSets and pods (API server GC + kubelets)
    k.ok(&["delete", "deployment/web", "--wait=true", "--timeout=30s"])
        .await;
    wait_for("pods and ReplicaSets gone", || {
        let c = env.client.clone();
        async move {
            let rs =
                Api::<k8s_openapi::api::apps::v1::ReplicaSet>::namespaced(c.clone(), "default")
                    .list(&ListParams::default())
                    .await
                    .unwrap();
            (pods_with(&c, "app=web").await.is_empty() && rs.items.is_empty()).then_some(())
        }
    })
    .await;
    env.cluster.shutdown().await;
}

const STATEFULSET: &str = r#"
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: db
  namespace: default
spec:
  serviceName: db
  replicas: 1
  selector:
    matchLabels: {app: db}
  template:
    metadata:
      labels: {app: db}
    spec:
      containers:
      - name: db
        image: postgres:16
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: [ReadWriteOnce]
      resources:
        requests: {storage: 1Gi}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_scale_through_kubectl() {
    let (env, _running, k) = tcp_env(vec![NodeSpec::new("n0"), NodeSpec::new("n1")]).await;
    k.ok_stdin(&["apply", "-f", "-"], Some(STATEFULSET)).await;
    let out = k
        .ok(&["rollout", "status", "statefulset/db", "--timeout=60s"])
        .await;
    assert!(
        out.contains("roll out complete")
            || out.contains("rolling update complete")
            || out.contains("partitioned roll out complete"),
        "{out}"
    );
    k.ok(&["scale", "statefulset/db", "--replicas=3"]).await;
    let names = wait_for("3 ready ordinal pods", || {
        let c = env.client.clone();
        async move {
            let pods = pods_with(&c, "app=db").await;
            let ready: Vec<String> = pods
                .iter()
                .filter(|p| cond(p, "Ready").as_deref() == Some("True"))
                .map(|p| p.metadata.name.clone().unwrap())
                .collect();
            (ready.len() == 3).then_some(ready)
        }
    })
    .await;
    let mut names = names;
    names.sort();
    assert_eq!(names, vec!["db-0", "db-1", "db-2"]);
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "default");
    for i in 0..3 {
        let pvc = wait_for("pvc bound", || {
            let pvcs = pvcs.clone();
            async move {
                pvcs.get_opt(&format!("data-db-{i}"))
                    .await
                    .unwrap()
                    .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
            }
        })
        .await;
        assert!(pvc.spec.unwrap().volume_name.unwrap().starts_with("pvc-"));
    }
    let p0 = env.pods("default").get("db-0").await.unwrap();
    let spec = p0.spec.unwrap();
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("db-0"), Some("db"))
    );
    let out = k
        .ok(&[
            "get",
            "statefulset",
            "db",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ])
        .await;
    assert_eq!(out.trim(), "3");
    // scale down removes the highest ordinals, keeping the claims
    k.ok(&["scale", "statefulset/db", "--replicas=1"]).await;
    wait_for("scaled down to db-0", || {
        let c = env.client.clone();
        async move {
            let names: Vec<String> = pods_with(&c, "app=db")
                .await
                .iter()
                .map(|p| p.metadata.name.clone().unwrap())
                .collect();
            (names == vec!["db-0".to_string()]).then_some(())
        }
    })
    .await;
    assert!(
        pvcs.get_opt("data-db-2").await.unwrap().is_some(),
        "claims are retained"
    );
    // rolling update: pods are recreated with the new template, keeping their names and claims
    k.ok(&["scale", "statefulset/db", "--replicas=2"]).await;
    k.ok(&["rollout", "status", "statefulset/db", "--timeout=60s"])
        .await;
    let old_uid = env.pods("default").get("db-0").await.unwrap().metadata.uid;
    k.ok(&["set", "image", "statefulset/db", "db=postgres:17"])
        .await;
    let out = k
        .ok(&["rollout", "status", "statefulset/db", "--timeout=60s"])
        .await;
    assert!(out.contains("complete"), "{out}");
    let p0 = env.pods("default").get("db-0").await.unwrap();
    assert_ne!(p0.metadata.uid, old_uid);
    assert_eq!(
        p0.spec.unwrap().containers[0].image.as_deref(),
        Some("postgres:17")
    );
    env.cluster.shutdown().await;
}

const DAEMONSET: &str = r#"
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: default
spec:
  selector:
    matchLabels: {app: agent}
  template:
    metadata:
      labels: {app: agent}
    spec:
      containers:
      - name: agent
        image: agent:1
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemonset_one_pod_per_eligible_node() {
    let (env, _running, k) = tcp_env(vec![
        NodeSpec::new("n0"),
        NodeSpec::new("n1"),
        NodeSpec::new("virtual").with_taint("virtual-kubelet.io/provider", "burst", "NoSchedule"),
    ])
    .await;
    k.ok_stdin(&["apply", "-f", "-"], Some(DAEMONSET)).await;
    let out = k
        .ok(&["rollout", "status", "daemonset/agent", "--timeout=60s"])
        .await;
    assert!(out.contains("successfully rolled out"), "{out}");
    let mut nodes: Vec<String> = pods_with(&env.client, "app=agent")
        .await
        .iter()
        .map(|p| node_of(p).unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec!["n0", "n1"], "no pod on the tainted node");
    env.cluster.add_node(NodeSpec::new("n2")).await.unwrap();
    wait_for("pod on the new node", || {
        let c = env.client.clone();
        async move {
            pods_with(&c, "app=agent")
                .await
                .iter()
                .any(|p| node_of(p).as_deref() == Some("n2") && phase(p) == "Running")
                .then_some(())
        }
    })
    .await;
    env.cluster.shutdown().await;
}

/// Scale smoke (run with `--ignored`): a 1,000-replica Deployment on 10 nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn thousand_pods_scale_smoke() {
    let env = Env::start(ClusterConfig {
        kubelet_events: false,
        ..ClusterConfig::with_nodes(10)
    })
    .await;
    let start = std::time::Instant::now();
    let d: k8s_openapi::api::apps::v1::Deployment =
        serde_yaml::from_str(&DEPLOYMENT.replace("replicas: 3", "replicas: 1000")).unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), "default")
        .create(&Default::default(), &d)
        .await
        .unwrap();
    let srv = env.server.clone();
    let progress = tokio::spawn(async move {
        loop {
            let (pods, _) = srv.store().list(
                &e2e::registry::GroupResource::new("", "pods"),
                Some("default"),
            );
            let bound = pods
                .iter()
                .filter(|p| p.pointer("/spec/nodeName").is_some())
                .count();
            let running = pods
                .iter()
                .filter(|p| p.pointer("/status/phase").and_then(|v| v.as_str()) == Some("Running"))
                .count();
            eprintln!(
                "{:>6.1}s pods {} bound {} running {}",
                start.elapsed().as_secs_f64(),
                pods.len(),
                bound,
                running
            );
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        }
    });
    let deployments =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), "default");
    e2e::cluster::harness::wait_for("1000 ready", std::time::Duration::from_secs(300), || {
        let deployments = deployments.clone();
        async move {
            (deployments
                .get("web")
                .await
                .unwrap()
                .status?
                .ready_replicas?
                == 1000)
                .then_some(())
        }
    })
    .await
    .unwrap();
    eprintln!("1000 pods ready in {:?}", start.elapsed());
    progress.abort();
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recreate_strategy_replaces_all_pods_at_once() {
    let env = Env::start(ClusterConfig::with_nodes(2)).await;
    let yaml = DEPLOYMENT.replace(
        "type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}",
        "type: Recreate",
    );
    assert!(yaml.contains("Recreate"));
    let d: k8s_openapi::api::apps::v1::Deployment = serde_yaml::from_str(&yaml).unwrap();
    let api =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), "default");
    api.create(&Default::default(), &d).await.unwrap();
    let done = |image: &'static str| {
        let c = env.client.clone();
        move || {
            let c = c.clone();
            async move {
                let pods = pods_with(&c, "app=web").await;
                (pods.len() == 3
                    && pods.iter().all(|p| {
                        cond(p, "Ready").as_deref() == Some("True")
                            && p.spec.as_ref().unwrap().containers[0].image.as_deref()
                                == Some(image)
                    }))
                .then_some(())
            }
        }
    };
    wait_for("3 ready", done("nginx:1.25")).await;
    // watch that old and new pods never coexist
    let c = env.client.clone();
    let mixed = tokio::spawn(async move {
        loop {
            let pods = pods_with(&c, "app=web").await;
            let images: std::collections::BTreeSet<String> = pods
                .iter()
                .map(|p| {
                    p.spec.as_ref().unwrap().containers[0]
                        .image
                        .clone()
                        .unwrap()
                })
                .collect();
            if images.len() > 1 {
                return true;
            }
            if pods.len() == 3
                && images.contains("nginx:1.26")
                && pods
                    .iter()
                    .all(|p| cond(p, "Ready").as_deref() == Some("True"))
            {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let patch = serde_json::json!({"spec": {"template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:1.26"}]}}}});
    api.patch(
        "web",
        &Default::default(),
        &kube::api::Patch::Strategic(&patch),
    )
    .await
    .unwrap();
    wait_for("recreated", done("nginx:1.26")).await;
    assert!(
        !tokio::time::timeout(DEADLINE, mixed)
            .await
            .unwrap()
            .unwrap(),
        "old and new pods coexisted"
    );
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_endpoints_follow_ready_pods_on_loopback_ips() {
    let env = Env::start(ClusterConfig {
        pod_cidr: e2e::cluster::Cidr::parse("127.10.0.0/16").unwrap(),
        ..ClusterConfig::with_nodes(2)
    })
    .await;
    let mut d: k8s_openapi::api::apps::v1::Deployment =
        serde_yaml::from_str(&DEPLOYMENT.replace("replicas: 3", "replicas: 2")).unwrap();
    d.spec
        .as_mut()
        .unwrap()
        .template
        .spec
        .as_mut()
        .unwrap()
        .containers[0]
        .ports = Some(vec![
        serde_json::from_value(serde_json::json!({"name": "http", "containerPort": 8080})).unwrap(),
    ]);
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), "default")
        .create(&Default::default(), &d)
        .await
        .unwrap();
    let svc: k8s_openapi::api::core::v1::Service =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web"}, "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": "http"}]}})).unwrap();
    Api::<k8s_openapi::api::core::v1::Service>::namespaced(env.client.clone(), "default")
        .create(&Default::default(), &svc)
        .await
        .unwrap();
    let eps: Api<k8s_openapi::api::core::v1::Endpoints> =
        Api::namespaced(env.client.clone(), "default");
    let addrs = wait_for("2 ready endpoints", || {
        let eps = eps.clone();
        async move {
            let e = eps.get_opt("web").await.unwrap()?;
            let s = e.subsets?.first()?.clone();
            let a: Vec<(String, i32)> = s
                .addresses?
                .iter()
                .map(|a| (a.ip.clone(), s.ports.as_ref().unwrap()[0].port))
                .collect();
            (a.len() == 2).then_some(a)
        }
    })
    .await;
    assert!(
        addrs
            .iter()
            .all(|(ip, port)| ip.starts_with("127.10.") && *port == 8080),
        "{addrs:?}"
    );
    // a test server can stand in for the pod: listen on the endpoint's loopback IP
    let (ip, _) = &addrs[0];
    let l = tokio::net::TcpListener::bind((ip.as_str(), 0))
        .await
        .unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"hello")
            .await
            .unwrap();
    });
    let mut c = tokio::net::TcpStream::connect((ip.as_str(), port))
        .await
        .unwrap();
    let mut buf = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut c, &mut buf)
        .await
        .unwrap();
    assert_eq!(buf, "hello");
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(env.client.clone(), "default");
    let s = slices.get("web-sim").await.unwrap();
    assert_eq!(
        s.metadata.labels.unwrap()["kubernetes.io/service-name"],
        "web"
    );
    assert_eq!(s.endpoints.len(), 2);
    // scale to 1: the endpoints follow
    let deploys =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), "default");
    deploys
        .patch(
            "web",
            &Default::default(),
            &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
        )
        .await
        .unwrap();
    wait_for("1 endpoint", || {
        let eps = eps.clone();
        async move {
            let e = eps.get_opt("web").await.unwrap()?;
            let n: usize = e
                .subsets
                .unwrap_or_default()
                .iter()
                .map(|s| s.addresses.as_ref().map_or(0, Vec::len))
                .sum();
            (n == 1).then_some(())
        }
    })
    .await;
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn converges_despite_api_faults() {
    let env = Env::start(ClusterConfig::with_nodes(3)).await;
    let faults = env.server.faults();
    // failed pod writes (creates, bindings, status), conflicting ReplicaSet writes
    faults.fail_writes("pods", 4, 500);
    faults.fail_writes("replicasets", 3, 409);
    let d: k8s_openapi::api::apps::v1::Deployment =
        serde_yaml::from_str(&DEPLOYMENT.replace("replicas: 3", "replicas: 6")).unwrap();
    let api =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(env.client.clone(), "default");
    api.create(&Default::default(), &d).await.unwrap();
    // dropped watches and a compaction (410 Gone on re-watch) in the middle
    wait_for("some pods", || {
        let c = env.client.clone();
        async move { (!pods_with(&c, "app=web").await.is_empty()).then_some(()) }
    })
    .await;
    faults.compact();
    faults.close_watches();
    let ready = wait_for("6 ready pods", || {
        let c = env.client.clone();
        async move {
            let pods = pods_with(&c, "app=web").await;
            let ready = pods
                .iter()
                .filter(|p| cond(p, "Ready").as_deref() == Some("True"))
                .count();
            (ready == 6).then_some(pods.len())
        }
    })
    .await;
    assert_eq!(ready, 6, "no extra pods");
    let d = wait_for("status", || {
        let api = api.clone();
        async move {
            api.get("web")
                .await
                .ok()
                .filter(|d| d.status.as_ref().and_then(|s| s.available_replicas) == Some(6))
        }
    })
    .await;
    let st = d.status.unwrap();
    assert_eq!(st.updated_replicas, Some(6));
    assert_eq!(
        st.collision_count.unwrap_or(0),
        0,
        "a failed create is not a hash collision"
    );
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_status_fails_after_the_progress_deadline() {
    let (env, _running, k) = tcp_env(vec![NodeSpec::new("n0")]).await;
    let yaml = DEPLOYMENT
        .replace("replicas: 3", "replicas: 1\n  progressDeadlineSeconds: 1")
        .replace(
            "sim.e2e.tkestack.io/ready-delay-ms: \"20\"",
            "sim.e2e.tkestack.io/image-pull-error: \"true\"",
        );
    k.ok_stdin(&["apply", "-f", "-"], Some(&yaml)).await;
    let out = k
        .run_stdin(
            &["rollout", "status", "deployment/web", "--timeout=30s"],
            None,
        )
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exceeded its progress deadline"), "{err}");
    let pod = &pods_with(&env.client, "app=web").await[0];
    let w = pod
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0]
        .state
        .as_ref()
        .unwrap()
        .waiting
        .clone()
        .unwrap();
    assert_eq!(w.reason.as_deref(), Some("ErrImagePull"));
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statefulset_pvc_retention_policy_delete() {
    let env = Env::start(ClusterConfig::with_nodes(2)).await;
    let yaml = STATEFULSET.replace("replicas: 1", "replicas: 2\n  persistentVolumeClaimRetentionPolicy: {whenDeleted: Delete, whenScaled: Delete}");
    let sts: k8s_openapi::api::apps::v1::StatefulSet = serde_yaml::from_str(&yaml).unwrap();
    let api =
        Api::<k8s_openapi::api::apps::v1::StatefulSet>::namespaced(env.client.clone(), "default");
    api.create(&Default::default(), &sts).await.unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(env.client.clone(), "default");
    let claims = |n: usize| {
        let pvcs = pvcs.clone();
        move || {
            let pvcs = pvcs.clone();
            async move {
                let mut names: Vec<String> = pvcs
                    .list(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .iter()
                    .map(|p| p.metadata.name.clone().unwrap())
                    .collect();
                names.sort();
                (names.len() == n).then_some(names)
            }
        }
    };
    assert_eq!(
        wait_for("2 claims", claims(2)).await,
        vec!["data-db-0", "data-db-1"]
    );
    wait_for("2 ready", || {
        let c = env.client.clone();
        async move {
            (pods_with(&c, "app=db")
                .await
                .iter()
                .filter(|p| cond(p, "Ready").as_deref() == Some("True"))
                .count()
                == 2)
                .then_some(())
        }
    })
    .await;
    // whenScaled: Delete — the claim of the removed ordinal goes with its pod
    api.patch(
        "db",
        &Default::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"replicas": 1}})),
    )
    .await
    .unwrap();
    assert_eq!(
        wait_for("claim of db-1 deleted", claims(1)).await,
        vec!["data-db-0"]
    );
    // whenDeleted: Delete — the remaining claims go with the StatefulSet
    api.delete("db", &Default::default()).await.unwrap();
    wait_for("all claims deleted", claims(0)).await;
    env.cluster.shutdown().await;
}
