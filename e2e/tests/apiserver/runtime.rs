//! kube-runtime against the in-process router.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, reflector};
use serde_json::json;

use crate::common::*;

fn cm(name: &str, v: &str) -> ConfigMap {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"v": v}})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watcher_sees_added_modified_deleted() {
    let srv = server();
    let client = srv.client();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    api.create(&PostParams::default(), &cm("pre", "0"))
        .await
        .unwrap();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let ev2 = events.clone();
    let stream = watcher::watcher(api.clone(), watcher::Config::default());
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while let Some(e) = s.next().await {
            let e = e.unwrap();
            let line = match e {
                Event::Init => "init".to_string(),
                Event::InitApply(o) => format!("initapply {}", o.metadata.name.unwrap()),
                Event::InitDone => "initdone".to_string(),
                Event::Apply(o) => format!(
                    "apply {} {}",
                    o.metadata.name.unwrap(),
                    o.data.unwrap().get("v").cloned().unwrap_or_default()
                ),
                Event::Delete(o) => format!("delete {}", o.metadata.name.unwrap()),
            };
            ev2.lock().unwrap().push(line);
        }
    });
    let has = |s: &str| {
        let e = events.clone();
        let s = s.to_string();
        move || {
            let e = e.clone();
            let s = s.clone();
            async move { e.lock().unwrap().contains(&s).then_some(()) }
        }
    };
    eventually("initdone", Duration::from_secs(10), has("initdone")).await;
    api.create(&PostParams::default(), &cm("a", "1"))
        .await
        .unwrap();
    eventually("added", Duration::from_secs(10), has("apply a 1")).await;
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    eventually("modified", Duration::from_secs(10), has("apply a 2")).await;
    api.delete("a", &DeleteParams::default()).await.unwrap();
    eventually("deleted", Duration::from_secs(10), has("delete a")).await;
    let ev = events.lock().unwrap().clone();
    assert_eq!(
        &ev[..4],
        &["init", "initapply pre", "initdone", "apply a 1"],
        "{ev:?}"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflector_recovers_from_410_and_dropped_streams_without_losing_events() {
    let srv = server();
    let client = srv.client();
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default().any_semantic()),
    )
    .default_backoff()
    .applied_objects();
    let task = drain(stream);
    let snapshot = |reader: reflector::Store<ConfigMap>| -> BTreeMap<String, String> {
        reader
            .state()
            .iter()
            .map(|o| {
                (
                    o.metadata.name.clone().unwrap(),
                    o.data
                        .as_ref()
                        .and_then(|d| d.get("v").cloned())
                        .unwrap_or_default(),
                )
            })
            .collect()
    };
    let expect = |want: BTreeMap<String, String>| {
        let reader = reader.clone();
        move || {
            let reader = reader.clone();
            let want = want.clone();
            async move { (snapshot(reader) == want).then_some(()) }
        }
    };
    let mut want = BTreeMap::new();
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "1"))
            .await
            .unwrap();
        want.insert(format!("c{i}"), "1".to_string());
    }
    eventually("initial", Duration::from_secs(10), expect(want.clone())).await;

    // dropped streams: writes right after the close are not lost
    srv.faults().close_watches();
    api.patch(
        "c0",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    api.delete("c1", &DeleteParams::default()).await.unwrap();
    want.insert("c0".into(), "2".into());
    want.remove("c1");
    eventually("after close", Duration::from_secs(10), expect(want.clone())).await;

    // forced 410: history compacted while changes happen; the watcher relists
    srv.faults().compact();
    api.patch(
        "c2",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "3"}})),
    )
    .await
    .unwrap();
    api.delete("c3", &DeleteParams::default()).await.unwrap();
    api.create(&PostParams::default(), &cm("c9", "9"))
        .await
        .unwrap();
    srv.faults().compact();
    want.insert("c2".into(), "3".into());
    want.remove("c3");
    want.insert("c9".into(), "9".into());
    eventually("after 410", Duration::from_secs(15), expect(want.clone())).await;
    task.abort();
}

#[derive(Default)]
struct Seen {
    reconciled: BTreeMap<String, String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_reconciles_through_faults() {
    let srv = server();
    let client = srv.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let ctx = seen.clone();
    let ctrl = Controller::new(api.clone(), watcher::Config::default())
        .run(
            |obj: Arc<ConfigMap>, ctx: Arc<Arc<Mutex<Seen>>>| async move {
                let v = obj
                    .data
                    .as_ref()
                    .and_then(|d| d.get("v").cloned())
                    .unwrap_or_default();
                ctx.lock()
                    .unwrap()
                    .reconciled
                    .insert(obj.metadata.name.clone().unwrap(), v);
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_obj, _err: &kube::Error, _ctx| Action::requeue(Duration::from_millis(100)),
            Arc::new(ctx),
        )
        .for_each(|_| async {});
    let task = tokio::spawn(ctrl);
    let check = |name: &str, v: &str| {
        let seen = seen.clone();
        let (name, v) = (name.to_string(), v.to_string());
        move || {
            let seen = seen.clone();
            let (name, v) = (name.clone(), v.clone());
            async move { (seen.lock().unwrap().reconciled.get(&name) == Some(&v)).then_some(()) }
        }
    };
    api.create(&PostParams::default(), &cm("x", "1"))
        .await
        .unwrap();
    eventually("reconcile x=1", Duration::from_secs(10), check("x", "1")).await;
    srv.faults().close_watches();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "2"}})),
    )
    .await
    .unwrap();
    eventually(
        "reconcile x=2 after dropped stream",
        Duration::from_secs(10),
        check("x", "2"),
    )
    .await;
    srv.faults().compact();
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "3"}})),
    )
    .await
    .unwrap();
    api.create(&PostParams::default(), &cm("y", "1"))
        .await
        .unwrap();
    eventually(
        "reconcile x=3 after 410",
        Duration::from_secs(15),
        check("x", "3"),
    )
    .await;
    eventually(
        "reconcile y after 410",
        Duration::from_secs(15),
        check("y", "1"),
    )
    .await;
    // write faults: the API returns 500 and the client sees it
    srv.faults().fail_writes("configmaps", 1, 500);
    let err = api
        .patch(
            "x",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"v": "4"}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500),
        "{err:?}"
    );
    api.patch(
        "x",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"v": "4"}})),
    )
    .await
    .unwrap();
    eventually("reconcile x=4", Duration::from_secs(10), check("x", "4")).await;
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streaming_list_watcher_uses_send_initial_events() {
    let srv = server();
    let api: Api<ConfigMap> = Api::namespaced(srv.client(), "default");
    api.create(&PostParams::default(), &cm("s0", "0"))
        .await
        .unwrap();
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector::reflector(
        writer,
        watcher::watcher(api.clone(), watcher::Config::default().streaming_lists()),
    )
    .default_backoff()
    .applied_objects();
    let task = drain(stream);
    let names = |reader: reflector::Store<ConfigMap>| {
        move || {
            let reader = reader.clone();
            async move {
                let mut n: Vec<String> = reader
                    .state()
                    .iter()
                    .map(|o| o.metadata.name.clone().unwrap())
                    .collect();
                n.sort();
                (n == ["s0", "s1"]).then_some(())
            }
        }
    };
    api.create(&PostParams::default(), &cm("s1", "1"))
        .await
        .unwrap();
    eventually(
        "streaming list state",
        Duration::from_secs(10),
        names(reader.clone()),
    )
    .await;
    task.abort();
}

/// `as=PartialObjectMetadata`: kube-rs's metadata calls (get, list, patch, watch) and
/// `addon_common::writes::Writer` (which asks for it on every write) get metadata only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_only_responses() {
    let srv = server();
    let client = srv.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let writer: addon_common::writes::Writer<ConfigMap> =
        addon_common::writes::Writer::namespaced(client.clone(), "default");
    let written = writer
        .create(&PostParams::default(), &cm("m", "1"))
        .await
        .unwrap();
    let rv = written.resource_version().unwrap().to_string();
    assert_eq!(
        api.get("m").await.unwrap().metadata.resource_version,
        Some(rv)
    );

    // Raw: the body of a metadata-only write holds no data.
    use tower::ServiceExt;
    let req = http::Request::builder()
        .method("PATCH")
        .uri("/api/v1/namespaces/default/configmaps/m")
        .header("content-type", "application/merge-patch+json")
        .header("accept", addon_common::writes::METADATA_ONLY)
        .body(axum::body::Body::from(r#"{"data":{"v":"2"}}"#))
        .unwrap();
    let resp = srv.router().oneshot(req).await.unwrap();
    let body: serde_json::Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["kind"], "PartialObjectMetadata", "{body}");
    assert_eq!(body["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(body["metadata"]["name"], "m");
    assert!(body.get("data").is_none(), "{body}");
    assert_eq!(api.get("m").await.unwrap().data.unwrap()["v"], "2");

    let meta = api.get_metadata("m").await.unwrap();
    assert_eq!(meta.metadata.name.as_deref(), Some("m"));
    assert_eq!(kind_of(&meta.types), "PartialObjectMetadata");
    let list = api.list_metadata(&Default::default()).await.unwrap();
    assert_eq!(list.types.kind, "PartialObjectMetadataList");
    assert_eq!(list.items.len(), 1);
    assert_eq!(kind_of(&list.items[0].types), "PartialObjectMetadata");
    let patched = api
        .patch_metadata(
            "m",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"k": "v"}}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.metadata.labels.unwrap()["k"], "v");
    assert_eq!(kind_of(&patched.types), "PartialObjectMetadata");

    // The watch (after its initial list) sends metadata only: the decoded objects say so.
    let (reader, writer) = reflector::store();
    let meta_api: Api<PartialObjectMeta<ConfigMap>> = Api::namespaced(client.clone(), "default");
    let task = drain(
        watcher::watcher(meta_api, watcher::Config::default())
            .reflect(writer)
            .applied_objects(),
    );
    api.create(&PostParams::default(), &cm("n", "1"))
        .await
        .unwrap();
    let watched = reader.clone();
    eventually("metadata watch", Duration::from_secs(10), move || {
        let reader = watched.clone();
        async move { reader.get(&ObjectRef::new("n").within("default")) }
    })
    .await;
    for o in reader.state() {
        assert_eq!(kind_of(&o.types), "PartialObjectMetadata", "{o:?}");
    }
    task.abort();
}

/// Polls `stream` to its end in a task.
fn drain<S: futures::Stream + Send + 'static>(stream: S) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while s.next().await.is_some() {}
    })
}

fn kind_of(types: &Option<kube::core::TypeMeta>) -> &str {
    types.as_ref().map_or("", |t| t.kind.as_str())
}
