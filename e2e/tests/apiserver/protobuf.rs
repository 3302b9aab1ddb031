//! Protobuf responses (`Accept: application/vnd.kubernetes.protobuf, application/json`) for
//! reads of built-in kinds, in-process through the router.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde_json::{Value, json};
use tower::ServiceExt;

use crate::common::*;

const PODS: &str = "/api/v1/namespaces/default/pods";
const W: &str = "/apis/example.com/v1/namespaces/default/widgets";
/// What client-go's typed clients send.
const PB: &str = "application/vnd.kubernetes.protobuf, application/json";

async fn get_accept(
    srv: &e2e::ApiServer,
    path: &str,
    accept: &str,
) -> (StatusCode, HeaderMap, Bytes) {
    let req = http::Request::builder()
        .uri(path)
        .header("accept", accept)
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = srv.router().oneshot(req).await.unwrap();
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, headers, body)
}

fn content_type(h: &HeaderMap) -> &str {
    h.get("content-type").unwrap().to_str().unwrap()
}

fn pod(name: &str) -> Value {
    json!({"metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "nginx:1.27",
                                    "ports": [{"containerPort": 80}],
                                    "resources": {"requests": {"cpu": "100m", "memory": "1Gi"}},
                                    "readinessProbe": {"httpGet": {"port": 80, "path": "/"}}}]}})
}

/// Read a protobuf watch until `until` holds: (headers, [(type, object)]).
async fn read_proto_watch(
    srv: &e2e::ApiServer,
    path: &str,
    until: impl Fn(&[(String, Value)]) -> bool,
) -> (HeaderMap, Vec<(String, Value)>) {
    let frames = |buf: &mut Vec<u8>| e2e::proto::decode_watch_frames(buf).unwrap();
    let (headers, events, rest) = read_watch_as(srv, path, PB, until, frames).await;
    assert!(rest.is_empty(), "frames end at chunk boundaries");
    (headers, events)
}

#[tokio::test]
async fn builtin_reads_answer_protobuf_when_asked() {
    let srv = server();
    for n in ["a", "b"] {
        let (s, v) = post(&srv, PODS, pod(n)).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    // list
    let (s, h, body) = get_accept(&srv, PODS, PB).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(content_type(&h), "application/vnd.kubernetes.protobuf");
    assert!(body.starts_with(b"k8s\x00"));
    let list = e2e::proto::decode(&body).unwrap();
    assert_eq!(list["kind"], "PodList");
    assert_eq!(list["apiVersion"], "v1");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b"]);
    assert!(list["metadata"]["resourceVersion"].is_string(), "{list}");
    // the decoded items are the stored objects (less apiVersion/kind, absent from list items)
    let (_, json_list) = get(&srv, PODS).await;
    let mut stored = json_list["items"][1].clone();
    let m = stored.as_object_mut().unwrap();
    m.remove("apiVersion");
    m.remove("kind");
    assert_eq!(list["items"][1], stored);
    // pagination metadata
    let (_, _, body) = get_accept(&srv, &format!("{PODS}?limit=1"), PB).await;
    let page = e2e::proto::decode(&body).unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["metadata"]["continue"].is_string(), "{page}");
    assert_eq!(page["metadata"]["remainingItemCount"], 1);
    // one object, and its status subresource
    for path in [format!("{PODS}/b"), format!("{PODS}/b/status")] {
        let (s, h, body) = get_accept(&srv, &path, PB).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(content_type(&h), "application/vnd.kubernetes.protobuf");
        let p = e2e::proto::decode(&body).unwrap();
        assert_eq!(p["kind"], "Pod");
        assert_eq!(p["metadata"]["name"], "b");
        assert_eq!(
            p["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"],
            80
        );
        assert_eq!(
            p["spec"]["containers"][0]["resources"]["requests"]["cpu"],
            "100m"
        );
    }
    // errors stay JSON Status objects
    let (s, h, body) = get_accept(&srv, &format!("{PODS}/nope"), PB).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(content_type(&h), "application/json");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["kind"], "Status");
    // JSON clients, tables and metadata-only requests are unchanged
    for accept in [
        "application/json",
        "application/json, application/vnd.kubernetes.protobuf",
        "",
    ] {
        let (_, h, body) = get_accept(&srv, PODS, accept).await;
        assert_eq!(content_type(&h), "application/json", "{accept}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["kind"], "PodList");
        assert_eq!(v["items"][0]["kind"], "Pod");
    }
    let (_, h, body) = get_accept(
        &srv,
        PODS,
        "application/vnd.kubernetes.protobuf;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
    )
    .await;
    assert_eq!(content_type(&h), "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["kind"],
        "Table"
    );
    let (_, h, body) = get_accept(
        &srv,
        &format!("{PODS}/a"),
        "application/vnd.kubernetes.protobuf;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json",
    )
    .await;
    assert_eq!(content_type(&h), "application/json");
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["kind"],
        "PartialObjectMetadata"
    );
}

#[tokio::test]
async fn custom_resources_stay_json_with_protobuf_accept() {
    let srv = server();
    install_crd(&srv).await;
    let (s, v) = post(
        &srv,
        W,
        json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": {"size": "S"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    for path in [W.to_string(), format!("{W}/w")] {
        let (s, h, body) = get_accept(&srv, &path, PB).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(content_type(&h), "application/json", "{path}");
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["kind"] == "WidgetList" || v["kind"] == "Widget", "{v}");
    }
    // the CRD object itself is built-in
    let (_, h, body) = get_accept(
        &srv,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        PB,
    )
    .await;
    assert_eq!(content_type(&h), "application/vnd.kubernetes.protobuf");
    let crd = e2e::proto::decode(&body).unwrap();
    assert_eq!(crd["spec"]["names"]["kind"], "Widget");
    let (_, h, _) = get_accept(&srv, &format!("{W}?watch=true&timeoutSeconds=1"), PB).await;
    assert_eq!(content_type(&h), "application/json");
}

#[tokio::test]
async fn watch_streams_protobuf_frames() {
    let srv = server();
    let rv = srv.store().current_rv();
    let srv2 = srv.clone();
    let t = tokio::spawn(async move {
        read_proto_watch(
            &srv2,
            &format!(
                "{PODS}?watch=true&allowWatchBookmarks=true&resourceVersion={rv}&timeoutSeconds=10"
            ),
            |e| e.iter().any(|(t, _)| t == "BOOKMARK"),
        )
        .await
    });
    // let the watch start, then write
    tokio::time::sleep(Duration::from_millis(100)).await;
    post(&srv, PODS, pod("w")).await;
    let (s, _, _) = call(
        &srv,
        "PATCH",
        &format!("{PODS}/w"),
        "application/merge-patch+json",
        Some(json!({"metadata": {"labels": {"app": "other"}}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (h, events) = t.await.unwrap();
    assert_eq!(
        content_type(&h),
        "application/vnd.kubernetes.protobuf;stream=watch"
    );
    let types: Vec<&str> = events.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types, ["ADDED", "MODIFIED", "BOOKMARK"], "{events:?}");
    assert_eq!(events[0].1["kind"], "Pod");
    assert_eq!(events[0].1["metadata"]["name"], "w");
    assert_eq!(events[1].1["metadata"]["labels"]["app"], "other");
    let bookmark = &events[2].1;
    assert_eq!(bookmark["kind"], "Pod");
    assert_eq!(
        bookmark["metadata"]["resourceVersion"],
        events[1].1["metadata"]["resourceVersion"]
    );
    // initial events, with the end-of-initial-events bookmark
    let (_, events) = read_proto_watch(
        &srv,
        &format!("{PODS}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"),
        |e| e.iter().any(|(t, _)| t == "BOOKMARK"),
    )
    .await;
    assert_eq!(events.len(), 2, "{events:?}");
    assert_eq!(events[0].1["metadata"]["name"], "w");
    assert_eq!(
        events[1].1["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // a label selector turns the relabel into DELETED, written for that watcher
    let srv2 = srv.clone();
    let t = tokio::spawn(async move {
        read_proto_watch(
            &srv2,
            &format!("{PODS}?watch=true&labelSelector=app%3Dother&timeoutSeconds=5"),
            |e| e.iter().any(|(t, _)| t == "DELETED"),
        )
        .await
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    call(
        &srv,
        "PATCH",
        &format!("{PODS}/w"),
        "application/merge-patch+json",
        Some(json!({"metadata": {"labels": {"app": "web"}}})),
    )
    .await;
    let (_, events) = t.await.unwrap();
    let last = events.last().unwrap();
    assert_eq!(last.0, "DELETED");
    assert_eq!(last.1["metadata"]["labels"]["app"], "web");
    // an expired resourceVersion: ERROR with a Status, in protobuf too
    srv.faults().compact();
    let (_, events) = read_proto_watch(
        &srv,
        &format!("{PODS}?watch=true&resourceVersion={rv}"),
        |e| !e.is_empty(),
    )
    .await;
    assert_eq!(events[0].0, "ERROR");
    assert_eq!(events[0].1["kind"], "Status");
    assert_eq!(events[0].1["code"], 410);
    assert_eq!(events[0].1["reason"], "Expired");
}
