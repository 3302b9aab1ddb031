//! The executor against a small mocked API server (a `tower::service_fn` emulating the few
//! endpoints it uses: discovery of apps/v1, deployments/scale, HPAs, CronHPA status, Events).
//! Each test drives `reconcile` directly with a manual clock. The full e2e tier (kubectl,
//! watches, leader election) runs against the emulated API server of the `e2e` crate.

use addon_common::kube;
use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{Arc, Mutex},
    time::Duration,
};

use addon_common::api::cronhpa::CronHPA;
use addon_common::kube::{Client, runtime::controller::Action};
use addon_common::{events::EventRecorder, guard::DeserializeGuard};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use cronhpa_controller::{
    controller::{COMPONENT, Clock, Config, Context, error_policy, reconcile},
    metrics::Metrics,
    scale::ORIGINAL_MAX_ANNOTATION,
};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody, combinators::BoxBody};
use hyper::body::Frame;
use serde_json::{Value, json};
use tokio::sync::broadcast;

const CRONHPAS: &str = "/apis/extensions.tkestack.io/v1/namespaces/default/cronhpas";
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/default/deployments";
const HPAS: &str = "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers";

#[derive(Default)]
struct State {
    objects: HashMap<String, Value>,
    rv: u64,
    /// The next N GET .../scale answer 500.
    fail_get_scale: usize,
    /// The next N PUT .../scale answer 409 (as if another writer won the race).
    conflicts: usize,
    events: Vec<Value>,
    /// Every request, with the (tokio) time it arrived.
    log: Vec<(String, tokio::time::Instant)>,
    /// Watch events of CronHPAs (status patches), for open watches.
    watch: Option<broadcast::Sender<Value>>,
}

/// The state, and a gate every Event request passes (a test holding its write lock blocks
/// Event publication).
#[derive(Clone, Default)]
struct MockApi(Arc<Mutex<State>>, Arc<tokio::sync::RwLock<()>>);

enum Reply {
    Json(u16, Value),
    Watch(broadcast::Receiver<Value>),
}

fn status(code: u16, reason: &str, message: &str) -> (u16, Value) {
    (
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code}),
    )
}

impl MockApi {
    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn client(&self) -> Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<kube::client::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let gate = api.1.clone();
                let _pass = if parts.uri.path().starts_with("/apis/events.k8s.io/") {
                    Some(gate.read_owned().await)
                } else {
                    None
                };
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let query = parts.uri.query().unwrap_or_default();
                let reply = if query.contains("watch=true") {
                    api.with(|s| {
                        s.log.push((
                            format!("WATCH {}", parts.uri.path()),
                            tokio::time::Instant::now(),
                        ));
                        let tx = s.watch.get_or_insert_with(|| broadcast::channel(1024).0);
                        Reply::Watch(tx.subscribe())
                    })
                } else {
                    let (code, value) = api.handle(&parts.method, parts.uri.path(), body);
                    Reply::Json(code, value)
                };
                let (code, body) = match reply {
                    Reply::Json(code, value) => (
                        code,
                        Full::new(Bytes::from(value.to_string()))
                            .map_err(|never| match never {})
                            .boxed(),
                    ),
                    Reply::Watch(rx) => {
                        let events = futures::stream::unfold(rx, |mut rx| async move {
                            loop {
                                match rx.recv().await {
                                    Ok(event) => {
                                        let line = Bytes::from(format!("{event}\n"));
                                        return Some((Ok::<_, Infallible>(Frame::data(line)), rx));
                                    }
                                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                                    Err(broadcast::error::RecvError::Closed) => return None,
                                }
                            }
                        });
                        (200, BoxBody::new(StreamBody::new(events)))
                    }
                };
                let response = Response::builder()
                    .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
                    .header("content-type", "application/json")
                    .body(body)
                    .unwrap_or_else(|_| Response::new(BoxBody::default()));
                Ok::<_, Infallible>(response)
            }
        });
        Client::new(service, "default")
    }

    fn handle(&self, method: &Method, path: &str, body: Value) -> (u16, Value) {
        self.with(|s| {
            s.log
                .push((format!("{method} {path}"), tokio::time::Instant::now()));
            s.rv += 1;
            let rv = s.rv.to_string();
            if method == Method::GET && path == "/apis/apps/v1" {
                return (200, json!({
                    "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": "apps/v1",
                    "resources": [
                        {"name": "deployments", "singularName": "deployment", "namespaced": true,
                         "kind": "Deployment", "verbs": ["get", "list", "watch", "update", "patch"]},
                        {"name": "deployments/scale", "singularName": "", "namespaced": true,
                         "group": "autoscaling", "version": "v1", "kind": "Scale",
                         "verbs": ["get", "patch", "update"]},
                        {"name": "controllerrevisions", "singularName": "controllerrevision",
                         "namespaced": true, "kind": "ControllerRevision", "verbs": ["get"]}
                    ]
                }));
            }
            if *method == Method::GET && path == "/apis/extensions.tkestack.io/v1/cronhpas" {
                let items: Vec<Value> = s
                    .objects
                    .iter()
                    .filter(|(k, _)| k.starts_with(CRONHPAS))
                    .map(|(_, v)| v.clone())
                    .collect();
                return (200, json!({
                    "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPAList",
                    "metadata": {"resourceVersion": rv}, "items": items
                }));
            }
            if path.starts_with("/apis/events.k8s.io/v1/") {
                let mut event = body;
                if *method == Method::PATCH {
                    // A series update: merge the patch into the event it names (one entry
                    // per publish, as the tests count them).
                    let name = path.rsplit('/').next().unwrap_or_default();
                    if let Some(mut merged) = s
                        .events
                        .iter()
                        .rev()
                        .find(|e| e["metadata"]["name"] == name)
                        .cloned()
                    {
                        for (k, v) in event.as_object().cloned().unwrap_or_default() {
                            merged[k] = v;
                        }
                        event = merged;
                    }
                }
                if event["metadata"]["name"].is_null() {
                    event["metadata"]["name"] = json!(format!("event-{rv}"));
                }
                s.events.push(event.clone());
                return (if *method == Method::POST { 201 } else { 200 }, event);
            }
            if let Some(base) = path.strip_suffix("/scale") {
                let Some(obj) = s.objects.get_mut(base) else {
                    return status(404, "NotFound", "not found");
                };
                if *method == Method::GET {
                    if s.fail_get_scale > 0 {
                        s.fail_get_scale -= 1;
                        return status(500, "InternalError", "etcd is sad");
                    }
                    return (200, json!({
                        "apiVersion": "autoscaling/v1", "kind": "Scale",
                        "metadata": obj["metadata"].clone(),
                        "spec": {"replicas": obj["spec"]["replicas"]},
                        "status": {"replicas": obj["spec"]["replicas"]}
                    }));
                }
                if *method == Method::PUT {
                    if s.conflicts > 0 {
                        s.conflicts -= 1;
                        obj["metadata"]["resourceVersion"] = json!(rv);
                        return status(409, "Conflict", "the object has been modified");
                    }
                    if body["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"] {
                        return status(409, "Conflict", "resourceVersion mismatch");
                    }
                    obj["spec"]["replicas"] = body["spec"]["replicas"].clone();
                    obj["metadata"]["resourceVersion"] = json!(rv);
                    return (200, body);
                }
            }
            let base = path.strip_suffix("/status").unwrap_or(path);
            let Some(obj) = s.objects.get_mut(base) else {
                return status(404, "NotFound", &format!("{base} not found"));
            };
            match *method {
                Method::GET => (200, obj.clone()),
                Method::PATCH => {
                    let want = &body["metadata"]["resourceVersion"];
                    if !want.is_null() && *want != obj["metadata"]["resourceVersion"] {
                        return status(409, "Conflict", "resourceVersion mismatch");
                    }
                    json_patch::merge(obj, &body);
                    obj["metadata"]["resourceVersion"] = json!(rv);
                    let obj = obj.clone();
                    if base.starts_with(CRONHPAS)
                        && let Some(tx) = &s.watch
                    {
                        let _ = tx.send(json!({"type": "MODIFIED", "object": obj.clone()}));
                    }
                    (200, obj)
                }
                _ => status(405, "MethodNotAllowed", "unsupported"),
            }
        })
    }

    fn add_deployment(&self, name: &str, replicas: i32) {
        self.with(|s| {
            s.objects.insert(
                format!("{DEPLOYMENTS}/{name}"),
                json!({"apiVersion": "apps/v1", "kind": "Deployment",
                       "metadata": {"name": name, "namespace": "default", "resourceVersion": "1"},
                       "spec": {"replicas": replicas}}),
            );
        });
    }

    fn add_cronhpa(&self, obj: &Value) -> CronHPA {
        let name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.with(|s| s.objects.insert(format!("{CRONHPAS}/{name}"), obj.clone()));
        self.cronhpa(&name)
    }

    /// The stored CronHPA, as the controller's watch would deliver it.
    fn cronhpa(&self, name: &str) -> CronHPA {
        let v = self.with(|s| s.objects.get(&format!("{CRONHPAS}/{name}")).cloned());
        serde_json::from_value(v.unwrap_or_default()).expect("stored cronhpa")
    }

    fn replicas(&self, deployment: &str) -> i64 {
        self.with(|s| {
            s.objects[&format!("{DEPLOYMENTS}/{deployment}")]["spec"]["replicas"].as_i64()
        })
        .unwrap_or(-1)
    }

    fn event_reasons(&self) -> Vec<(String, String)> {
        self.with(|s| {
            s.events
                .iter()
                .map(|e| {
                    (
                        e["reason"].as_str().unwrap_or_default().to_owned(),
                        e["note"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
    }

    fn count_exact(&self, line: &str) -> usize {
        self.with(|s| s.log.iter().filter(|(l, _)| l == line).count())
    }

    fn count(&self, prefix: &str) -> usize {
        self.with(|s| s.log.iter().filter(|(l, _)| l.starts_with(prefix)).count())
    }

    /// When requests starting with `prefix` arrived.
    fn times(&self, prefix: &str) -> Vec<tokio::time::Instant> {
        self.with(|s| {
            s.log
                .iter()
                .filter(|(l, _)| l.starts_with(prefix))
                .map(|(_, t)| *t)
                .collect()
        })
    }
}

struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    fn new(t: &str) -> Arc<Self> {
        Arc::new(Self(Mutex::new(utc(t))))
    }
    fn set(&self, t: &str) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = utc(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

/// The object as the Controller hands it over: through the decoding guard.
fn guarded(obj: &CronHPA) -> Arc<DeserializeGuard<CronHPA>> {
    Arc::new(DeserializeGuard(Ok(obj.clone())))
}

/// One reconciliation, then its background status write (which the controller's cache shows
/// before the object's next reconciliation).
async fn reconcile_written(
    obj: Arc<CronHPA>,
    ctx: Arc<Context>,
) -> Result<Action, cronhpa_controller::Error> {
    let result = reconcile(guarded(&obj), ctx.clone()).await;
    assert!(
        ctx.status.flush_for(Duration::from_secs(10)).await,
        "status not written"
    );
    result
}

fn context(api: &MockApi, clock: Arc<ManualClock>) -> (Arc<Context>, prometheus::Registry) {
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::register(&registry).expect("metrics"));
    let ctx = Context::new(
        api.client(),
        EventRecorder::new(api.client(), COMPONENT),
        metrics,
        clock,
        Config::default(),
    );
    (Arc::new(ctx), registry)
}

/// The seed's second example, with a status as after downtime.
fn web_servers(last: Option<&str>) -> Value {
    let mut v = json!({
        "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
        "metadata": {"name": "web-servers-cronhpa", "namespace": "default", "uid": "u1",
                     "resourceVersion": "1", "generation": 1,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-servers"},
            "crons": [
                {"schedule": "0 8 * * *", "targetReplicas": 60},
                {"schedule": "0 9 * * *", "targetReplicas": 10},
                {"schedule": "0 19 * * *", "targetReplicas": 60},
                {"schedule": "0 21 * * *", "targetReplicas": 10}
            ]
        }
    });
    if let Some(last) = last {
        v["status"] = json!({"lastScheduleTime": last});
    }
    v
}

#[tokio::test]
async fn catch_up_after_downtime_scales_to_the_latest_occurrence() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let clock = ManualClock::new("2024-01-02T10:00:00Z");
    let (ctx, registry) = context(&api, clock.clone());

    let action = reconcile_written(Arc::new(obj), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(
        api.replicas("web-servers"),
        10,
        "08:00→60 and 09:00→10 missed: end at 10"
    );
    assert_eq!(
        action,
        Action::requeue(Duration::from_secs(9 * 3600 - 10)),
        "next: 19:00, woken 10 s early to read the target ahead"
    );

    let stored = api.cronhpa("web-servers-cronhpa");
    let status = stored.status.clone().expect("status");
    assert_eq!(
        status.last_schedule_time.map(|t| t.0.to_string()),
        Some("2024-01-02T09:00:00Z".to_owned())
    );
    let crons = status.crons.expect("crons");
    assert_eq!(crons.len(), 4);
    assert_eq!(crons[1].message.as_deref(), Some("New size: 10"));
    ctx.events.flush().await;
    assert_eq!(
        api.event_reasons(),
        [("SuccessfulRescale".to_owned(), "New size: 10".to_owned())]
    );

    // The watch delivers the updated object: nothing more happens (fires once).
    let puts = api.count("PUT");
    let patches = api.count("PATCH");
    let action = reconcile_written(Arc::new(stored.clone()), ctx.clone())
        .await
        .expect("again");
    assert_eq!(api.count("PUT"), puts);
    assert_eq!(
        api.count("PATCH"),
        patches,
        "an unchanged status is not rewritten"
    );
    assert_eq!(action, Action::requeue(Duration::from_secs(9 * 3600 - 10)));

    // At 19:00 the timer fires.
    clock.set("2024-01-02T19:00:00Z");
    reconcile_written(Arc::new(stored), ctx)
        .await
        .expect("19:00");
    assert_eq!(api.replicas("web-servers"), 60);

    let text = addon_common::metrics::encode_text(&registry);
    assert!(
        text.contains(r#"cronhpa_controller_fires_total{result="succeeded"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("cronhpa_controller_schedule_lag_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains(r#"cronhpa_controller_objects{condition="ready"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("cronhpa_controller_reconcile_total 3"),
        "{text}"
    );
}

#[tokio::test]
async fn killed_across_a_fire_time_fires_once_after_restart() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 10);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:30:00Z")));
    // The controller was down at 08:00 and comes back (a new process: new context) at 08:00:40.
    let clock = ManualClock::new("2024-01-02T08:00:40Z");
    let (ctx, _) = context(&api, clock.clone());
    reconcile_written(Arc::new(obj), ctx).await.expect("first");
    assert_eq!(api.replicas("web-servers"), 60);
    // Someone scales by hand; another restart must not re-apply 08:00.
    api.with(|s| {
        s.objects
            .get_mut(&format!("{DEPLOYMENTS}/web-servers"))
            .expect("d")["spec"]["replicas"] = json!(42)
    });
    let (ctx, _) = context(&api, clock.clone());
    reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx)
        .await
        .expect("second");
    assert_eq!(api.replicas("web-servers"), 42);
    assert_eq!(api.count("PUT"), 1);
}

#[tokio::test]
async fn conflicts_are_retried_with_a_fresh_read() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    api.with(|s| s.conflicts = 2);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let (ctx, _) = context(&api, ManualClock::new("2024-01-02T08:00:01Z"));
    reconcile_written(Arc::new(obj), ctx)
        .await
        .expect("reconcile");
    assert_eq!(api.replicas("web-servers"), 60);
    assert_eq!(api.count("PUT"), 3);
    assert_eq!(
        api.count(&format!("GET {DEPLOYMENTS}/web-servers/scale")),
        3
    );
    // Discovery happened once and is cached.
    assert_eq!(api.count_exact("GET /apis/apps/v1"), 1);
}

#[tokio::test]
async fn api_faults_are_reported_and_retried_with_backoff() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    api.with(|s| s.fail_get_scale = 2);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let clock = ManualClock::new("2024-01-02T08:00:00Z");
    let (ctx, registry) = context(&api, clock.clone());

    let err = reconcile_written(Arc::new(obj.clone()), ctx.clone())
        .await
        .expect_err("500");
    assert_eq!(err.metric_label(), "get_scale");
    assert_eq!(err.event_reason(), "FailedGetScale");
    assert_eq!(
        error_policy(guarded(&obj), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    let stored = api.cronhpa("web-servers-cronhpa");
    let status = stored.status.clone().expect("status");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "FailedGetScale")
    );
    assert_eq!(
        status.last_schedule_time.map(|t| t.0.to_string()),
        Some("2024-01-02T07:00:00Z".to_owned()),
        "not applied yet"
    );
    // The fire path does not wait for its Event; the Event is published in the background.
    ctx.events.flush().await;

    clock.set("2024-01-02T08:00:01Z");
    let err = reconcile_written(Arc::new(stored.clone()), ctx.clone())
        .await
        .expect_err("500 again");
    assert_eq!(
        error_policy(guarded(&stored), &err, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );

    clock.set("2024-01-02T08:00:03Z");
    reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx.clone())
        .await
        .expect("recovers");
    assert_eq!(api.replicas("web-servers"), 60);
    ctx.events.flush().await;
    let reasons: Vec<_> = api.event_reasons().into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        reasons,
        ["FailedGetScale", "FailedGetScale", "SuccessfulRescale"]
    );
    let text = addon_common::metrics::encode_text(&registry);
    assert!(
        text.contains(r#"cronhpa_controller_fires_total{result="failed"} 2"#),
        "{text}"
    );
    let status = api.cronhpa("web-servers-cronhpa").status.expect("status");
    let ready = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Ready")
        .expect("ready");
    assert_eq!(ready.status, "True");
}

#[tokio::test]
async fn an_invalid_object_does_not_affect_valid_ones() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    api.add_deployment("demo-deployment", 3);
    // Stored before the webhook existed: DOW 8.
    let bad = api.add_cronhpa(&json!({
        "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
        "metadata": {"name": "bad", "namespace": "default", "uid": "u2", "generation": 1,
                     "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-deployment"},
                 "crons": [{"schedule": "0 23 * * 8", "targetReplicas": 30}]}
    }));
    let good = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let (ctx, registry) = context(&api, ManualClock::new("2024-01-02T08:00:00Z"));

    let action = reconcile_written(Arc::new(bad), ctx.clone())
        .await
        .expect("invalid is not an error");
    assert_eq!(action, Action::await_change());
    reconcile_written(Arc::new(good), ctx.clone())
        .await
        .expect("good");
    assert_eq!(api.replicas("web-servers"), 60);
    assert_eq!(api.replicas("demo-deployment"), 3);

    let status = api.cronhpa("bad").status.expect("status");
    let invalid = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Invalid")
        .expect("c");
    assert_eq!(invalid.status, "True");
    assert!(
        invalid
            .message
            .contains(r#"spec.crons[0].schedule: invalid schedule "0 23 * * 8""#)
    );
    ctx.events.flush().await;
    let events = api.event_reasons();
    assert!(
        events
            .iter()
            .any(|(r, n)| r == "InvalidSpec" && n.contains("spec.crons[0]")),
        "{events:?}"
    );
    // Re-reconciling the invalid object does not repeat the Warning.
    reconcile_written(Arc::new(api.cronhpa("bad")), ctx.clone())
        .await
        .expect("again");
    ctx.events.flush().await;
    assert_eq!(
        api.event_reasons()
            .iter()
            .filter(|(r, _)| r == "InvalidSpec")
            .count(),
        1
    );
    let text = addon_common::metrics::encode_text(&registry);
    assert!(
        text.contains(r#"cronhpa_controller_objects{condition="invalid"} 1"#),
        "{text}"
    );
}

#[tokio::test]
async fn already_at_size_writes_nothing_but_the_status() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 60);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let (ctx, _) = context(&api, ManualClock::new("2024-01-02T08:00:00Z"));
    reconcile_written(Arc::new(obj), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(api.count("PUT"), 0);
    ctx.events.flush().await;
    assert!(api.event_reasons().is_empty());
    let status = api.cronhpa("web-servers-cronhpa").status.expect("status");
    assert_eq!(
        status.last_schedule_time.map(|t| t.0.to_string()),
        Some("2024-01-02T08:00:00Z".to_owned())
    );
}

/// An HPA `web` (min 2, max `max_replicas`) and the seed's web-servers CronHPA targeting it.
fn hpa_target(max_replicas: i32) -> (MockApi, CronHPA) {
    let api = MockApi::default();
    api.with(|s| {
        s.objects.insert(
            format!("{HPAS}/web"),
            json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                   "metadata": {"name": "web", "namespace": "default", "resourceVersion": "1"},
                   "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                            "minReplicas": 2, "maxReplicas": max_replicas}}),
        )
    });
    let mut v = web_servers(Some("2024-01-02T07:00:00Z"));
    v["spec"]["scaleTargetRef"] =
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": "web"});
    let obj = api.add_cronhpa(&v);
    (api, obj)
}

#[tokio::test]
async fn hpa_mode_moves_the_bounds_instead_of_the_replicas() {
    let (api, obj) = hpa_target(10);
    let clock = ManualClock::new("2024-01-02T08:00:00Z");
    let (ctx, _) = context(&api, clock.clone());
    reconcile_written(Arc::new(obj), ctx.clone())
        .await
        .expect("08:00");
    let hpa = api.with(|s| s.objects[&format!("{HPAS}/web")].clone());
    assert_eq!(hpa["spec"]["minReplicas"], 60);
    assert_eq!(hpa["spec"]["maxReplicas"], 60);
    assert_eq!(
        hpa["metadata"]["annotations"][ORIGINAL_MAX_ANNOTATION],
        "10"
    );

    clock.set("2024-01-02T09:00:00Z");
    reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx)
        .await
        .expect("09:00");
    let hpa = api.with(|s| s.objects[&format!("{HPAS}/web")].clone());
    assert_eq!(hpa["spec"]["minReplicas"], 10);
    assert_eq!(
        hpa["spec"]["maxReplicas"], 10,
        "the user's maxReplicas is restored"
    );
    assert!(
        hpa["metadata"]["annotations"]
            .get(ORIGINAL_MAX_ANNOTATION)
            .is_none()
    );
    // No discovery and no scale subresource in HPA mode.
    assert_eq!(api.count_exact("GET /apis/apps/v1"), 0);
    assert_eq!(api.count("PUT"), 0);
}

#[tokio::test]
async fn a_kind_without_scale_subresource_is_reported() {
    let api = MockApi::default();
    let mut v = web_servers(Some("2024-01-02T07:00:00Z"));
    v["spec"]["scaleTargetRef"] =
        json!({"apiVersion": "apps/v1", "kind": "ControllerRevision", "name": "x"});
    let obj = api.add_cronhpa(&v);
    let (ctx, _) = context(&api, ManualClock::new("2024-01-02T08:00:00Z"));
    let err = reconcile_written(Arc::new(obj), ctx.clone())
        .await
        .expect_err("no scale");
    assert_eq!(err.metric_label(), "no_scale_subresource");
    ctx.events.flush().await;
    let events = api.event_reasons();
    assert_eq!(events[0].0, "FailedGetScale");
    assert!(
        events[0].1.contains("has no scale subresource"),
        "{events:?}"
    );
}

/// Simulated wall clock following tokio's (paused, auto-advancing) clock.
struct TokioClock {
    base: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    fn at(&self, t: tokio::time::Instant) -> DateTime<Utc> {
        self.base + chrono::Duration::from_std(t - self.start).unwrap_or_default()
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        self.at(tokio::time::Instant::now())
    }
}

/// The real kube-runtime Controller (list + watch + requeue timers) on simulated time: each
/// occurrence is applied at its scheduled second, and nothing is requested between fires.
#[tokio::test(start_paused = true)]
async fn controller_fires_on_timers_without_polling() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    api.add_deployment("demo-deployment", 3);
    api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    // An invalid object next to it changes nothing for the valid one.
    api.add_cronhpa(&json!({
        "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
        "metadata": {"name": "bad", "namespace": "default", "uid": "u2", "generation": 1,
                     "resourceVersion": "1", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "demo-deployment"},
                 "crons": [{"schedule": "not a schedule", "targetReplicas": 30}]}
    }));
    let clock = Arc::new(TokioClock {
        base: utc("2024-01-02T07:59:00Z"),
        start: tokio::time::Instant::now(),
    });
    let registry = prometheus::Registry::new();
    let metrics = Arc::new(Metrics::register(&registry).expect("metrics"));
    let ctx = Arc::new(Context::new(
        api.client(),
        EventRecorder::new(api.client(), COMPONENT),
        metrics,
        clock.clone(),
        Config::default(),
    ));
    let health = addon_common::admin::Health::default();
    let stop = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(cronhpa_controller::controller::run_with(
        ctx,
        health.clone(),
        stop.clone(),
    ));

    // Until 09:00:30 simulated.
    tokio::time::sleep(Duration::from_secs(61 * 60 + 30)).await;
    assert_eq!(api.replicas("web-servers"), 10);
    assert_eq!(api.replicas("demo-deployment"), 3);
    assert!(health.is_ready(), "{}", health.report());
    let puts: Vec<DateTime<Utc>> = api
        .times(&format!("PUT {DEPLOYMENTS}/web-servers/scale"))
        .into_iter()
        .map(|t| clock.at(t))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    for (put, want) in puts
        .iter()
        .zip(["2024-01-02T08:00:00Z", "2024-01-02T09:00:00Z"])
    {
        let late = (*put - utc(want)).num_milliseconds();
        assert!((0..1000).contains(&late), "{put} vs {want}");
    }
    // Timer-driven: no request between the two fires but the watch's periodic renewal
    // (timeoutSeconds=290, as against a real API server) and the read-ahead of the target
    // 10 s before the occurrence; at the occurrence only the write goes out.
    let between = |from: &str, to: &str| -> Vec<String> {
        api.with(|s| {
            s.log
                .iter()
                .filter(|(l, t)| {
                    let at = clock.at(*t);
                    !l.starts_with("WATCH ") && at > utc(from) && at < utc(to)
                })
                .map(|(l, _)| l.clone())
                .collect()
        })
    };
    let quiet = between("2024-01-02T08:00:05Z", "2024-01-02T08:59:50Z");
    assert!(quiet.is_empty(), "{quiet:?}");
    let scale = format!("{DEPLOYMENTS}/web-servers/scale");
    let read_ahead = api.times(&format!("GET {scale}"));
    assert_eq!(read_ahead.len(), 2, "one read-ahead per occurrence");
    for (read, want) in read_ahead
        .iter()
        .zip(["2024-01-02T07:59:50Z", "2024-01-02T08:59:50Z"])
    {
        let early = (utc(want) - clock.at(*read)).num_milliseconds();
        assert!(
            (-1000..=0).contains(&early),
            "{} vs {want}",
            clock.at(*read)
        );
    }
    assert_eq!(
        between("2024-01-02T08:59:51Z", "2024-01-02T09:00:05Z")
            .iter()
            .filter(|l| l.contains("/deployments/"))
            .collect::<Vec<_>>(),
        [&format!("PUT {scale}")],
        "at the occurrence: the write alone"
    );
    let status = api.cronhpa("web-servers-cronhpa").status.expect("status");
    assert_eq!(
        status.last_schedule_time.map(|t| t.0.to_string()),
        Some("2024-01-02T09:00:00Z".to_owned())
    );
    let bad = api.cronhpa("bad").status.expect("status");
    assert!(
        bad.conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Invalid" && c.status == "True")
    );

    stop.cancel();
    task.await.expect("controller task");
    assert!(!health.report().contains("cronhpa-controller-cache"));
}

/// Reconciles `obj` at the read-ahead time and at the occurrence, returning the actions.
async fn read_ahead_then_fire(
    api: &MockApi,
    ctx: &Arc<Context>,
    clock: &ManualClock,
    between: impl FnOnce(),
) -> (Action, Action) {
    clock.set("2024-01-02T07:59:50Z");
    let early = reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx.clone())
        .await
        .expect("read-ahead");
    between();
    clock.set("2024-01-02T08:00:00Z");
    let fire = reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx.clone())
        .await
        .expect("fire");
    (early, fire)
}

#[tokio::test]
async fn the_target_is_read_ahead_and_written_at_the_scheduled_time() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let clock = ManualClock::new("2024-01-02T07:59:00Z");
    let (ctx, _) = context(&api, clock.clone());
    // 60 s before: nothing is read, the object wakes 10 s before the occurrence.
    let action = reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx.clone())
        .await
        .expect("early");
    assert_eq!(action, Action::requeue(Duration::from_secs(50)));
    assert_eq!(api.count("GET"), 0);

    let (early, fire) = read_ahead_then_fire(&api, &ctx, &clock, || {}).await;
    assert_eq!(
        early,
        Action::requeue(Duration::from_secs(10)),
        "then at 08:00"
    );
    assert_eq!(api.replicas("web-servers"), 60);
    let scale = format!("{DEPLOYMENTS}/web-servers/scale");
    assert_eq!(api.count(&format!("GET {scale}")), 1, "read once, ahead");
    assert_eq!(api.count(&format!("PUT {scale}")), 1);
    // Next wake: 10 s before 09:00.
    assert_eq!(fire, Action::requeue(Duration::from_secs(3600 - 10)));
    assert_eq!(ctx.scaler.prepared_len(), 0, "a read-ahead is used once");
    ctx.events.flush().await;
    assert_eq!(
        api.event_reasons(),
        [("SuccessfulRescale".to_owned(), "New size: 60".to_owned())]
    );
}

/// A target at `initial` replicas, read ahead at 07:59:50, scaled by hand to `by_hand`
/// (a new resourceVersion) before the 08:00 occurrence (→ 60). Returns (GETs, PUTs) of the
/// scale subresource.
async fn scaled_by_hand_after_the_read_ahead(initial: i32, by_hand: i32) -> (usize, usize) {
    let api = MockApi::default();
    api.add_deployment("web-servers", initial);
    api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let clock = ManualClock::new("2024-01-02T07:59:50Z");
    let (ctx, _) = context(&api, clock.clone());
    read_ahead_then_fire(&api, &ctx, &clock, || {
        api.with(|s| {
            let d = s
                .objects
                .get_mut(&format!("{DEPLOYMENTS}/web-servers"))
                .expect("d");
            d["spec"]["replicas"] = json!(by_hand);
            d["metadata"]["resourceVersion"] = json!("100");
        })
    })
    .await;
    assert_eq!(api.replicas("web-servers"), 60);
    let scale = format!("{DEPLOYMENTS}/web-servers/scale");
    (
        api.count(&format!("GET {scale}")),
        api.count(&format!("PUT {scale}")),
    )
}

#[tokio::test]
async fn a_target_changed_after_the_read_ahead_is_read_again() {
    // The write carrying the read-ahead's resourceVersion conflicts, the target is read again
    // and written.
    assert_eq!(scaled_by_hand_after_the_read_ahead(3, 5).await, (2, 2));
}

#[tokio::test]
async fn already_at_size_in_the_read_ahead_is_confirmed_at_the_scheduled_time() {
    // At 60 when read ahead, 42 at 08:00: read again at 08:00 (not trusted), then written.
    assert_eq!(scaled_by_hand_after_the_read_ahead(60, 42).await, (2, 1));
}

#[tokio::test]
async fn hpa_mode_reads_ahead_too() {
    let (api, _) = hpa_target(100);
    let clock = ManualClock::new("2024-01-02T07:59:50Z");
    let (ctx, _) = context(&api, clock.clone());
    read_ahead_then_fire(&api, &ctx, &clock, || {}).await;
    let hpa = api.with(|s| s.objects[&format!("{HPAS}/web")].clone());
    assert_eq!(hpa["spec"]["minReplicas"], 60);
    assert_eq!(api.count(&format!("GET {HPAS}/web")), 1, "read once, ahead");
    assert_eq!(api.count(&format!("PATCH {HPAS}/web")), 1);
}

#[tokio::test]
async fn events_are_published_off_the_fire_path() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let (ctx, _) = context(&api, ManualClock::new("2024-01-02T08:00:00Z"));
    // The Events API hangs: the fire and its status still complete.
    let blocked = api.1.clone().write_owned().await;
    reconcile_written(Arc::new(obj), ctx.clone())
        .await
        .expect("reconcile");
    assert_eq!(api.replicas("web-servers"), 60);
    let status = api.cronhpa("web-servers-cronhpa").status.expect("status");
    assert_eq!(
        status.last_schedule_time.map(|t| t.0.to_string()),
        Some("2024-01-02T08:00:00Z".to_owned())
    );
    assert!(api.event_reasons().is_empty());
    assert_eq!(ctx.events.pending(), 1);
    // Once the API answers, the Event is published.
    drop(blocked);
    ctx.events.flush().await;
    assert_eq!(
        api.event_reasons(),
        [("SuccessfulRescale".to_owned(), "New size: 60".to_owned())]
    );
}

#[tokio::test]
async fn only_the_watch_event_of_our_own_status_write_skips_planning() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let clock = ManualClock::new("2024-01-02T08:00:00Z");
    let (ctx, _) = context(&api, clock.clone());
    let first = reconcile_written(Arc::new(obj), ctx.clone())
        .await
        .expect("08:00");
    assert_eq!(api.replicas("web-servers"), 60);
    // Our own write comes back through the watch: same decision, no request.
    let requests = api.with(|s| s.log.len());
    clock.set("2024-01-02T08:00:01Z");
    let again = reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx.clone())
        .await
        .expect("own write");
    assert_eq!(api.with(|s| s.log.len()), requests);
    assert_eq!(
        (first, again),
        (
            Action::requeue(Duration::from_secs(3600 - 10)),
            Action::requeue(Duration::from_secs(3600 - 11))
        )
    );
    // Someone else changes the object (a new resourceVersion): planned, and a cron added
    // for 08:00:01 — due at once — fires.
    api.with(|s| {
        let c = s
            .objects
            .get_mut(&format!("{CRONHPAS}/web-servers-cronhpa"))
            .expect("c");
        c["spec"]["crons"]
            .as_array_mut()
            .expect("crons")
            .push(json!({"schedule": "@every 1s", "targetReplicas": 7}));
        c["metadata"]["resourceVersion"] = json!("500");
    });
    reconcile_written(Arc::new(api.cronhpa("web-servers-cronhpa")), ctx)
        .await
        .expect("changed");
    assert_eq!(api.replicas("web-servers"), 7);
}

#[tokio::test]
async fn statuses_wait_for_fires_in_flight_and_a_stale_cache_never_fires_twice() {
    let api = MockApi::default();
    api.add_deployment("web-servers", 3);
    let obj = api.add_cronhpa(&web_servers(Some("2024-01-02T07:00:00Z")));
    let clock = ManualClock::new("2024-01-02T08:00:00Z");
    let (ctx, registry) = context(&api, clock.clone());

    // Another object's scale is still in flight: this fire's status and Event wait for it.
    let other_fire = ctx.gate.enter();
    reconcile(guarded(&obj), ctx.clone()).await.expect("08:00");
    assert_eq!(api.replicas("web-servers"), 60);
    assert_eq!(api.count("PUT"), 1);
    assert_eq!(ctx.status.pending(), 1);
    assert!(
        !ctx.status.flush_for(Duration::from_millis(300)).await,
        "no status write while a fire is in flight"
    );
    assert_eq!(api.count("PATCH"), 0);
    assert!(api.event_reasons().is_empty(), "nor an Event");

    // Someone scales the target back; the cache still shows the old status. The next
    // reconciliation plans from the status decided, so 08:00 is not fired again.
    api.with(|s| {
        s.objects
            .get_mut(&format!("{DEPLOYMENTS}/web-servers"))
            .expect("deployment")["spec"]["replicas"] = json!(3);
    });
    clock.set("2024-01-02T08:00:01Z");
    reconcile(guarded(&obj), ctx.clone())
        .await
        .expect("stale cache");
    assert_eq!(api.count("PUT"), 1, "fired once");
    assert_eq!(api.replicas("web-servers"), 3);

    // The burst ends: the status is written, then the Event published.
    drop(other_fire);
    assert!(ctx.status.flush_for(Duration::from_secs(10)).await);
    ctx.events.flush().await;
    let status = api.cronhpa("web-servers-cronhpa").status.expect("status");
    assert_eq!(
        status.last_schedule_time.map(|t| t.0.to_string()),
        Some("2024-01-02T08:00:00Z".to_owned())
    );
    assert_eq!(
        api.count("PATCH"),
        1,
        "one status write for both reconciliations"
    );
    let reasons: Vec<_> = api.event_reasons().into_iter().map(|(r, _)| r).collect();
    assert_eq!(reasons, ["SuccessfulRescale"]);
    let text = addon_common::metrics::encode_text(&registry);
    assert!(
        text.contains(r#"cronhpa_controller_status_writes_total{result="succeeded"} 1"#),
        "{text}"
    );

    // Once the cache shows the write, it is planned from the cache again.
    let fresh = api.cronhpa("web-servers-cronhpa");
    assert!(
        ctx.status
            .overlay(
                "default/web-servers-cronhpa",
                fresh.metadata.resource_version.as_deref()
            )
            .is_none()
    );
}
