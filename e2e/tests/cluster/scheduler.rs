//! The simulated scheduler: default filters and HTTP extenders.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::State;
use axum::routing::post;
use e2e::cluster::scheduler::extender::ManagedResource;
use e2e::cluster::{ClusterConfig, ExtenderConfig, NodeSpec, SchedulerConfig};
use k8s_openapi::api::core::v1::{Binding, Pod};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::common::*;

fn cluster(nodes: Vec<NodeSpec>, extenders: Vec<ExtenderConfig>) -> ClusterConfig {
    ClusterConfig {
        nodes,
        scheduler: Some(SchedulerConfig {
            extenders,
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_filters_and_retry_when_a_node_appears() {
    let env = Env::start(cluster(
        vec![
            NodeSpec::new("zone-a").with_label("zone", "a"),
            NodeSpec::new("gpu")
                .with_capacity("tencent.com/vcuda-core", "200")
                .with_taint("dedicated", "gpu", "NoSchedule"),
            NodeSpec::new("plain"),
        ],
        vec![],
    ))
    .await;
    let mut p = simple_pod("by-selector");
    p["spec"]["nodeSelector"] = json!({"zone": "a"});
    env.create_pod(p).await;
    let mut p = simple_pod("gpu-tolerated");
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"tencent.com/vcuda-core": "100"}});
    p["spec"]["tolerations"] =
        json!([{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]);
    env.create_pod(p).await;
    let mut p = simple_pod("gpu-untolerated");
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"tencent.com/vcuda-core": "100"}});
    env.create_pod(p).await;
    let mut p = simple_pod("eni");
    p["spec"]["containers"][0]["resources"] = json!({"requests": {"tke.cloud.tencent.com/eni-ip": "1"}, "limits": {"tke.cloud.tencent.com/eni-ip": "1"}});
    env.create_pod(p).await;

    assert_eq!(
        env.wait_pod("default", "by-selector", "bound", node_of)
            .await,
        "zone-a"
    );
    assert_eq!(
        env.wait_pod("default", "gpu-tolerated", "bound", node_of)
            .await,
        "gpu"
    );
    let msg = env
        .wait_pod(
            "default",
            "gpu-untolerated",
            "Unschedulable",
            unschedulable_message,
        )
        .await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient tencent.com/vcuda-core."
    );
    assert!(
        env.wait_pod("default", "eni", "unschedulable", |p| cond(
            p,
            "PodScheduled"
        )
        .filter(|s| s == "False"))
            .await
            == "False"
    );

    // a node with the resources appears: both pending pods are retried and bound
    env.cluster
        .add_node(
            NodeSpec::new("more")
                .with_capacity("tencent.com/vcuda-core", "100")
                .with_capacity("tke.cloud.tencent.com/eni-ip", "4"),
        )
        .await
        .unwrap();
    assert_eq!(
        env.wait_pod("default", "gpu-untolerated", "bound", node_of)
            .await,
        "more"
    );
    assert_eq!(
        env.wait_pod("default", "eni", "bound", node_of).await,
        "more"
    );
    // the kubelet then runs them
    env.wait_pod("default", "eni", "Running", |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    // other scheduler names are left alone
    let mut p = simple_pod("other-scheduler");
    p["spec"]["schedulerName"] = json!("gpu-admission");
    env.create_pod(p).await;
    let mut p = simple_pod("barrier");
    p["spec"]["nodeSelector"] = json!({"zone": "a"});
    env.create_pod(p).await;
    env.wait_pod("default", "barrier", "bound", node_of).await;
    let other = env.pods("default").get("other-scheduler").await.unwrap();
    assert_eq!(node_of(&other), None);
    env.cluster.shutdown().await;
}

/// A test extender: records the arguments of each verb and answers as configured.
#[derive(Default)]
struct Ext {
    calls: Mutex<Vec<(String, Value)>>,
    /// Node names the filter rejects.
    reject: Vec<String>,
    /// Node that gets the top priority.
    favourite: String,
    /// Answer every verb with this error.
    error: Option<String>,
    client: Mutex<Option<kube::Client>>,
}

async fn ext_handler(
    State(ext): State<Arc<Ext>>,
    axum::extract::Path(verb): axum::extract::Path<String>,
    Json(args): Json<Value>,
) -> Json<Value> {
    ext.calls.lock().unwrap().push((verb.clone(), args.clone()));
    if let Some(e) = &ext.error {
        return Json(json!({"error": e}));
    }
    let cache_capable = args.get("nodenames").is_some();
    let names: Vec<String> = if cache_capable {
        serde_json::from_value(args["nodenames"].clone()).unwrap()
    } else {
        args["nodes"]["items"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|n| n["metadata"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    match verb.as_str() {
        "filter" => {
            let keep: Vec<&String> = names.iter().filter(|n| !ext.reject.contains(n)).collect();
            let failed: serde_json::Map<String, Value> = names
                .iter()
                .filter(|n| ext.reject.contains(n))
                .map(|n| (n.clone(), json!("no IP left on this node")))
                .collect();
            if cache_capable {
                Json(json!({"nodenames": keep, "failedNodes": failed, "error": ""}))
            } else {
                let items: Vec<Value> = args["nodes"]["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|n| keep.iter().any(|k| n["metadata"]["name"] == **k))
                    .cloned()
                    .collect();
                Json(json!({"nodes": {"metadata": {}, "items": items}, "failedNodes": failed}))
            }
        }
        "prioritize" => Json(json!(
            names
                .iter()
                .map(|n| json!({"host": n, "score": if *n == ext.favourite { 10 } else { 0 }}))
                .collect::<Vec<_>>()
        )),
        "bind" => {
            let client = ext.client.lock().unwrap().clone().unwrap();
            let api: Api<Pod> = Api::namespaced(client, args["podNamespace"].as_str().unwrap());
            let binding: Binding = serde_json::from_value(json!({
                "metadata": {"name": args["podName"], "annotations": {"bound-by": "test-extender"}},
                "target": {"kind": "Node", "name": args["node"], "apiVersion": "v1"}
            }))
            .unwrap();
            match api
                .create_subresource::<Binding, Value>(
                    "binding",
                    args["podName"].as_str().unwrap(),
                    &PostParams::default(),
                    &binding,
                )
                .await
            {
                Ok(_) => Json(json!({})),
                Err(e) => Json(json!({"error": e.to_string()})),
            }
        }
        _ => Json(json!({"error": "unknown verb"})),
    }
}

async fn serve_ext(ext: Arc<Ext>) -> String {
    let app = axum::Router::new()
        .route("/scheduler/{verb}", post(ext_handler))
        .with_state(ext);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/scheduler")
}

async fn extender_round_trip(node_cache_capable: bool) {
    let ext = Arc::new(Ext {
        reject: vec!["n0".into()],
        favourite: "n2".into(),
        ..Default::default()
    });
    let url = serve_ext(ext.clone()).await;
    let cfg = ExtenderConfig {
        url_prefix: url,
        filter_verb: "filter".into(),
        prioritize_verb: "prioritize".into(),
        bind_verb: "bind".into(),
        weight: 5,
        node_cache_capable,
        http_timeout: Some("2s".into()),
        ..Default::default()
    };
    let env = Env::start(cluster(
        vec![
            NodeSpec::new("n0"),
            NodeSpec::new("n1"),
            NodeSpec::new("n2"),
        ],
        vec![cfg],
    ))
    .await;
    *ext.client.lock().unwrap() = Some(env.client.clone());
    // n1 is emptier (least-allocated prefers it) but the extender's priority × weight wins
    let mut filler = simple_pod("filler");
    filler["spec"]["nodeName"] = json!("n2");
    filler["spec"]["containers"][0]["resources"] =
        json!({"requests": {"cpu": "4", "memory": "8Gi"}});
    env.create_pod(filler).await;
    env.create_pod(simple_pod("p")).await;
    assert_eq!(env.wait_pod("default", "p", "bound", node_of).await, "n2");
    let p = env.pods("default").get("p").await.unwrap();
    assert_eq!(
        p.metadata
            .annotations
            .unwrap_or_default()
            .get("bound-by")
            .map(String::as_str),
        Some("test-extender"),
        "the extender bound the pod"
    );
    let calls = ext.calls.lock().unwrap().clone();
    let verbs: Vec<&str> = calls.iter().map(|(v, _)| v.as_str()).collect();
    assert_eq!(verbs, vec!["filter", "prioritize", "bind"]);
    let filter_args = &calls[0].1;
    assert_eq!(filter_args["pod"]["metadata"]["name"], "p");
    if node_cache_capable {
        assert_eq!(filter_args["nodenames"], json!(["n0", "n1", "n2"]));
        assert!(filter_args.get("nodes").is_none());
        assert_eq!(
            calls[1].1["nodenames"],
            json!(["n1", "n2"]),
            "prioritize gets the filtered nodes"
        );
    } else {
        assert!(filter_args.get("nodenames").is_none());
        assert_eq!(filter_args["nodes"]["items"].as_array().unwrap().len(), 3);
        assert_eq!(
            filter_args["nodes"]["items"][0]["status"]["capacity"]["cpu"], "8",
            "full Node objects"
        );
        assert_eq!(calls[1].1["nodes"]["items"].as_array().unwrap().len(), 2);
    }
    let bind = &calls[2].1;
    assert_eq!(
        (
            bind["podName"].as_str(),
            bind["podNamespace"].as_str(),
            bind["node"].as_str()
        ),
        (Some("p"), Some("default"), Some("n2"))
    );
    assert_eq!(bind["podUID"], json!(p.metadata.uid));
    // a pod only n0 could take is unschedulable with the extender's reason
    let mut only_n0 = simple_pod("only-n0");
    only_n0["spec"]["nodeSelector"] = json!({"kubernetes.io/hostname": "n0"});
    env.create_pod(only_n0).await;
    let msg = env
        .wait_pod("default", "only-n0", "unschedulable", |p| {
            p.status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")
                .and_then(|c| c.message.clone())
        })
        .await;
    assert_eq!(
        msg,
        "0/3 nodes are available: 1 no IP left on this node, 2 node(s) didn't match Pod's node affinity/selector."
    );
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_filter_prioritize_bind_node_cache_capable() {
    extender_round_trip(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extender_filter_prioritize_bind_with_full_nodes() {
    extender_round_trip(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erroring_extenders_ignorable_or_not_and_managed_resources() {
    let broken = Arc::new(Ext {
        error: Some("extender is broken".into()),
        ..Default::default()
    });
    let broken_url = serve_ext(broken.clone()).await;
    let eni = Arc::new(Ext {
        favourite: "n1".into(),
        ..Default::default()
    });
    let eni_url = serve_ext(eni.clone()).await;
    let extenders = vec![
        // ignorable and failing: skipped
        ExtenderConfig {
            url_prefix: broken_url.clone(),
            filter_verb: "filter".into(),
            ignorable: true,
            ..Default::default()
        },
        // interested in eni-ip only, which the scheduler itself then ignores
        ExtenderConfig {
            url_prefix: eni_url,
            filter_verb: "filter".into(),
            prioritize_verb: "prioritize".into(),
            weight: 1,
            node_cache_capable: true,
            managed_resources: vec![ManagedResource {
                name: "tke.cloud.tencent.com/eni-ip".into(),
                ignored_by_scheduler: true,
            }],
            ..Default::default()
        },
        // unreachable, not ignorable, but only interested in vcuda-core
        ExtenderConfig {
            url_prefix: "http://127.0.0.1:9/unreachable".into(),
            filter_verb: "filter".into(),
            managed_resources: vec![ManagedResource {
                name: "tencent.com/vcuda-core".into(),
                ignored_by_scheduler: false,
            }],
            ..Default::default()
        },
    ];
    let env = Env::start(cluster(
        vec![
            NodeSpec::new("n0"),
            NodeSpec::new("n1").with_capacity("tencent.com/vcuda-core", "100"),
        ],
        extenders,
    ))
    .await;
    env.create_pod(simple_pod("plain")).await;
    env.wait_pod("default", "plain", "bound", node_of).await;
    let mut p = simple_pod("eni");
    p["spec"]["containers"][0]["resources"] =
        json!({"limits": {"tke.cloud.tencent.com/eni-ip": "1"}});
    env.create_pod(p).await;
    assert_eq!(
        env.wait_pod("default", "eni", "bound", node_of).await,
        "n1",
        "eni-ip is ignored by the fit check and the extender prefers n1"
    );
    let eni_calls: Vec<String> = eni
        .calls
        .lock()
        .unwrap()
        .iter()
        .map(|(v, a)| format!("{v}:{}", a["pod"]["metadata"]["name"].as_str().unwrap()))
        .collect();
    assert_eq!(
        eni_calls,
        vec!["filter:eni", "prioritize:eni"],
        "not called for pods without the managed resource"
    );
    assert!(
        broken.calls.lock().unwrap().len() >= 2,
        "the ignorable extender was called"
    );
    // the non-ignorable extender fails: SchedulerError
    let mut p = simple_pod("gpu");
    p["spec"]["containers"][0]["resources"] = json!({"limits": {"tencent.com/vcuda-core": "50"}});
    env.create_pod(p).await;
    let (reason, msg) = env
        .wait_pod("default", "gpu", "scheduler error", |p| {
            let c = p
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
                .clone();
            Some((c.reason.unwrap_or_default(), c.message.unwrap_or_default()))
        })
        .await;
    assert_eq!(reason, "SchedulerError");
    assert!(msg.contains("127.0.0.1:9/unreachable/filter"), "{msg}");
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_scheduler_configuration_file_drives_the_extenders() {
    let ext = Arc::new(Ext {
        reject: vec!["n1".into()],
        ..Default::default()
    });
    let url = serve_ext(ext.clone()).await;
    let yaml = format!(
        "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nprofiles:\n- schedulerName: default-scheduler\n- schedulerName: galaxy\nextenders:\n- urlPrefix: {url}\n  filterVerb: filter\n  nodeCacheCapable: true\n  httpTimeout: 3s\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sched.yaml");
    std::fs::write(&path, yaml).unwrap();
    let sc = SchedulerConfig::from_file(&path).unwrap();
    let env = Env::start(ClusterConfig {
        nodes: vec![NodeSpec::new("n0"), NodeSpec::new("n1")],
        scheduler: Some(sc),
        ..Default::default()
    })
    .await;
    let mut p = simple_pod("g");
    p["spec"]["schedulerName"] = json!("galaxy");
    env.create_pod(p).await;
    assert_eq!(env.wait_pod("default", "g", "bound", node_of).await, "n0");
    assert_eq!(ext.calls.lock().unwrap().len(), 1);
    env.cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_extender_verified_against_ca_data() {
    use base64::Engine;
    let ext = Arc::new(Ext {
        reject: vec!["n0".into()],
        ..Default::default()
    });
    let app = axum::Router::new()
        .route("/scheduler/{verb}", post(ext_handler))
        .with_state(ext.clone());
    let (port, ca) = serve_tls(app, &[]).await;
    let cfg = ExtenderConfig {
        url_prefix: format!("https://127.0.0.1:{port}/scheduler"),
        filter_verb: "filter".into(),
        enable_https: true,
        tls_config: Some(e2e::cluster::scheduler::extender::ExtenderTlsConfig {
            ca_data: base64::engine::general_purpose::STANDARD.encode(&ca),
            ..Default::default()
        }),
        node_cache_capable: true,
        ..Default::default()
    };
    let env = Env::start(cluster(
        vec![NodeSpec::new("n0"), NodeSpec::new("n1")],
        vec![cfg],
    ))
    .await;
    env.create_pod(simple_pod("p")).await;
    assert_eq!(env.wait_pod("default", "p", "bound", node_of).await, "n1");
    assert_eq!(ext.calls.lock().unwrap().len(), 1);
    env.cluster.shutdown().await;
}
