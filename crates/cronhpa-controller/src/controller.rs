//! The thin executor: a kube-runtime `Controller` on CronHPAs that runs [`plan`], scales,
//! writes the status, publishes Events and requeues each object at its next fire time.

use std::{sync::Arc, time::Duration};

use addon_common::{
    admin::Health,
    api::cronhpa::{CONDITION_INVALID, CronHPA, CronHPAStatus, REASON_SUCCESSFUL_RESCALE},
    backoff::{Backoff, object_key},
    watch::{self, Relists},
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use kube::{
    Api, Client, Resource, ResourceExt,
    api::{Patch, PatchParams},
    runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher},
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    Error, Result,
    events::EventQueue,
    metrics::Metrics,
    plan::{
        Outcome, REASON_INVALID_SPEC, REASON_MISSED_SCHEDULE, State, Written, condition_label,
        plan, status_after,
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
    /// How long before an occurrence its target is read (zero: read at the scheduled time).
    pub read_ahead: Duration,
    /// Events that may wait to be published (bounded; see [`EventQueue`]).
    pub event_queue: usize,
}

/// Default of [`Settings::read_ahead`].
pub const DEFAULT_READ_AHEAD: Duration = Duration::from_secs(10);

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_tz: Tz::UTC,
            concurrency: 256,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            read_ahead: DEFAULT_READ_AHEAD,
            event_queue: crate::events::DEFAULT_CAPACITY,
        }
    }
}

/// Everything a reconciliation needs.
pub struct Context {
    /// API client.
    pub client: Client,
    /// Scales targets (with the discovery cache and the read-aheads).
    pub scaler: Scaler,
    /// Publishes Events in the background (off the fire path).
    pub events: EventQueue,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-object retry delays.
    pub backoff: Backoff,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub settings: Settings,
    /// Object key → what its last successful reconciliation wrote (see [`Written`]).
    written: std::sync::Mutex<std::collections::HashMap<String, Written>>,
}

impl Context {
    /// A context over `client`. Must be called inside a tokio runtime (the Event publishers
    /// are spawned).
    pub fn new(
        client: Client,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        settings: Settings,
    ) -> Self {
        Self {
            scaler: Scaler::new(client.clone()),
            events: EventQueue::new(
                client.clone(),
                COMPONENT,
                settings.event_queue,
                crate::events::DEFAULT_WORKERS,
            ),
            client,
            metrics,
            backoff: Backoff::new(settings.backoff.0, settings.backoff.1),
            clock,
            settings,
            written: Default::default(),
        }
    }

    fn written(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Written>> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Forgets per-object state of objects for which `keep` is false (deleted objects).
    pub fn retain_objects(&self, keep: impl Fn(&str) -> bool) {
        self.scaler.retain_prepared(&keep);
        self.written().retain(|k, _| keep(k));
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
    // The watch event of our own status patch: nothing to decide before the wake-up.
    let unchanged = ctx
        .written()
        .get(&key)
        .and_then(|w| w.requeue_after(obj.metadata.resource_version.as_deref(), now));
    if let Some(delay) = unchanged {
        return Ok(Action::requeue(delay));
    }
    let plan = plan(&obj, now, ctx.settings.default_tz);
    let reference = obj.object_ref(&());
    let read_ahead = ctx.settings.read_ahead;

    let mut outcome = None;
    let mut failure = None;
    if let Some(occurrence) = plan.read_ahead(now, read_ahead) {
        ctx.scaler
            .prepare(&key, &namespace, &obj.spec.scale_target_ref, occurrence)
            .await;
    }
    if let Some(fire) = &plan.fire {
        let result = ctx
            .scaler
            .scale(
                &key,
                &namespace,
                &obj.spec.scale_target_ref,
                fire.target_replicas,
                fire.scheduled,
            )
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
                    ctx.events
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
                ctx.events
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
            ctx.events
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
            ctx.events
                .warning(&reference, REASON_INVALID_SPEC, "Validate", message)
                .await;
        }
    }

    let status = status_after(&obj, &plan, outcome.as_ref(), now);
    ctx.metrics.set_state(&key, condition_label(&status));
    let mut resource_version = obj.metadata.resource_version.clone();
    if old_status != Some(&status) {
        ctx.written().remove(&key);
        let api: Api<CronHPA> = Api::namespaced(ctx.client.clone(), &namespace);
        let patch = json!({ "status": status });
        let patched = api
            .patch_status(
                &obj.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::Status {
                object: key.clone(),
                source,
            })?;
        resource_version = patched.metadata.resource_version;
    }
    if let Some(error) = failure {
        ctx.written().remove(&key);
        return Err(error);
    }
    ctx.backoff.reset(&key);
    let now = ctx.clock.now();
    Ok(match plan.requeue_after(now, read_ahead) {
        Some(delay) => {
            if let (Some(resource_version), Ok(d)) =
                (resource_version, chrono::Duration::from_std(delay))
            {
                let wake = now + d;
                ctx.written().insert(
                    key,
                    Written {
                        resource_version,
                        wake,
                    },
                );
            }
            Action::requeue(delay)
        }
        None => {
            ctx.written().remove(&key);
            Action::await_change()
        }
    })
}

/// Retry delay of a failed reconciliation: the object's backoff, but never past its next
/// scheduled occurrence.
pub fn error_policy(obj: Arc<CronHPA>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile.failure(error.metric_label());
    let key = key_of(&obj);
    let delay = ctx.backoff.next_delay(&key);
    let now = ctx.clock.now();
    let next = plan(&obj, now, ctx.settings.default_tz).requeue_after(now, ctx.settings.read_ahead);
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
    // Relist-safe triggers (addon_common::watch): after a relist every CronHPA is reconciled
    // from the refreshed store, never from its pre-relist content.
    let (store, writer) = reflector::store::<CronHPA>();
    let (relists, relisted) = Relists::channel();
    let events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .reflect(writer);
    let controller = Controller::for_stream(watch::triggers(events, relists), store.clone())
        .reconcile_all_on(relisted)
        .with_config(
            kube::runtime::controller::Config::default().concurrency(ctx.settings.concurrency),
        );
    health.set(CACHE_CHECK, false, "waiting for the CronHPA cache");
    let background = {
        let store = store.clone();
        let health = health.clone();
        let metrics = ctx.metrics.clone();
        let ctx = ctx.clone();
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
                        ctx.retain_objects(|k| keys.contains(k));
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
    // Publish what the last reconciliations queued (bounded: a stuck API must not block exit).
    if !ctx.events.flush_for(Duration::from_secs(5)).await {
        tracing::warn!(
            pending = ctx.events.pending(),
            "stopping with Events not yet published"
        );
    }
    ctx.metrics.clear();
    health.remove(CACHE_CHECK);
}
