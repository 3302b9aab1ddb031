//! `Writer` against a recording API: every write asks for metadata only, both answers
//! (metadata only, or the whole object from a server that cannot transform) decode, and each
//! kind of write carries its patch type and body.

use std::sync::{Arc, Mutex};

use addon_common::writes::{JSON_PATCH, METADATA_ONLY, Writer};
use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::{
        HeaderMap, StatusCode, Uri,
        header::{ACCEPT, CONTENT_TYPE},
    },
    routing::{patch, post},
};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

/// One request as the API saw it.
#[derive(Debug)]
struct Seen {
    accept: String,
    content_type: String,
    /// Path and query.
    target: String,
    body: Value,
}

#[derive(Default)]
struct Api {
    seen: Vec<Seen>,
    /// Answer with the whole object, as a server without the transformation does.
    whole: bool,
}

type Shared = Arc<Mutex<Api>>;

fn answer(s: &Shared, headers: &HeaderMap, uri: &Uri, body: &[u8], rv: &str) -> Json<Value> {
    let mut api = s.lock().expect("lock");
    let header = |name| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let seen = Seen {
        accept: header(ACCEPT),
        content_type: header(CONTENT_TYPE),
        target: uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        body: serde_json::from_slice(body).unwrap_or(Value::Null),
    };
    api.seen.push(seen);
    let metadata = json!({"name": "c", "namespace": "ns", "resourceVersion": rv});
    Json(if api.whole {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}})
    } else {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": metadata})
    })
}

fn client(shared: &Shared) -> kube::Client {
    let router = Router::new()
        .route(
            "/api/v1/namespaces/ns/configmaps",
            post(
                |State(s): State<Shared>, headers: HeaderMap, uri: Uri, body: Bytes| async move {
                    (StatusCode::CREATED, answer(&s, &headers, &uri, &body, "1"))
                },
            ),
        )
        .route(
            "/api/v1/namespaces/ns/configmaps/c",
            patch(
                |State(s): State<Shared>, headers: HeaderMap, uri: Uri, body: Bytes| async move {
                    answer(&s, &headers, &uri, &body, "2")
                },
            ),
        )
        .route(
            "/api/v1/namespaces/ns/configmaps/c/status",
            patch(
                |State(s): State<Shared>, headers: HeaderMap, uri: Uri, body: Bytes| async move {
                    answer(&s, &headers, &uri, &body, "3")
                },
            ),
        )
        .with_state(shared.clone());
    kube::Client::new(router, "default")
}

#[tokio::test]
async fn every_write_asks_for_metadata_only_and_either_answer_decodes() {
    let shared = Shared::default();
    let writer: Writer<ConfigMap> = Writer::namespaced(client(&shared), "ns");
    let merge = Patch::Merge(json!({"data": {"k": "w"}}));
    let ops = json!([
        {"op": "test", "path": "/metadata/uid", "value": "u"},
        {"op": "replace", "path": "/data/k", "value": "x"},
    ]);
    let pp = PatchParams {
        field_manager: Some("m".into()),
        ..PatchParams::default()
    };
    for whole in [false, true] {
        shared.lock().expect("lock").whole = whole;
        let created = writer
            .create(&PostParams::default(), &json!({"metadata": {"name": "c"}}))
            .await
            .expect("create");
        assert_eq!(created.resource_version(), Some("1"));
        let patched = writer
            .patch("c", &PatchParams::default(), &merge)
            .await
            .expect("patch");
        assert_eq!(patched.resource_version(), Some("2"));
        let status = writer
            .patch_subresource("status", "c", &PatchParams::default(), &merge)
            .await
            .expect("status patch");
        assert_eq!(status.resource_version(), Some("3"));
        let json_patched = writer
            .json_patch(None, "c", &pp, &ops)
            .await
            .expect("json patch");
        assert_eq!(json_patched.resource_version(), Some("2"));
        let json_patched = writer
            .json_patch(Some("status"), "c", &pp, &ops)
            .await
            .expect("json patch of a subresource");
        assert_eq!(json_patched.resource_version(), Some("3"));
    }
    let api = shared.lock().expect("lock");
    assert_eq!(api.seen.len(), 10);
    assert!(
        api.seen.iter().all(|s| s.accept == METADATA_ONLY),
        "{:?}",
        api.seen
    );
    // Each write's media type, target and body, in order (the same in both rounds).
    let merge_body = json!({"data": {"k": "w"}});
    let expected = [
        (
            "application/json",
            "/api/v1/namespaces/ns/configmaps?",
            json!({"metadata": {"name": "c"}}),
        ),
        (
            "application/merge-patch+json",
            "/api/v1/namespaces/ns/configmaps/c?",
            merge_body.clone(),
        ),
        (
            "application/merge-patch+json",
            "/api/v1/namespaces/ns/configmaps/c/status?",
            merge_body,
        ),
        (
            JSON_PATCH,
            "/api/v1/namespaces/ns/configmaps/c?&fieldManager=m",
            ops.clone(),
        ),
        (
            JSON_PATCH,
            "/api/v1/namespaces/ns/configmaps/c/status?&fieldManager=m",
            ops,
        ),
    ];
    for (s, (content_type, target, body)) in api.seen.iter().zip(expected.iter().cycle()) {
        assert_eq!(
            (s.content_type.as_str(), s.target.as_str(), &s.body),
            (*content_type, *target, body)
        );
    }
}
