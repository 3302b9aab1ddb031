//! The controller's pod list+watch (`tapp_controller::podwatch`) against the emulated API
//! server, asking for protobuf and for JSON: the initial list, watch events, a new list after
//! 410 Gone, a new watch after a dropped one, and pods of the Go controller read whole.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_runtime::watcher::{self, Event};
use serde_json::json;
use tapp_controller::pods::PodView;
use tapp_controller::podwatch::{Encoding, watch_pods_as};
use tapp_controller::slim::SlimPod;

use addon_common::api::tapp::{INSTANCE_ID_LABEL, TEMPLATE_HASH_LABEL, UNIQ_HASH_LABEL};
use tapp_controller::hash::HASH_PREFIX;

/// (method, path and query, response content type) of every request to the server.
type Log = Arc<Mutex<Vec<(String, String, String)>>>;

fn recording_client(server: &e2e::ApiServer) -> (kube::Client, Log) {
    use tower::ServiceExt;
    let log: Log = Arc::default();
    let (router, entries) = (server.router(), log.clone());
    let svc = tower::service_fn(move |r: http::Request<kube::client::Body>| {
        let (router, entries) = (router.clone(), entries.clone());
        async move {
            let (method, uri) = (r.method().to_string(), r.uri().to_string());
            let res = router.oneshot(r).await?;
            let ct = res
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            entries.lock().expect("log").push((method, uri, ct));
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    (kube::Client::new(svc, "default"), log)
}

fn pod(name: &str, labels: serde_json::Value) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {"containers": [{"name": "c", "image": "nginx:1",
            "env": [{"name": "A", "value": "1"}],
            "resources": {"limits": {"cpu": "500m", "memory": "1Gi"}}}]}
    }))
    .expect("pod")
}

fn own(id: &str) -> serde_json::Value {
    json!({INSTANCE_ID_LABEL: id, TEMPLATE_HASH_LABEL: format!("{HASH_PREFIX}1"),
           UNIQ_HASH_LABEL: format!("{HASH_PREFIX}2")})
}

/// Hash labels of the Go controller.
fn go_labels(id: &str) -> serde_json::Value {
    json!({INSTANCE_ID_LABEL: id, TEMPLATE_HASH_LABEL: "5d8f", UNIQ_HASH_LABEL: "77c9"})
}

/// An event as a short line: `Init`, `InitApply a`, `Apply a`, `Delete a`, `InitDone`, `Err`.
fn line(item: &Result<Event<SlimPod>, watcher::Error>) -> String {
    let name = |p: &SlimPod| p.metadata.name.clone().unwrap_or_default();
    match item {
        Ok(Event::Init) => "Init".into(),
        Ok(Event::InitApply(p)) => format!("InitApply {}", name(p)),
        Ok(Event::InitDone) => "InitDone".into(),
        Ok(Event::Apply(p)) => format!("Apply {}", name(p)),
        Ok(Event::Delete(p)) => format!("Delete {}", name(p)),
        Err(_) => "Err".into(),
    }
}

async fn next_lines(
    stream: &mut (impl Stream<Item = Result<Event<SlimPod>, watcher::Error>> + Unpin),
    n: usize,
) -> (Vec<String>, Vec<Result<Event<SlimPod>, watcher::Error>>) {
    let mut lines = Vec::new();
    let mut items = Vec::new();
    for _ in 0..n {
        let item = tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no event within 10 s after {lines:?}"))
            .expect("stream ended");
        lines.push(line(&item));
        items.push(item);
    }
    (lines, items)
}

async fn list_watch_relist_rewatch(encoding: Encoding) -> Log {
    let server = e2e::ApiServer::new(e2e::Config::default());
    let (client, log) = recording_client(&server);
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    pods.create(&pp, &pod("a", own("0"))).await.expect("a");
    // hash labels of the Go controller: the whole spec is kept (adoption compares it)
    pods.create(&pp, &pod("b", go_labels("1")))
        .await
        .expect("b");
    pods.create(&pp, &pod("c", json!({"app": "other"})))
        .await
        .expect("c");

    let mut stream = Box::pin(watch_pods_as(
        client.clone(),
        Some("default"),
        INSTANCE_ID_LABEL,
        encoding,
    ));
    let (lines, items) = next_lines(&mut stream, 4).await;
    assert_eq!(lines, ["Init", "InitApply a", "InitApply b", "InitDone"]);
    let (a, b) = match (&items[1], &items[2]) {
        (Ok(Event::InitApply(a)), Ok(Event::InitApply(b))) => (a, b),
        _ => unreachable!(),
    };
    assert!(!a.has_full_spec(), "our pod keeps the slim spec");
    assert!(
        b.has_full_spec(),
        "a pod of the Go controller keeps its whole spec"
    );
    let env = b.to_pod().spec.expect("spec").containers[0].env.clone();
    assert_eq!(env.expect("env")[0].name, "A");
    assert_eq!(
        a.containers().collect::<Vec<_>>(),
        [("c", Some("nginx:1"))],
        "{a:?}"
    );
    assert!(a.metadata.resource_version.is_some() && a.metadata.uid.is_some());

    pods.create(&pp, &pod("d", own("2"))).await.expect("d");
    pods.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "1"}}})),
    )
    .await
    .expect("patch a");
    pods.delete("b", &DeleteParams::default())
        .await
        .expect("delete b");
    pods.create(&pp, &pod("g", go_labels("5")))
        .await
        .expect("g");
    let (lines, items) = next_lines(&mut stream, 4).await;
    assert_eq!(lines, ["Apply d", "Apply a", "Delete b", "Apply g"]);
    let (Ok(Event::Apply(a)), Ok(Event::Apply(g))) = (&items[1], &items[3]) else {
        unreachable!()
    };
    assert_eq!(a.label("x"), Some("1"));
    assert!(
        g.has_full_spec(),
        "a pod of the Go controller keeps its whole spec"
    );

    // history compacted: the watch is reopened from an expired resourceVersion, 410, relist
    server.faults().compact();
    let (lines, _) = next_lines(&mut stream, 6).await;
    assert_eq!(
        lines,
        [
            "Err",
            "Init",
            "InitApply a",
            "InitApply d",
            "InitApply g",
            "InitDone"
        ]
    );
    pods.create(&pp, &pod("e", own("3"))).await.expect("e");
    assert_eq!(next_lines(&mut stream, 1).await.0, ["Apply e"]);

    // a dropped watch is reopened from the last resourceVersion seen: no new list
    server.faults().close_watches();
    pods.create(&pp, &pod("f", own("4"))).await.expect("f");
    assert_eq!(next_lines(&mut stream, 1).await.0, ["Apply f"]);
    log
}

fn content_types(log: &Log, watch: bool) -> Vec<String> {
    log.lock()
        .expect("log")
        .iter()
        .filter(|(m, uri, _)| {
            m == "GET" && uri.starts_with("/api/v1/namespaces/default/pods?") && {
                uri.contains("watch=true") == watch
            }
        })
        .map(|(_, _, ct)| ct.clone())
        .collect()
}

#[tokio::test]
async fn protobuf_list_watch_relist_and_rewatch() {
    let log = list_watch_relist_rewatch(Encoding::Protobuf).await;
    // each list holds a pod of the Go controller: its page is read again as JSON
    let lists = content_types(&log, false);
    let pb = "application/vnd.kubernetes.protobuf";
    let json = "application/json";
    assert_eq!(lists, [pb, json, pb, json]);
    let watches = content_types(&log, true);
    assert!(watches.len() >= 3, "{watches:?}");
    assert!(
        watches
            .iter()
            .all(|c| c == "application/vnd.kubernetes.protobuf;stream=watch"),
        "{watches:?}"
    );
    // the Go controller's pod created during the watch, and only it, was read as JSON by name
    let gets: Vec<_> = log
        .lock()
        .expect("log")
        .iter()
        .filter(|(m, uri, _)| m == "GET" && uri.starts_with("/api/v1/namespaces/default/pods/"))
        .map(|(_, uri, ct)| (uri.clone(), ct.clone()))
        .collect();
    assert_eq!(
        gets,
        [(
            "/api/v1/namespaces/default/pods/g".to_string(),
            json.to_string()
        )]
    );
}

#[tokio::test]
async fn json_list_watch_relist_and_rewatch() {
    let log = list_watch_relist_rewatch(Encoding::Json).await;
    let all: Vec<String> = [content_types(&log, false), content_types(&log, true)].concat();
    assert!(all.len() >= 5, "{all:?}");
    assert!(all.iter().all(|c| c == "application/json"), "{all:?}");
}
