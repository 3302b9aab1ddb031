//! The real controller (kube-runtime Controller, discovery, /scale, status, Events) against
//! the in-process emulated API server. The seed's CronHPA YAML is used verbatim; the clock is
//! shifted with the same offset the test-only `--clock-offset` flag sets, so a weekly
//! schedule comes due a few seconds after the test starts.

use addon_common::{k8s_openapi, kube};
use std::time::Duration;

use addon_common::api::{all_crds, cronhpa::CronHPA};
use addon_common::k8s_openapi::{
    api::{apps::v1::Deployment, autoscaling::v2::HorizontalPodAutoscaler, core::v1::Event},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use addon_common::kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams, PostParams},
};
use chrono::{DateTime, Datelike, Duration as ChronoDuration, TimeZone, Utc, Weekday};
use cronhpa_controller::{
    controller::{Config, run},
    metrics::Metrics,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

const SEED_WEEKLY: &str = include_str!("../../addon-common/tests/fixtures/cronhpa-weekly.yaml");
const SEED_DAILY: &str = include_str!("../../addon-common/tests/fixtures/cronhpa-daily.yaml");
const SEED_TAPP: &str = include_str!("../../addon-common/tests/fixtures/tapp-create.yaml");

struct Env {
    client: Client,
    _server: e2e::ApiServer,
    stop: CancellationToken,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn until<F, Fut, T>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    e2e::wait::until(what, Duration::from_secs(20), probe).await
}

async fn env() -> Env {
    env_with(&[]).await
}

/// As [`env`], the CRDs named in `schemaless` installed without a schema (any field of any
/// type, as the Go originals' v1beta1 CRDs), so that the store can hold objects this
/// controller cannot decode.
async fn env_with(schemaless: &[&str]) -> Env {
    let server = e2e::ApiServer::new(e2e::Config::default());
    let client = server.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for mut crd in all_crds() {
        if schemaless.contains(&crd.metadata.name.as_deref().unwrap_or_default()) {
            for version in &mut crd.spec.versions {
                version.schema = Some(
                    serde_json::from_value(json!({"openAPIV3Schema": {
                        "type": "object", "x-kubernetes-preserve-unknown-fields": true
                    }}))
                    .expect("schemaless"),
                );
            }
        }
        crds.create(&PostParams::default(), &crd)
            .await
            .expect("create CRD");
    }
    Env {
        client,
        _server: server,
        stop: CancellationToken::new(),
    }
}

/// Starts the controller with its clock shifted so that "now" reads `fake_now`.
fn start_controller(env: &Env, fake_now: DateTime<Utc>) {
    let registry = prometheus::Registry::new();
    let metrics = Metrics::register(&registry).expect("metrics");
    let config = Config {
        clock_offset: fake_now - Utc::now(),
        ..Config::default()
    };
    let deps = addon_common::runtime::Deps {
        client: env.client.clone(),
        health: addon_common::admin::Health::default(),
        events: addon_common::events::EventRecorder::new(
            env.client.clone(),
            cronhpa_controller::controller::COMPONENT,
        ),
    };
    tokio::spawn(run(deps, config, metrics, env.stop.clone()));
}

async fn deployment(client: &Client, name: &str, replicas: i32) {
    let d: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}},
                         "spec": {"containers": [{"name": "web", "image": "nginx"}]}}
        }
    }))
    .expect("deployment");
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
}

async fn replicas_of(client: &Client, name: &str) -> i32 {
    Api::<Deployment>::namespaced(client.clone(), "default")
        .get(name)
        .await
        .expect("deployment")
        .spec
        .and_then(|s| s.replicas)
        .unwrap_or_default()
}

async fn create_seed(client: &Client, yaml: &str) -> CronHPA {
    let obj: CronHPA = serde_yaml::from_str(yaml).expect("seed parses");
    Api::<CronHPA>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &obj)
        .await
        .expect("create seed CronHPA")
}

/// Records `lastScheduleTime` as a previous run of the controller would have.
async fn set_last_schedule(client: &Client, name: &str, at: DateTime<Utc>) {
    Api::<CronHPA>::namespaced(client.clone(), "default")
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"lastScheduleTime": at.to_rfc3339()}})),
        )
        .await
        .expect("patch status");
}

/// The next Sunday 23:00 UTC that is at least a minute away.
fn next_sunday_2300() -> DateTime<Utc> {
    let now = Utc::now() + ChronoDuration::minutes(1);
    let mut day = now.date_naive();
    loop {
        let candidate = Utc.from_utc_datetime(&day.and_hms_opt(23, 0, 0).expect("time"));
        if day.weekday() == Weekday::Sun && candidate > now {
            return candidate;
        }
        day = day.succ_opt().expect("date");
    }
}

#[tokio::test]
async fn seed_weekly_example_fires_sunday_2300_on_time() {
    let env = env().await;
    deployment(&env.client, "demo-deployment", 2).await;
    create_seed(&env.client, SEED_WEEKLY).await;
    let fire = next_sunday_2300();
    // The controller ran before, up to 3 s before Sunday 23:00: nothing to catch up.
    let fake_now = fire - ChronoDuration::seconds(3);
    set_last_schedule(
        &env.client,
        "example-cron-hpa",
        fake_now - ChronoDuration::seconds(1),
    )
    .await;
    let started = Utc::now();
    start_controller(&env, fake_now);

    // Not before its time…
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        replicas_of(&env.client, "demo-deployment").await,
        2,
        "fired early"
    );
    // …and within 2 s after it: `0 23 * * 7` is Sunday (DOW 7), target 30.
    until("the Sunday scale", || async {
        (replicas_of(&env.client, "demo-deployment").await == 30).then_some(())
    })
    .await;
    // The controller's clock reads `fake_now` 3 s before the fire: at most 2 s late.
    let lateness = Utc::now() - started - ChronoDuration::seconds(3);
    assert!(
        lateness < ChronoDuration::seconds(2),
        "scaled {lateness} after the scheduled time"
    );
    let cronhpa = Api::<CronHPA>::namespaced(env.client.clone(), "default")
        .get("example-cron-hpa")
        .await
        .expect("cronhpa");
    let last = cronhpa
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .map(|t| t.0.to_string());
    assert_eq!(
        last.as_deref(),
        Some(
            k8s_openapi::jiff::Timestamp::from_second(fire.timestamp())
                .expect("ts")
                .to_string()
                .as_str()
        ),
        "lastScheduleTime is the scheduled time"
    );
    let events = until("the SuccessfulRescale event", || async {
        let list = Api::<Event>::namespaced(env.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("SuccessfulRescale"))
    })
    .await;
    assert_eq!(events.message.as_deref(), Some("New size: 30"));
}

#[tokio::test]
async fn seed_daily_example_catches_up_to_the_latest_missed_cron() {
    let env = env().await;
    deployment(&env.client, "web-servers", 5).await;
    create_seed(&env.client, SEED_DAILY).await;
    // Down from 07:00 to 10:00: 08:00→60 and 09:00→10 were missed; the latest (10) wins.
    let today = Utc::now().date_naive();
    let at = |h| Utc.from_utc_datetime(&today.and_hms_opt(h, 0, 0).expect("time"));
    set_last_schedule(&env.client, "web-servers-cronhpa", at(7)).await;
    start_controller(&env, at(10));
    until("the catch-up scale", || async {
        (replicas_of(&env.client, "web-servers").await == 10).then_some(())
    })
    .await;
    let cronhpa = Api::<CronHPA>::namespaced(env.client.clone(), "default")
        .get("web-servers-cronhpa")
        .await
        .expect("cronhpa");
    let last = cronhpa
        .status
        .and_then(|s| s.last_schedule_time)
        .expect("recorded");
    assert_eq!(
        last.0.as_second(),
        at(9).timestamp(),
        "recorded the 09:00 occurrence"
    );
}

#[tokio::test]
async fn tapp_and_hpa_targets_and_an_invalid_neighbour() {
    let env = env().await;
    let tapps = Api::<addon_common::api::tapp::TApp>::namespaced(env.client.clone(), "default");
    let tapp: addon_common::api::tapp::TApp = serde_yaml::from_str(SEED_TAPP).expect("tapp seed");
    tapps
        .create(&PostParams::default(), &tapp)
        .await
        .expect("create tapp");
    deployment(&env.client, "api", 1).await;
    let hpa: HorizontalPodAutoscaler = serde_json::from_value(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "api"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                 "minReplicas": 1, "maxReplicas": 5}
    }))
    .expect("hpa");
    Api::<HorizontalPodAutoscaler>::namespaced(env.client.clone(), "default")
        .create(&PostParams::default(), &hpa)
        .await
        .expect("create hpa");
    let cronhpas = Api::<CronHPA>::namespaced(env.client.clone(), "default");
    for (name, kind, api_version, target, schedule) in [
        (
            "tapp-cron",
            "TApp",
            "apps.tkestack.io/v1",
            "example-tapp",
            "0 8 * * *",
        ),
        (
            "hpa-cron",
            "HorizontalPodAutoscaler",
            "autoscaling/v2",
            "api",
            "0 8 * * *",
        ),
        ("broken-cron", "Deployment", "apps/v1", "api", "0 25 * * *"),
    ] {
        let obj: CronHPA = serde_json::from_value(json!({
            "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
            "metadata": {"name": name},
            "spec": {"scaleTargetRef": {"apiVersion": api_version, "kind": kind, "name": target},
                     "crons": [{"schedule": schedule, "targetReplicas": 7}]}
        }))
        .expect("cronhpa");
        cronhpas
            .create(&PostParams::default(), &obj)
            .await
            .expect("create cronhpa");
    }
    let today = Utc::now().date_naive();
    let at = |h, m| Utc.from_utc_datetime(&today.and_hms_opt(h, m, 0).expect("time"));
    for name in ["tapp-cron", "hpa-cron", "broken-cron"] {
        set_last_schedule(&env.client, name, at(7, 59)).await;
    }
    start_controller(&env, at(8, 0) + ChronoDuration::seconds(1));

    until("the TApp scaled through its /scale subresource", || async {
        let t = tapps.get("example-tapp").await.ok()?;
        (t.spec.replicas == 7).then_some(())
    })
    .await;
    let hpa = until("the HPA's minReplicas raised", || async {
        let h = Api::<HorizontalPodAutoscaler>::namespaced(env.client.clone(), "default")
            .get("api")
            .await
            .ok()?;
        let spec = h.spec?;
        (spec.min_replicas == Some(7)).then_some(spec)
    })
    .await;
    assert!(
        hpa.max_replicas >= 7,
        "maxReplicas raised to fit: {}",
        hpa.max_replicas
    );
    assert_eq!(
        replicas_of(&env.client, "api").await,
        1,
        "HPA mode leaves the replicas to the HPA"
    );
    let broken = until("the invalid object marked Invalid", || async {
        let c = cronhpas.get("broken-cron").await.ok()?;
        let cond = c
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "Invalid" && c.status == "True")?;
        Some(cond)
    })
    .await;
    assert!(
        broken.message.contains("spec.crons[0].schedule"),
        "{}",
        broken.message
    );
}

/// A CronHPA the Go original left in its schemaless CRD with a wrong-typed field does not stop
/// the controller: the valid one next to it still fires, and the broken one gets a Warning
/// Event saying why it is skipped. (Without the decoding guard the watch's list fails as a
/// whole and nothing is ever reconciled.)
#[tokio::test]
async fn an_undecodable_cronhpa_is_reported_and_the_others_still_fire() {
    let env = env_with(&["cronhpas.extensions.tkestack.io"]).await;
    deployment(&env.client, "web-servers", 5).await;
    let legacy: Api<kube::api::DynamicObject> = Api::namespaced_with(
        env.client.clone(),
        "default",
        &kube::api::ApiResource::erase::<CronHPA>(&()),
    );
    let broken: kube::api::DynamicObject = serde_json::from_value(json!({
        "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
        "metadata": {"name": "legacy-cron", "namespace": "default"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web-servers"},
                 "crons": [{"schedule": "0 8 * * *", "targetReplicas": "60"}]}
    }))
    .expect("object");
    legacy
        .create(&PostParams::default(), &broken)
        .await
        .expect("the schemaless CRD stores a wrong-typed field");
    create_seed(&env.client, SEED_DAILY).await;
    let today = Utc::now().date_naive();
    let at = |h| Utc.from_utc_datetime(&today.and_hms_opt(h, 0, 0).expect("time"));
    set_last_schedule(&env.client, "web-servers-cronhpa", at(7)).await;
    start_controller(&env, at(10));

    until("the valid CronHPA's catch-up scale", || async {
        (replicas_of(&env.client, "web-servers").await == 10).then_some(())
    })
    .await;
    let warning = until("the InvalidObject Event", || async {
        let list = Api::<Event>::namespaced(env.client.clone(), "default")
            .list(&ListParams::default())
            .await
            .ok()?;
        list.items.into_iter().find(|e| {
            e.reason.as_deref() == Some("InvalidObject")
                && e.involved_object.name.as_deref() == Some("legacy-cron")
        })
    })
    .await;
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("cannot decode this object") && m.contains("\"60\"")),
        "{warning:?}"
    );
    assert_eq!(
        warning.involved_object.kind.as_deref(),
        Some("CronHPA"),
        "{warning:?}"
    );
}
