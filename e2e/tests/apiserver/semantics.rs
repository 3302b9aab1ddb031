//! API semantics table tests (in-process, raw HTTP through the router).

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};

use crate::common::*;

const W: &str = "/apis/example.com/v1/namespaces/default/widgets";
const CM: &str = "/api/v1/namespaces/default/configmaps";

fn widget(name: &str, replicas: i64) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}, "spec": {"size": "M", "replicas": replicas}})
}

#[tokio::test]
async fn errors_are_status_objects_404_409() {
    let srv = server();
    let (s, v) = get(&srv, &format!("{CM}/missing")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["reason"], "NotFound");
    assert_eq!(v["code"], 404);
    assert_eq!(v["message"], "configmaps \"missing\" not found");
    assert_eq!(
        v["details"],
        json!({"name": "missing", "kind": "configmaps"})
    );

    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
    assert_eq!(post(&srv, CM, body.clone()).await.0, StatusCode::CREATED);
    let (s, v) = post(&srv, CM, body.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "AlreadyExists");
    assert_eq!(v["message"], "configmaps \"c\" already exists");

    // optimistic concurrency: stale resourceVersion -> 409 Conflict
    let (_, cur) = get(&srv, &format!("{CM}/c")).await;
    let mut upd = cur.clone();
    upd["data"]["a"] = json!("2");
    let (s, _, _) = call(
        &srv,
        "PUT",
        &format!("{CM}/c"),
        "application/json",
        Some(upd.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v, _) = call(
        &srv,
        "PUT",
        &format!("{CM}/c"),
        "application/json",
        Some(upd),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "Conflict");
    assert_eq!(
        v["message"],
        "Operation cannot be fulfilled on configmaps \"c\": the object has been modified; please apply your changes to the latest version and try again"
    );
    // unknown resource / path
    let (s, v) = get(&srv, "/apis/nope.io/v1/things").await;
    assert_eq!(
        (s, v["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );
    // namespace must exist
    let (s, v) = post(&srv, "/api/v1/namespaces/ghost/configmaps", body).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "namespaces \"ghost\" not found");
    // /openapi/v2 is absent
    assert_eq!(get(&srv, "/openapi/v2").await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn create_defaults_metadata_and_generate_name() {
    let srv = server();
    let (s, v) = post(
        &srv,
        CM,
        json!({"metadata": {"generateName": "gen-"}, "data": {}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    assert!(v["metadata"]["uid"].as_str().unwrap().len() == 36);
    assert!(v["metadata"]["creationTimestamp"].is_string());
    assert!(v["metadata"]["resourceVersion"].is_string());
    assert_eq!(v["kind"], "ConfigMap");
    let (s, v) = post(&srv, CM, json!({"metadata": {}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");
    // resourceVersion is global and monotonic
    let (_, a) = post(&srv, CM, json!({"metadata": {"name": "a"}})).await;
    let (_, b) = post(
        &srv,
        "/api/v1/namespaces/kube-system/configmaps",
        json!({"metadata": {"name": "b"}}),
    )
    .await;
    let rv = |v: &Value| {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    assert!(rv(&b) > rv(&a));
    // dryRun does not persist
    let (s, _) = post(
        &srv,
        &format!("{CM}?dryRun=All"),
        json!({"metadata": {"name": "dry"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(
        get(&srv, &format!("{CM}/dry")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn generation_and_status_split_for_crds() {
    let srv = server();
    install_crd(&srv).await;
    let (s, v) = post(&srv, W, widget("w", 1)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["metadata"]["generation"], 1);
    let patch = |body: Value, sub: &str| {
        let srv = srv.clone();
        let path = format!("{W}/w{sub}");
        async move {
            call(
                &srv,
                "PATCH",
                &path,
                "application/merge-patch+json",
                Some(body),
            )
            .await
        }
    };
    // spec change bumps generation
    let (_, v, _) = patch(json!({"spec": {"replicas": 2}}), "").await;
    assert_eq!(v["metadata"]["generation"], 2);
    // metadata change does not
    let (_, v, _) = patch(json!({"metadata": {"labels": {"a": "b"}}}), "").await;
    assert_eq!(v["metadata"]["generation"], 2);
    // status through the main resource is ignored
    let (_, v, _) = patch(json!({"status": {"phase": "Ready"}}), "").await;
    assert!(v.get("status").is_none(), "{v}");
    assert_eq!(v["metadata"]["generation"], 2);
    // status through /status: status changes, generation does not, spec changes are ignored
    let (s, v, _) = patch(
        json!({"status": {"phase": "Ready", "replicas": 2}, "spec": {"replicas": 50}}),
        "/status",
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"]["phase"], "Ready");
    assert_eq!(v["spec"]["replicas"], 2);
    assert_eq!(v["metadata"]["generation"], 2);
    // a full PUT keeps status
    let (_, mut cur) = get(&srv, &format!("{W}/w")).await;
    cur["spec"]["replicas"] = json!(5);
    cur["status"] = json!({"phase": "Bogus"});
    let (s, v, _) = call(
        &srv,
        "PUT",
        &format!("{W}/w"),
        "application/json",
        Some(cur),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["status"]["phase"], "Ready");
    assert_eq!(v["metadata"]["generation"], 3);
    // no-op update keeps the resourceVersion
    let rv = v["metadata"]["resourceVersion"].clone();
    let (_, v, _) = patch(json!({"spec": {"replicas": 5}}), "").await;
    assert_eq!(v["metadata"]["resourceVersion"], rv);
    // create drops status
    let mut w2 = widget("w2", 1);
    w2["status"] = json!({"phase": "X"});
    let (_, v) = post(&srv, W, w2).await;
    assert!(v.get("status").is_none());
}

#[tokio::test]
async fn scale_subresource_crd_and_deployment() {
    let srv = server();
    install_crd(&srv).await;
    post(&srv, W, widget("w", 1)).await;
    call(
        &srv,
        "PATCH",
        &format!("{W}/w/status"),
        "application/merge-patch+json",
        Some(json!({"status": {"replicas": 1, "selector": "app=w"}})),
    )
    .await;
    let (s, v) = get(&srv, &format!("{W}/w/scale")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["kind"], "Scale");
    assert_eq!(v["apiVersion"], "autoscaling/v1");
    assert_eq!(v["spec"]["replicas"], 1);
    assert_eq!(v["status"], json!({"replicas": 1, "selector": "app=w"}));
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/w/scale"),
        "application/merge-patch+json",
        Some(json!({"spec": {"replicas": 4}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["replicas"], 4);
    let (_, w) = get(&srv, &format!("{W}/w")).await;
    assert_eq!(w["spec"]["replicas"], 4);
    assert_eq!(w["metadata"]["generation"], 2);
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/w/scale"),
        "application/merge-patch+json",
        Some(json!({"spec": {"replicas": -1}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");

    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "nginx:1"}]}}}});
    let (s, v) = post(&srv, "/apis/apps/v1/namespaces/default/deployments", dep).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["spec"]["replicas"], 1, "defaulted");
    let mut scale = get(&srv, "/apis/apps/v1/namespaces/default/deployments/d/scale")
        .await
        .1;
    assert_eq!(scale["status"]["selector"], "app=d");
    scale["spec"]["replicas"] = json!(3);
    let (s, v, _) = call(
        &srv,
        "PUT",
        "/apis/apps/v1/namespaces/default/deployments/d/scale",
        "application/json",
        Some(scale),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, d) = get(&srv, "/apis/apps/v1/namespaces/default/deployments/d").await;
    assert_eq!(d["spec"]["replicas"], 3);
    assert_eq!(d["metadata"]["generation"], 2);
}

#[tokio::test]
async fn validation_errors_name_each_field() {
    let srv = server();
    install_crd(&srv).await;
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "bad"},
        "spec": {"replicas": "three", "name": "ABCDEFGHIJKL", "tags": [1]}});
    let (s, v) = post(&srv, W, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(v["details"]["kind"], "Widget");
    assert_eq!(v["details"]["group"], "example.com");
    let fields: Vec<&str> = v["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    for f in ["spec.replicas", "spec.name", "spec.tags[0]", "spec.size"] {
        assert!(fields.contains(&f), "{f} missing in {fields:?}");
    }
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.starts_with("Widget.example.com \"bad\" is invalid: ["),
        "{msg}"
    );
    assert!(msg.contains("spec.replicas: Invalid value: \"string\": spec.replicas in body must be of type integer: \"string\""), "{msg}");
    assert!(msg.contains("spec.size: Required value"), "{msg}");
    assert!(
        msg.contains("spec.name: Too long: may not be more than 10 bytes"),
        "{msg}"
    );
    assert!(
        msg.contains("spec.name in body should match '^[a-z]+$'"),
        "{msg}"
    );
    let (s, v) = post(&srv, W, json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "b2"}, "spec": {"size": "M", "replicas": 101}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(v["message"].as_str().unwrap().contains("spec.replicas: Invalid value: 101: spec.replicas in body should be less than or equal to 100"), "{v}");
    // int-or-string, nullable, embedded resource
    let ok = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "ok"}, "spec": {"size": "M", "port": "http", "note": null,
        "template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}}}});
    let (s, v) = post(&srv, W, ok).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, v) = post(&srv, W, json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "e"}, "spec": {"size": "M", "port": 1.5, "template": {"kind": "Pod"}}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let fields: Vec<&str> = v["details"]["causes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"spec.port") && fields.contains(&"spec.template.apiVersion"),
        "{fields:?}"
    );
}

#[tokio::test]
async fn pruning_and_field_validation_modes() {
    let srv = server();
    install_crd(&srv).await;
    let body = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "p", "bogusMeta": 1},
        "spec": {"size": "S", "colour": "red", "extra": {"anything": {"goes": true}}}, "top": 1});
    // Strict: 400 naming every unknown field
    let (s, v, _) = call(
        &srv,
        "POST",
        &format!("{W}?fieldValidation=Strict"),
        "application/json",
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let msg = v["message"].as_str().unwrap();
    assert!(
        msg.contains("unknown field \"spec.colour\"")
            && msg.contains("unknown field \"top\"")
            && msg.contains("unknown field \"metadata.bogusMeta\""),
        "{msg}"
    );
    // Warn: accepted with Warning headers, unknown fields pruned
    let (s, v, h) = call(
        &srv,
        "POST",
        &format!("{W}?fieldValidation=Warn"),
        "application/json",
        Some(body.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let warnings: Vec<&str> = h
        .get_all("warning")
        .iter()
        .map(|w| w.to_str().unwrap())
        .collect();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("unknown field \\\"spec.colour\\\"")),
        "{warnings:?}"
    );
    assert!(v["spec"].get("colour").is_none() && v.get("top").is_none());
    assert_eq!(
        v["spec"]["extra"]["anything"]["goes"], true,
        "preserve-unknown-fields kept"
    );
    // Ignore: silently pruned
    let mut b2 = body.clone();
    b2["metadata"]["name"] = json!("p2");
    let (s, _, h) = call(
        &srv,
        "POST",
        &format!("{W}?fieldValidation=Ignore"),
        "application/json",
        Some(b2),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(h.get("warning").is_none());
    // built-ins: unknown fields detected from the k8s-openapi schemas
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "b"}, "spek": 1});
    let (s, v, _) = call(
        &srv,
        "POST",
        &format!("{CM}?fieldValidation=Strict"),
        "application/json",
        Some(cm.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spek\""),
        "{v}"
    );
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i", "imagePolicy": "x"}]}});
    let (s, v, _) = call(
        &srv,
        "POST",
        "/api/v1/namespaces/default/pods?fieldValidation=Strict",
        "application/json",
        Some(pod),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.containers[0].imagePolicy\""),
        "{v}"
    );
}

#[tokio::test]
async fn finalizers_and_deletion() {
    let srv = server();
    let (_, v) = post(
        &srv,
        CM,
        json!({"metadata": {"name": "f", "finalizers": ["a/b"]}}),
    )
    .await;
    assert_eq!(v["metadata"]["finalizers"], json!(["a/b"]));
    let (s, v, _) = call(&srv, "DELETE", &format!("{CM}/f"), "application/json", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    // no new finalizers while deleting
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{CM}/f"),
        "application/merge-patch+json",
        Some(json!({"metadata": {"finalizers": ["a/b", "c/d"]}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // removing the last finalizer deletes
    let (s, _, _) = call(
        &srv,
        "PATCH",
        &format!("{CM}/f"),
        "application/json-patch+json",
        Some(json!([{"op": "remove", "path": "/metadata/finalizers"}])),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(get(&srv, &format!("{CM}/f")).await.0, StatusCode::NOT_FOUND);
    // preconditions
    let (_, v) = post(&srv, CM, json!({"metadata": {"name": "g"}})).await;
    let (s, v2, _) = call(
        &srv,
        "DELETE",
        &format!("{CM}/g"),
        "application/json",
        Some(json!({"preconditions": {"uid": "nope"}})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v2}");
    let (s, _, _) = call(
        &srv,
        "DELETE",
        &format!("{CM}/g"),
        "application/json",
        Some(json!({"preconditions": {"uid": v["metadata"]["uid"]}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

async fn owner_and_deps(
    srv: &e2e::ApiServer,
    owner: &str,
    dep_finalizer: bool,
) -> (String, Vec<String>) {
    let (_, o) = post(srv, CM, json!({"metadata": {"name": owner}})).await;
    let uid = o["metadata"]["uid"].as_str().unwrap().to_string();
    let mut deps = vec![];
    for i in 0..2 {
        let name = format!("{owner}-dep{i}");
        let mut meta = json!({"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid, "blockOwnerDeletion": true}]});
        if dep_finalizer && i == 0 {
            meta["finalizers"] = json!(["test/hold"]);
        }
        let (s, v) = post(srv, CM, json!({"metadata": meta})).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        deps.push(name);
    }
    (uid, deps)
}

#[tokio::test]
async fn garbage_collection_cascade_modes() {
    let srv = server();
    let exists = |name: String| {
        let srv = srv.clone();
        async move { get(&srv, &format!("{CM}/{name}")).await.0 == StatusCode::OK }
    };
    // background
    let (_, deps) = owner_and_deps(&srv, "bg", false).await;
    call(
        &srv,
        "DELETE",
        &format!("{CM}/bg"),
        "application/json",
        Some(json!({"propagationPolicy": "Background"})),
    )
    .await;
    for d in &deps {
        let (d2, e) = (d.clone(), exists);
        eventually("background GC", Duration::from_secs(5), move || {
            let d = d2.clone();
            async move { (!e(d).await).then_some(()) }
        })
        .await;
    }
    // foreground: owner waits (foregroundDeletion finalizer) for blocking dependents
    let (_, deps) = owner_and_deps(&srv, "fg", true).await;
    let (s, v, _) = call(
        &srv,
        "DELETE",
        &format!("{CM}/fg"),
        "application/json",
        Some(json!({"propagationPolicy": "Foreground"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert!(v["metadata"]["deletionTimestamp"].is_string());
    let (_, owner) = get(&srv, &format!("{CM}/fg")).await;
    assert_eq!(
        owner["metadata"]["finalizers"],
        json!(["foregroundDeletion"])
    );
    assert!(
        !exists(deps[1].clone()).await,
        "unblocked dependent deleted"
    );
    let (_, d0) = get(&srv, &format!("{CM}/{}", deps[0])).await;
    assert!(d0["metadata"]["deletionTimestamp"].is_string());
    call(
        &srv,
        "PATCH",
        &format!("{CM}/{}", deps[0]),
        "application/merge-patch+json",
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert!(!exists(deps[0].clone()).await);
    assert!(
        !exists("fg".into()).await,
        "owner goes once dependents are gone"
    );
    // orphan: dependents stay, ownerReferences removed
    let (_, deps) = owner_and_deps(&srv, "or", false).await;
    call(
        &srv,
        "DELETE",
        &format!("{CM}/or?propagationPolicy=Orphan"),
        "application/json",
        None,
    )
    .await;
    assert!(!exists("or".into()).await);
    for d in &deps {
        let (s, v) = get(&srv, &format!("{CM}/{d}")).await;
        assert_eq!(s, StatusCode::OK);
        assert!(v["metadata"].get("ownerReferences").is_none(), "{v}");
    }
}

#[tokio::test]
async fn namespace_lifecycle() {
    let srv = server();
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert_eq!(
            get(&srv, &format!("/api/v1/namespaces/{ns}")).await.0,
            StatusCode::OK
        );
    }
    post(
        &srv,
        "/api/v1/namespaces",
        json!({"metadata": {"name": "t"}}),
    )
    .await;
    post(
        &srv,
        "/api/v1/namespaces/t/configmaps",
        json!({"metadata": {"name": "held", "finalizers": ["x/y"]}}),
    )
    .await;
    post(
        &srv,
        "/api/v1/namespaces/t/secrets",
        json!({"metadata": {"name": "s"}}),
    )
    .await;
    let (s, v, _) = call(
        &srv,
        "DELETE",
        "/api/v1/namespaces/t",
        "application/json",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"]["phase"], "Terminating");
    assert_eq!(
        get(&srv, "/api/v1/namespaces/t/secrets/s").await.0,
        StatusCode::NOT_FOUND
    );
    let (s, v) = post(
        &srv,
        "/api/v1/namespaces/t/configmaps",
        json!({"metadata": {"name": "new"}}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert_eq!(
        get(&srv, "/api/v1/namespaces/t").await.0,
        StatusCode::OK,
        "held by the finalized configmap"
    );
    call(
        &srv,
        "PATCH",
        "/api/v1/namespaces/t/configmaps/held",
        "application/merge-patch+json",
        Some(json!({"metadata": {"finalizers": null}})),
    )
    .await;
    assert_eq!(
        get(&srv, "/api/v1/namespaces/t").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn list_selectors_and_pagination() {
    let srv = server();
    for i in 0..7 {
        let team = if i % 2 == 0 { "a" } else { "b" };
        post(&srv, CM, json!({"metadata": {"name": format!("c{i}"), "labels": {"team": team, "idx": i.to_string()}}})).await;
    }
    let names = |v: &Value| -> Vec<String> {
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
            .collect()
    };
    for (sel, want) in [
        ("team%3Da", vec!["c0", "c2", "c4", "c6"]),
        ("team%3D%3Db", vec!["c1", "c3", "c5"]),
        ("team!%3Da", vec!["c1", "c3", "c5"]),
        ("idx%20in%20(1,2)", vec!["c1", "c2"]),
        ("idx%20notin%20(1,2),team%3Db", vec!["c3", "c5"]),
        ("team", vec!["c0", "c1", "c2", "c3", "c4", "c5", "c6"]),
        ("!team", vec![]),
    ] {
        let (_, v) = get(&srv, &format!("{CM}?&labelSelector={sel}")).await;
        assert_eq!(names(&v), want, "{sel}");
    }
    let (_, v) = get(&srv, &format!("{CM}?fieldSelector=metadata.name%3Dc3")).await;
    assert_eq!(names(&v), vec!["c3"]);
    let (_, v) = get(
        &srv,
        "/api/v1/configmaps?fieldSelector=metadata.namespace!%3Ddefault",
    )
    .await;
    assert!(names(&v).is_empty());
    // pagination
    let mut all = vec![];
    let mut cont = String::new();
    let mut rvs = vec![];
    loop {
        let (_, v) = get(&srv, &format!("{CM}?limit=3&continue={cont}")).await;
        all.extend(names(&v));
        rvs.push(v["metadata"]["resourceVersion"].clone());
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
    }
    assert_eq!(all.len(), 7);
    assert_eq!(rvs.len(), 3);
    assert!(rvs.iter().all(|r| *r == rvs[0]));
    assert_eq!(v_kind(&srv).await, "ConfigMapList");
}

async fn v_kind(srv: &e2e::ApiServer) -> String {
    get(srv, CM).await.1["kind"].as_str().unwrap().to_string()
}

async fn read_watch(
    srv: &e2e::ApiServer,
    path: &str,
    until: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let lines = |buf: &mut Vec<u8>| {
        let mut events = Vec::new();
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            events.push(serde_json::from_slice(&line).unwrap());
        }
        events
    };
    read_watch_as(srv, path, "application/json", until, lines)
        .await
        .1
}

#[tokio::test]
async fn watch_semantics_bookmarks_410_selectors() {
    let srv = server();
    let (_, v) = post(
        &srv,
        CM,
        json!({"metadata": {"name": "w0", "labels": {"k": "v"}}}),
    )
    .await;
    let rv0 = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    post(
        &srv,
        CM,
        json!({"metadata": {"name": "w1", "labels": {"k": "v"}}}),
    )
    .await;
    // replay from a resourceVersion
    let ev = read_watch(
        &srv,
        &format!("{CM}?watch=true&resourceVersion={rv0}&timeoutSeconds=5"),
        |e| !e.is_empty(),
    )
    .await;
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[0]["object"]["metadata"]["name"], "w1");
    // initial events + bookmark with sendInitialEvents
    let ev = read_watch(&srv, &format!("{CM}?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true"), |e| e.iter().any(|x| x["type"] == "BOOKMARK")).await;
    assert_eq!(ev.len(), 3, "{ev:?}");
    assert_eq!(
        ev[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    // label selector transitions: relabel -> DELETED for that watcher
    let srv2 = srv.clone();
    let rv0c = rv0.clone();
    let t = tokio::spawn(async move {
        let rv0 = rv0c;
        read_watch(
            &srv2,
            &format!("{CM}?watch=true&labelSelector=k%3Dv&timeoutSeconds=5&resourceVersion={rv0}"),
            |e| e.iter().any(|x| x["type"] == "DELETED"),
        )
        .await
    });
    call(
        &srv,
        "PATCH",
        &format!("{CM}/w1"),
        "application/merge-patch+json",
        Some(json!({"metadata": {"labels": {"k": "other"}}})),
    )
    .await;
    let ev = t.await.unwrap();
    assert_eq!(ev.last().unwrap()["object"]["metadata"]["name"], "w1");
    // periodic bookmarks
    let ev = read_watch(
        &srv,
        &format!(
            "{CM}?watch=true&allowWatchBookmarks=true&resourceVersion={}",
            srv.store().current_rv()
        ),
        |e| e.iter().any(|x| x["type"] == "BOOKMARK"),
    )
    .await;
    assert_eq!(ev.last().unwrap()["object"]["kind"], "ConfigMap");
    // compaction -> 410 as an ERROR event
    srv.faults().compact();
    let ev = read_watch(
        &srv,
        &format!("{CM}?watch=true&resourceVersion={rv0}"),
        |e| !e.is_empty(),
    )
    .await;
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["reason"], "Expired");
    // timeoutSeconds closes the stream
    let ev = read_watch(
        &srv,
        &format!(
            "{CM}?watch=true&timeoutSeconds=1&resourceVersion={}",
            srv.store().current_rv()
        ),
        |_| false,
    )
    .await;
    assert!(ev.is_empty());
}

#[tokio::test]
async fn patch_formats_and_server_side_apply() {
    let srv = server();
    let dep = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "p"}, "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
        "containers": [{"name": "a", "image": "i:1", "ports": [{"containerPort": 80}], "volumeMounts": [{"name": "v", "mountPath": "/a"}]}],
        "volumes": [{"name": "v", "emptyDir": {}}], "tolerations": [{"key": "x", "operator": "Exists"}]}}}});
    let dp = "/apis/apps/v1/namespaces/default/deployments";
    let (s, v) = post(&srv, dp, dep).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(
        v["spec"]["template"]["spec"]["restartPolicy"], "Always",
        "defaulted"
    );
    let smp = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "ports": [{"containerPort": 81}], "volumeMounts": [{"mountPath": "/a", "$patch": "delete"}]},
        {"name": "b", "image": "j:1"}], "tolerations": [{"key": "y", "operator": "Exists"}], "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}]}}}});
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{dp}/p"),
        "application/strategic-merge-patch+json",
        Some(smp),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t = &v["spec"]["template"]["spec"];
    assert_eq!(
        t["containers"][0]["ports"],
        json!([{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81, "protocol": "TCP"}])
    );
    assert_eq!(t["containers"][0]["volumeMounts"], json!([]));
    assert_eq!(t["containers"][1]["name"], "b");
    assert_eq!(
        t["tolerations"],
        json!([{"key": "y", "operator": "Exists"}])
    );
    // strategic merge is rejected for custom resources (415), as upstream
    install_crd(&srv).await;
    post(&srv, W, widget("w", 1)).await;
    let (s, _, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/w"),
        "application/strategic-merge-patch+json",
        Some(json!({"spec": {}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // patch with a stale resourceVersion conflicts
    let (s, _, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/w"),
        "application/merge-patch+json",
        Some(json!({"metadata": {"resourceVersion": "1"}, "spec": {"replicas": 3}})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT);
    // SSA create, update, conflict, force
    let applied = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "s"}, "spec": {"size": "S", "replicas": 2}});
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/s?fieldManager=alice"),
        "application/apply-patch+yaml",
        Some(applied.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let mut bob = applied.clone();
    bob["spec"]["replicas"] = json!(5);
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/s?fieldManager=bob"),
        "application/apply-patch+yaml",
        Some(bob.clone()),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], ".spec.replicas");
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/s?fieldManager=bob&force=true"),
        "application/apply-patch+yaml",
        Some(bob),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["replicas"], 5);
    // dryRun patch does not persist
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{W}/s?dryRun=All"),
        "application/merge-patch+json",
        Some(json!({"spec": {"replicas": 7}})),
    )
    .await;
    assert_eq!(
        (s, v["spec"]["replicas"].as_i64()),
        (StatusCode::OK, Some(7))
    );
    assert_eq!(get(&srv, &format!("{W}/s")).await.1["spec"]["replicas"], 5);
}

#[tokio::test]
async fn discovery_and_openapi() {
    let srv = server();
    install_crd(&srv).await;
    let (_, v) = get(&srv, "/api/v1").await;
    let names: Vec<&str> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for n in [
        "pods",
        "pods/status",
        "pods/binding",
        "pods/eviction",
        "namespaces",
        "namespaces/finalize",
        "events",
        "nodes/status",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    let (_, v) = get(&srv, "/apis/example.com/v1").await;
    let rows = v["resources"].as_array().unwrap();
    let widgets = rows.iter().find(|r| r["name"] == "widgets").unwrap();
    assert_eq!(widgets["shortNames"], json!(["wd"]));
    assert_eq!(widgets["categories"], json!(["all"]));
    let scale = rows.iter().find(|r| r["name"] == "widgets/scale").unwrap();
    assert_eq!(
        (
            scale["group"].as_str(),
            scale["version"].as_str(),
            scale["kind"].as_str()
        ),
        (Some("autoscaling"), Some("v1"), Some("Scale"))
    );
    let (_, v) = get(&srv, "/apis").await;
    assert!(
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "example.com")
    );
    let (_, v) = get(&srv, "/apis/apps/v1").await;
    assert!(
        v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "deployments/scale")
    );
    // aggregated discovery (apidiscovery.k8s.io/v2) when asked for
    let req = http::Request::builder()
        .uri("/apis")
        .header(
            "accept",
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = tower::ServiceExt::oneshot(srv.router(), req).await.unwrap();
    assert_eq!(
        resp.headers()["content-type"],
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
    );
    let agg: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    let ex = agg["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["metadata"]["name"] == "example.com")
        .unwrap();
    let w = &ex["versions"][0]["resources"][0];
    assert_eq!(
        (w["resource"].as_str(), w["scope"].as_str()),
        (Some("widgets"), Some("Namespaced"))
    );
    assert!(
        w["subresources"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subresource"] == "scale" && s["responseKind"]["kind"] == "Scale")
    );
    let (_, idx) = get(&srv, "/openapi/v3").await;
    let url = idx["paths"]["apis/example.com/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, doc) = get(&srv, &url).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        doc["components"]["schemas"]["com.example.v1.Widget"]["x-kubernetes-group-version-kind"][0]
            ["kind"],
        "Widget"
    );
    let (s, doc) = get(&srv, "/openapi/v3/api/v1").await;
    assert_eq!(s, StatusCode::OK);
    assert!(doc["components"]["schemas"]["io.k8s.api.core.v1.Pod"].is_object());
    // CRD status and deletion
    let (_, crd) = get(
        &srv,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
    )
    .await;
    let conds: Vec<(&str, &str)> = crd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["type"].as_str().unwrap(), c["status"].as_str().unwrap()))
        .collect();
    assert!(conds.contains(&("Established", "True")) && conds.contains(&("NamesAccepted", "True")));
    post(&srv, W, widget("w", 1)).await;
    call(
        &srv,
        "DELETE",
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/widgets.example.com",
        "application/json",
        None,
    )
    .await;
    assert_eq!(
        get(&srv, "/apis/example.com/v1").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(get(&srv, &format!("{W}/w")).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn pod_binding_and_table_output() {
    let srv = server();
    post(
        &srv,
        "/api/v1/namespaces/default/pods",
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}}),
    )
    .await;
    let (s, v) = post(&srv, "/api/v1/namespaces/default/pods/p/binding", json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}})).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (_, p) = get(&srv, "/api/v1/namespaces/default/pods/p").await;
    assert_eq!(p["spec"]["nodeName"], "n1");
    assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
    let (s, v) = post(
        &srv,
        "/api/v1/namespaces/default/pods/p/binding",
        json!({"target": {"kind": "Node", "name": "n2"}}),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    // Table
    use tower::ServiceExt;
    let req = http::Request::builder()
        .uri("/api/v1/namespaces/default/pods")
        .header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(axum::body::Body::empty())
        .unwrap();
    let resp = srv.router().oneshot(req).await.unwrap();
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["kind"], "Table");
    assert_eq!(body["rows"][0]["cells"][0], "p");
}

#[tokio::test]
async fn faults_over_http_and_auth() {
    let srv = server();
    let (s, _) = post(
        &srv,
        "/_emulator/faults/fail-writes",
        json!({"resource": "configmaps", "count": 2, "code": 409}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for _ in 0..2 {
        let (s, v) = post(&srv, CM, json!({"metadata": {"name": "f"}})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
    }
    assert_eq!(
        post(&srv, CM, json!({"metadata": {"name": "f"}})).await.0,
        StatusCode::CREATED
    );
    // bearer token
    let secured = e2e::ApiServer::new(e2e::Config {
        token: Some("t0k".into()),
        ..test_config()
    });
    let (s, v) = get(&secured, "/api/v1/namespaces").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(v["reason"], "Unauthorized");
    // the in-process client carries the token
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(secured.client());
    assert_eq!(api.list(&Default::default()).await.unwrap().items.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_kube_client_over_tcp() {
    let srv = e2e::ApiServer::new(e2e::Config {
        token: Some("tok".into()),
        ..test_config()
    });
    let running = srv
        .serve_tcp("127.0.0.1:0".parse().unwrap(), true)
        .await
        .unwrap();
    assert!(running.url.starts_with("https://127.0.0.1:"));
    let client = running.client().await.unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    let api: kube::Api<k8s_openapi::api::core::v1::ConfigMap> =
        kube::Api::default_namespaced(client);
    api.create(
        &Default::default(),
        &serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(api.list(&Default::default()).await.unwrap().items.len(), 1);
    let plain = srv
        .serve_tcp("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let c2 = plain.client().await.unwrap();
    assert_eq!(
        kube::Api::<k8s_openapi::api::core::v1::ConfigMap>::default_namespaced(c2)
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_patches_retry_instead_of_conflicting() {
    let srv = server();
    post(&srv, CM, json!({"metadata": {"name": "hot"}, "data": {}})).await;
    let mut tasks = Vec::new();
    for i in 0..16 {
        let srv = srv.clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({"data": {format!("k{i}"): "v"}});
            call(
                &srv,
                "PATCH",
                &format!("{CM}/hot"),
                "application/merge-patch+json",
                Some(body),
            )
            .await
            .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let (_, v) = get(&srv, &format!("{CM}/hot")).await;
    assert_eq!(v["data"].as_object().unwrap().len(), 16);
    // an explicit resourceVersion in the patch is a precondition
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{CM}/hot"),
        "application/merge-patch+json",
        Some(json!({"metadata": {"resourceVersion": "2"}, "data": {"x": "y"}})),
    )
    .await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
}

#[tokio::test]
async fn cel_validation_rules_are_enforced() {
    let srv = server();
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "gadgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "gadgets", "singular": "gadget", "kind": "Gadget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                "spec": {"type": "object",
                    "x-kubernetes-validations": [
                        {"rule": "self.minReplicas <= self.maxReplicas", "message": "minReplicas must not exceed maxReplicas"},
                        {"rule": "self.mode == oldSelf.mode", "message": "mode is immutable", "fieldPath": ".mode"}
                    ],
                    "properties": {"minReplicas": {"type": "integer"}, "maxReplicas": {"type": "integer"}, "mode": {"type": "string"}}}}}}}]}});
    let (s, v) = post(
        &srv,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
        crd,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let g = "/apis/example.com/v1/namespaces/default/gadgets";
    let bad = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"minReplicas": 3, "maxReplicas": 1, "mode": "a"}});
    let (s, v) = post(&srv, g, bad).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "spec");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("spec: Invalid value: \"object\": minReplicas must not exceed maxReplicas"),
        "{v}"
    );
    let ok = json!({"apiVersion": "example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"minReplicas": 1, "maxReplicas": 3, "mode": "a"}});
    assert_eq!(post(&srv, g, ok).await.0, StatusCode::CREATED);
    // transition rule on update
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{g}/g"),
        "application/merge-patch+json",
        Some(json!({"spec": {"mode": "b"}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "spec.mode");
    let (s, _, _) = call(
        &srv,
        "PATCH",
        &format!("{g}/g"),
        "application/merge-patch+json",
        Some(json!({"spec": {"maxReplicas": 5}})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
}

struct LabelAndGuard;

impl e2e::AdmissionHook for LabelAndGuard {
    fn mutate<'a>(
        &'a self,
        req: &'a mut e2e::AdmissionRequest,
    ) -> futures::future::BoxFuture<'a, Result<(), e2e::ApiError>> {
        Box::pin(async move {
            if req.resource.plural == "configmaps"
                && let Some(obj) = req.object.as_mut()
            {
                obj["metadata"]["labels"]["admitted"] = json!("yes");
            }
            Ok(())
        })
    }

    fn validate<'a>(
        &'a self,
        req: &'a e2e::AdmissionRequest,
    ) -> futures::future::BoxFuture<'a, Result<(), e2e::ApiError>> {
        Box::pin(async move {
            let forbidden = req
                .object
                .as_ref()
                .is_some_and(|o| o["data"]["forbidden"].is_string());
            if forbidden || (req.operation == e2e::Operation::Delete && req.name == "keep") {
                return Err(e2e::ApiError::forbidden(format!(
                    "admission webhook \"guard\" denied the request: {} {}",
                    req.operation.as_str(),
                    req.name
                )));
            }
            Ok(())
        })
    }
}

#[tokio::test]
async fn admission_hooks_mutate_and_validate() {
    let srv = server();
    srv.add_admission_hook(std::sync::Arc::new(LabelAndGuard));
    let (s, v) = post(&srv, CM, json!({"metadata": {"name": "keep"}, "data": {}})).await;
    assert_eq!(s, StatusCode::CREATED);
    assert_eq!(v["metadata"]["labels"]["admitted"], "yes");
    let (s, v) = post(
        &srv,
        CM,
        json!({"metadata": {"name": "x"}, "data": {"forbidden": "1"}}),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    let (s, _, _) = call(
        &srv,
        "PATCH",
        &format!("{CM}/keep"),
        "application/merge-patch+json",
        Some(json!({"data": {"forbidden": "1"}})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = call(
        &srv,
        "DELETE",
        &format!("{CM}/keep"),
        "application/json",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert_eq!(get(&srv, &format!("{CM}/keep")).await.0, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_tasks_end_when_clients_disconnect() {
    use tower::ServiceExt;
    let srv = server();
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let mut bodies = Vec::new();
    for _ in 0..20 {
        let req = http::Request::builder()
            .uri(format!("{CM}?watch=true"))
            .body(axum::body::Body::empty())
            .unwrap();
        bodies.push(srv.router().oneshot(req).await.unwrap().into_body());
    }
    assert!(metrics.num_alive_tasks() >= baseline + 20);
    drop(bodies);
    eventually("watch tasks gone", Duration::from_secs(5), || async {
        (metrics.num_alive_tasks() <= baseline).then_some(())
    })
    .await;
}

#[tokio::test]
async fn immutable_fields_of_builtins() {
    let srv = server();
    let pods = "/api/v1/namespaces/default/pods";
    post(&srv, pods, json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i:1"}], "tolerations": [{"key": "a", "operator": "Exists"}]}})).await;
    let patch = |body: Value| {
        let srv = srv.clone();
        async move {
            call(
                &srv,
                "PATCH",
                &format!("{pods}/p"),
                "application/strategic-merge-patch+json",
                Some(body),
            )
            .await
        }
    };
    // image changes and toleration additions are allowed
    let (s, v, _) = patch(json!({"spec": {"containers": [{"name": "c", "image": "i:2"}], "tolerations": [{"key": "a", "operator": "Exists"}, {"key": "b", "operator": "Exists"}]}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["generation"], 2);
    // anything else in the pod spec is forbidden
    let (s, v, _) = patch(json!({"spec": {"restartPolicy": "Never"}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "spec");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("pod updates may not change fields other than"),
        "{v}"
    );
    let (s, _, _) = patch(json!({"spec": {"nodeName": "n1"}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    // metadata changes are fine
    assert_eq!(
        patch(json!({"metadata": {"labels": {"x": "y"}}})).await.0,
        StatusCode::OK
    );
    // uid is immutable: a patch naming the object's own uid passes, another uid is refused
    // (how a client binds a patch to the object it saw)
    let (_, live, _) = call(&srv, "GET", &format!("{pods}/p"), "", None).await;
    let uid = live["metadata"]["uid"].clone();
    let (s, v, _) = patch(json!({"metadata": {"uid": uid, "labels": {"x": "z"}}})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v, _) = patch(json!({"metadata": {"uid": "another", "labels": {"x": "w"}}})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.uid");
    // resources change only through pods/resize
    let res = json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "300m"}}}]}});
    assert_eq!(patch(res.clone()).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    let (s, v, _) = call(
        &srv,
        "PATCH",
        &format!("{pods}/p/resize"),
        "application/strategic-merge-patch+json",
        Some(res),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["spec"]["containers"][0]["resources"]["requests"]["cpu"],
        "300m"
    );
    assert_eq!(v["spec"]["containers"][0]["image"], "i:2");
    // workload selectors are immutable
    let dep = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    post(&srv, "/apis/apps/v1/namespaces/default/deployments", dep).await;
    let (s, v, _) = call(
        &srv,
        "PATCH",
        "/apis/apps/v1/namespaces/default/deployments/d",
        "application/merge-patch+json",
        Some(json!({"spec": {"selector": {"matchLabels": {"app": "e"}}}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("spec.selector: Invalid value"),
        "{v}"
    );
    // services keep their ClusterIP on an update without one
    let (_, svc) = post(
        &srv,
        "/api/v1/namespaces/default/services",
        json!({"metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .await;
    let ip = svc["spec"]["clusterIP"].clone();
    let mut put = svc.clone();
    put["spec"].as_object_mut().unwrap().remove("clusterIP");
    put["spec"].as_object_mut().unwrap().remove("clusterIPs");
    let (s, v, _) = call(
        &srv,
        "PUT",
        "/api/v1/namespaces/default/services/s",
        "application/json",
        Some(put),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["spec"]["clusterIP"], ip);
}

#[tokio::test]
async fn objects_created_for_a_deleted_owner_are_collected() {
    // A controller with a stale cache may create a dependent after its owner is gone (a
    // ReplicaSet for a just-deleted Deployment): the garbage collector removes it.
    let srv = server();
    let (s, v) = post(
        &srv,
        CM,
        json!({"metadata": {"name": "orphan", "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "00000000-dead-beef-0000-000000000000", "controller": true}]}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let (s, _) = get(&srv, &format!("{CM}/orphan")).await;
    assert_eq!(
        s,
        StatusCode::NOT_FOUND,
        "collected at once: its only owner does not exist"
    );

    // With one live owner left, only the dangling reference goes.
    let (_, live) = post(&srv, CM, json!({"metadata": {"name": "live-owner"}})).await;
    let live_uid = live["metadata"]["uid"].as_str().expect("uid").to_string();
    let (s, _) = post(
        &srv,
        CM,
        json!({"metadata": {"name": "half", "ownerReferences": [
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "gone", "uid": "00000000-dead-beef-0000-000000000000"},
            {"apiVersion": "v1", "kind": "ConfigMap", "name": "live-owner", "uid": live_uid}
        ]}}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = get(&srv, &format!("{CM}/half")).await;
    assert_eq!(s, StatusCode::OK);
    let refs = v["metadata"]["ownerReferences"].as_array().expect("refs");
    assert_eq!(refs.len(), 1, "{v}");
    assert_eq!(refs[0]["name"], "live-owner");
}
