//! The thin executor: a kube-runtime `Controller` on CronHPAs that runs [`plan`], scales,
//! writes the status, publishes Events and requeues each object at its next fire time.

use std::{sync::Arc, time::Duration};

use addon_common::{
    admin::Health,
    api::cronhpa::{CONDITION_INVALID, CronHPA, CronHPAStatus, REASON_SUCCESSFUL_RESCALE},
    backoff::{Backoff, object_key},
    events::EventRecorder,
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, controller::Action, watcher},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    metrics::Metrics,
    plan::{
        Outcome, REASON_INVALID_SPEC, REASON_MISSED_SCHEDULE, State, condition_label, plan,
        status_after,
    },
    scale::Scaler,
};

/// Name of the readiness check for the CronHPA cache.
pub const CACHE_CHECK: &str = "cronhpa-controller-cache";
/// Event reporter name (the original's component name).
pub const COMPONENT: &str = "cronhpa-controller";

/// The source of "now"; injected so tests (and the test-only clock offset) control it.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock, optionally shifted (`--clock-offset`, for tests only).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock {
    /// Added to the system time.
    pub offset: chrono::Duration,
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + self.offset
    }
}

/// Settings of the controller.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Zone of objects without `spec.timeZone`.
    pub default_tz: Tz,
    /// Reconciliations running at once.
    pub concurrency: u16,
    /// Backoff of failed reconciliations (first delay, cap).
    pub backoff: (Duration, Duration),
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_tz: Tz::UTC,
            concurrency: 256,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
        }
    }
}

/// Everything a reconciliation needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Scales targets (with the discovery cache).
    pub scaler: Scaler,
    /// Publishes Events.
    pub recorder: EventRecorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-object retry delays.
    pub backoff: Backoff,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub settings: Settings,
}

impl Context {
    /// A context over `client`.
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self {
            scaler: Scaler::new(client.clone()),
            recorder: EventRecorder::new(client.clone(), COMPONENT),
            client,
            metrics,
            backoff: Backoff::new(settings.backoff.0, settings.backoff.1),
            clock,
            settings,
        }
    }
}

fn key_of(obj: &CronHPA) -> String {
    object_key(obj.namespace().as_deref(), &obj.name_any())
}

fn invalid_message(status: Option<&CronHPAStatus>) -> Option<String> {
    status?
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == CONDITION_INVALID && c.status == "True")
        .map(|c| c.message.clone())
}

/// One reconciliation of one CronHPA.
pub async fn reconcile(obj: Arc<CronHPA>, ctx: Arc<Context>) -> Result<Action> {
    let _timer = ctx.metrics.reconcile.count_and_measure();
    let namespace = obj.namespace().unwrap_or_default();
    let key = key_of(&obj);
    let now = ctx.clock.now();
    let plan = plan(&obj, now, ctx.settings.default_tz);
    let reference = obj.object_ref(&());

    let mut outcome = None;
    let mut failure = None;
    if let Some(fire) = &plan.fire {
        let result = ctx
            .scaler
            .scale(&namespace, &obj.spec.scale_target_ref, fire.target_replicas)
            .await;
        match result {
            Ok(scaled) => {
                let lag = (ctx.clock.now() - fire.scheduled)
                    .to_std()
                    .unwrap_or_default();
                ctx.metrics.lag.observe(lag.as_secs_f64());
                ctx.metrics.fires.with_label_values(&["succeeded"]).inc();
                tracing::info!(object = %key, cron = fire.index, scheduled = %fire.scheduled,
                    lag_ms = lag.as_millis() as u64, changed = scaled.changed, "{}", scaled.message);
                if scaled.changed {
                    ctx.recorder
                        .normal(
                            &reference,
                            REASON_SUCCESSFUL_RESCALE,
                            "Scale",
                            &scaled.message,
                        )
                        .await;
                }
                outcome = Some(Outcome::Succeeded {
                    message: scaled.message,
                    changed: scaled.changed,
                });
            }
            Err(error) => {
                ctx.metrics.fires.with_label_values(&["failed"]).inc();
                tracing::warn!(object = %key, cron = fire.index, %error, "scale failed");
                ctx.recorder
                    .warning(&reference, error.event_reason(), "Scale", error.to_string())
                    .await;
                outcome = Some(Outcome::Failed {
                    reason: error.event_reason(),
                    message: error.to_string(),
                });
                failure = Some(error);
            }
        }
    }

    let old_status = obj.status.as_ref();
    if let Some(missed) = &plan.missed {
        // Only on the edge: the status does not record this occurrence yet.
        let recorded = old_status
            .and_then(|s| s.crons.as_ref())
            .and_then(|c| c.get(missed.index))
            .and_then(|c| c.last_schedule_time.as_ref())
            .map(crate::plan::from_time);
        if recorded != Some(missed.scheduled) {
            ctx.metrics.fires.with_label_values(&["skipped"]).inc();
            ctx.recorder
                .warning(
                    &reference,
                    REASON_MISSED_SCHEDULE,
                    "Scale",
                    format!(
                        "spec.crons[{}] occurrence at {} skipped: more than \
                         startingDeadlineSeconds late",
                        missed.index,
                        missed.scheduled.to_rfc3339()
                    ),
                )
                .await;
        }
    }
    if let State::Invalid(errors) = &plan.state {
        let message = crate::validate::summary(errors);
        if invalid_message(old_status).as_deref() != Some(message.as_str()) {
            tracing::warn!(object = %key, %message, "invalid CronHPA");
            ctx.recorder
                .warning(&reference, REASON_INVALID_SPEC, "Validate", message)
                .await;
        }
    }

    let status = status_after(&obj, &plan, outcome.as_ref(), now);
    ctx.metrics.set_state(&key, condition_label(&status));
    if old_status != Some(&status) {
        let api: Api<CronHPA> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({ "status": status });
        api.patch_status(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .map_err(|source| Error::Status {
            object: key.clone(),
            source,
        })?;
    }
    if let Some(error) = failure {
        return Err(error);
    }
    ctx.backoff.reset(&key);
    Ok(match plan.requeue_after(ctx.clock.now()) {
        Some(delay) => Action::requeue(delay),
        None => Action::await_change(),
    })
}

/// Retry delay of a failed reconciliation: the object's backoff, but never past its next
/// scheduled occurrence.
pub fn error_policy(obj: Arc<CronHPA>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile.failure(error.metric_label());
    let key = key_of(&obj);
    let delay = ctx.backoff.next_delay(&key);
    let now = ctx.clock.now();
    let next = plan(&obj, now, ctx.settings.default_tz).requeue_after(now);
    tracing::debug!(object = %key, %error, ?delay, "reconcile failed, retrying");
    Action::requeue(next.map_or(delay, |n| n.min(delay)))
}

/// Runs the controller until `stop` is cancelled. `namespace`: watch only this namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    health: Health,
    stop: CancellationToken,
) {
    let api: Api<CronHPA> = match &namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let controller = Controller::new(api, watcher::Config::default().any_semantic()).with_config(
        kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
    );
    let store = controller.store();
    health.set(CACHE_CHECK, false, "waiting for the CronHPA cache");
    let background = {
        let store = store.clone();
        let health = health.clone();
        let metrics = ctx.metrics.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            // `wait_until_ready` keeps only the last poller's waker (kube-runtime's DelayedInit
            // over a oneshot) and the Controller polls it too: re-poll with a short timeout.
            loop {
                if stop.is_cancelled() {
                    return;
                }
                let ready =
                    tokio::time::timeout(Duration::from_millis(250), store.wait_until_ready())
                        .await;
                match ready {
                    Ok(Ok(())) => {
                        health.set(CACHE_CHECK, true, "");
                        break;
                    }
                    Ok(Err(_)) => return,
                    Err(_elapsed) => {}
                }
            }
            // Deleted objects leave the `objects` gauge (in memory only, no API calls).
            let mut tick = tokio::time::interval(Duration::from_secs(15));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    _ = tick.tick() => {
                        let keys: std::collections::HashSet<String> =
                            store.state().iter().map(|o| key_of(o)).collect();
                        metrics.prune(|k| keys.contains(k));
                    }
                }
            }
        })
    };
    controller
        .graceful_shutdown_on(stop.clone().cancelled_owned())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| async move {
            if let Err(error) = result {
                tracing::debug!(%error, "reconcile error");
            }
        })
        .await;
    stop.cancel();
    let _ = background.await;
    ctx.metrics.clear();
    health.remove(CACHE_CHECK);
}
