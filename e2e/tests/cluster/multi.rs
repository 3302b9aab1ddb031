//! Two emulated clusters side by side in one process (burst-kubelet's "local" and "serverless"):
//! each server has its own Service allocators, and one kubeconfig holds a context per cluster.

use e2e::cluster::ClusterConfig;
use e2e::cluster::harness::{Kubectl, Sandbox};
use k8s_openapi::api::core::v1::{ConfigMap, Service};
use kube::api::{Api, PostParams};
use serde_json::json;

async fn services(sb: &Sandbox) -> Api<Service> {
    Api::namespaced(sb.client().await.unwrap(), "default")
}

/// Creates NodePort Service `name`; returns its ClusterIP and node port.
async fn node_port_service(api: &Api<Service>, name: &str) -> (String, i32) {
    let svc: Service = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"type": "NodePort", "ports": [{"port": 80}]},
    }))
    .unwrap();
    let spec = api
        .create(&PostParams::default(), &svc)
        .await
        .unwrap()
        .spec
        .unwrap();
    let port = spec.ports.unwrap()[0].node_port.unwrap();
    (spec.cluster_ip.unwrap(), port)
}

async fn config_map(sb: &Sandbox, name: &str) {
    let api: Api<ConfigMap> = Api::namespaced(sb.client().await.unwrap(), "default");
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_have_their_own_allocators_and_contexts() {
    let local = Sandbox::start_named("local", ClusterConfig::with_nodes(1))
        .await
        .unwrap();
    let serverless = Sandbox::start_named("serverless", ClusterConfig::with_nodes(1))
        .await
        .unwrap();
    if local.simulation("two emulated clusters").is_none() {
        return; // E2E_KUBECONFIG: both are the same real cluster
    }
    let (a, b) = (services(&local).await, services(&serverless).await);
    // one server hands out addresses and ports...
    let mut first = vec![];
    for i in 0..3 {
        first.push(node_port_service(&a, &format!("s{i}")).await);
    }
    assert_eq!(first[0], ("10.96.0.10".to_string(), 30000));
    assert_eq!(first[2], ("10.96.0.12".to_string(), 30002));
    // ...the other's allocators have not moved: its first Service gets the first of each range
    assert_eq!(
        node_port_service(&b, "s0").await,
        ("10.96.0.10".to_string(), 30000)
    );
    assert_eq!(
        node_port_service(&b, "s1").await,
        ("10.96.0.11".to_string(), 30001)
    );
    // and allocating there did not move the first one's
    assert_eq!(
        node_port_service(&a, "s3").await,
        ("10.96.0.13".to_string(), 30003)
    );

    // each kubeconfig names its cluster; merged, kubectl reaches each cluster by context
    assert_eq!(
        local
            .kubectl()
            .ok(&["config", "current-context"])
            .await
            .unwrap()
            .trim(),
        "local"
    );
    config_map(&local, "only-local").await;
    config_map(&serverless, "only-serverless").await;
    let kubeconfigs: Vec<String> = [&local, &serverless]
        .iter()
        .map(|sb| std::fs::read_to_string(&sb.kubeconfig).unwrap())
        .collect();
    let merged = e2e::tls::merge_kubeconfigs(&[&kubeconfigs[0], &kubeconfigs[1]]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(&path, merged).unwrap();
    let k = Kubectl::new(&path, &dir.path().join("home"));
    let names = |ctx: &'static str| {
        let k = k.clone();
        async move {
            k.ok(&["--context", ctx, "get", "configmaps", "-o", "name"])
                .await
                .unwrap()
        }
    };
    let (in_local, in_serverless) = (names("local").await, names("serverless").await);
    assert!(in_local.contains("configmap/only-local"), "{in_local}");
    assert!(!in_local.contains("only-serverless"), "{in_local}");
    assert!(
        in_serverless.contains("configmap/only-serverless"),
        "{in_serverless}"
    );
    assert!(!in_serverless.contains("only-local"), "{in_serverless}");
    // one kubeconfig cannot name two clusters alike
    assert!(e2e::tls::merge_kubeconfigs(&[&kubeconfigs[0], &kubeconfigs[0]]).is_err());
    local.shutdown().await;
    serverless.shutdown().await;
}
