//! The thin executor: a kube-runtime `Controller` on CronHPAs that runs [`plan`], scales,
//! writes the status, publishes Events and requeues each object at its next fire time.
//!
//! CronHPAs are watched through [`DeserializeGuard`]: one object with a wrong-typed field
//! (the Go original's v1beta1 CRD had no schema) is reported (log and Warning Event
//! `InvalidObject`) and left until it is edited, the others fire as usual. Each
//! reconciliation runs in a span naming the object and the trigger.

use std::{sync::Arc, time::Duration};

use addon_common::{
    admin::Health,
    api::cronhpa::{CONDITION_INVALID, CronHPA, CronHPAStatus, REASON_SUCCESSFUL_RESCALE},
    backoff::{Backoff, object_key},
    events::EventRecorder,
    guard::{self, DeserializeGuard},
    k8s_openapi::api::core::v1::ObjectReference,
    kube::{
        self, Api, Client, Resource, ResourceExt,
        runtime::{Controller, WatchStreamExt, controller::Action, reflector, watcher},
    },
    runtime::Deps,
    watch::{self, Relists},
};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{
    Error, Result,
    events::EventQueue,
    metrics::Metrics,
    plan::{
        Outcome, REASON_INVALID_SPEC, REASON_MISSED_SCHEDULE, State, condition_label, plan,
        status_after,
    },
    scale::Scaler,
    status::{FireGate, StatusWriter},
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

/// Settings of the controller (built from the flags in `main.rs`).
#[derive(Debug, Clone)]
pub struct Config {
    /// Watch only this namespace (`None`: all).
    pub namespace: Option<String>,
    /// Shift of the controller's clock (`--clock-offset`, for tests only).
    pub clock_offset: chrono::Duration,
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
    /// Background status writers (see [`StatusWriter`]).
    pub status_writers: usize,
}

/// Default of [`Config::read_ahead`].
pub const DEFAULT_READ_AHEAD: Duration = Duration::from_secs(10);

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: None,
            clock_offset: chrono::Duration::zero(),
            default_tz: Tz::UTC,
            concurrency: 256,
            backoff: (Duration::from_secs(1), Duration::from_secs(60)),
            read_ahead: DEFAULT_READ_AHEAD,
            event_queue: crate::events::DEFAULT_CAPACITY,
            status_writers: crate::status::DEFAULT_WRITERS,
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
    /// Writes statuses in the background (off the fire path).
    pub status: StatusWriter,
    /// Scale writes in flight; background writes wait for them.
    pub gate: Arc<FireGate>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Per-object retry delays.
    pub backoff: Backoff,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// Settings.
    pub settings: Config,
    /// The process's Event recorder (reports objects that cannot be decoded at once; the
    /// reconciliations' Events go through [`Context::events`], which publishes with it).
    pub recorder: EventRecorder,
}

impl Context {
    /// A context over `client`, publishing Events with `recorder`. Must be called inside a
    /// tokio runtime (the Event publishers and status writers are spawned).
    pub fn new(
        client: Client,
        recorder: EventRecorder,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        settings: Config,
    ) -> Self {
        let gate = Arc::new(FireGate::default());
        Self {
            scaler: Scaler::new(client.clone()),
            events: EventQueue::new(
                recorder.clone(),
                settings.event_queue,
                crate::events::DEFAULT_WORKERS,
                Some(gate.clone()),
            ),
            status: StatusWriter::new(
                client.clone(),
                gate.clone(),
                metrics.clone(),
                settings.backoff,
                settings.status_writers,
            ),
            gate,
            client,
            metrics,
            backoff: Backoff::new(settings.backoff.0, settings.backoff.1),
            clock,
            settings,
            recorder,
        }
    }

    /// Forgets per-object state of objects for which `keep` is false (deleted objects).
    pub fn retain_objects(&self, keep: impl Fn(&str) -> bool) {
        self.scaler.retain_prepared(&keep);
        self.status.retain(&keep);
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

/// One reconciliation of one CronHPA (in kube-runtime's `reconciling object` span, which names
/// the object and the trigger). One that cannot be decoded is reported and left until it is
/// edited.
pub async fn reconcile(
    guarded: Arc<DeserializeGuard<CronHPA>>,
    ctx: Arc<Context>,
) -> Result<Action> {
    let Some(obj) = guard::decoded(&guarded, &ctx.recorder).await else {
        return Ok(Action::await_change());
    };
    reconcile_object(obj, &ctx).await
}

async fn reconcile_object(obj: &CronHPA, ctx: &Context) -> Result<Action> {
    let _timer = ctx.metrics.reconcile.count_and_measure();
    let namespace = obj.namespace().unwrap_or_default();
    let key = key_of(obj);
    let now = ctx.clock.now();
    // The watch event of our own status patch: nothing to decide before the wake-up.
    let unchanged = ctx
        .status
        .unchanged(&key, obj.metadata.resource_version.as_deref(), now);
    if let Some(delay) = unchanged {
        return Ok(Action::requeue(delay));
    }
    // A status decided but not yet written (or not yet in the cache) is what the object's
    // state is: plan from it, not from the cache.
    let obj = match ctx
        .status
        .overlay(&key, obj.metadata.resource_version.as_deref())
    {
        Some(status) => {
            let mut obj = obj.clone();
            obj.status = Some(status);
            std::borrow::Cow::Owned(obj)
        }
        None => std::borrow::Cow::Borrowed(obj),
    };
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
        let (done, failed) = fire_once(ctx, obj.as_ref(), &key, &reference, fire).await;
        outcome = Some(done);
        failure = failed;
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
    let now = ctx.clock.now();
    let requeue = plan.requeue_after(now, read_ahead);
    if old_status != Some(&status) {
        // Written in the background, after the fires in flight (see `status`). After a
        // failure the retry, not the wake-up, comes next: the write's own event is planned.
        let wake = requeue
            .filter(|_| failure.is_none())
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| now + d);
        ctx.status
            .submit(&key, &namespace, &obj.name_any(), status, wake);
    }
    if let Some(error) = failure {
        ctx.status.forget_written(&key);
        return Err(error);
    }
    ctx.backoff.reset(&key);
    Ok(match requeue {
        Some(delay) => Action::requeue(delay),
        None => {
            ctx.status.forget_written(&key);
            Action::await_change()
        }
    })
}

/// Scales the target for one occurrence (the fire path: nothing but the scale is awaited
/// before it, the Event is queued). The outcome for the status, and the error on failure.
async fn fire_once(
    ctx: &Context,
    obj: &CronHPA,
    key: &str,
    reference: &ObjectReference,
    fire: &crate::plan::Fire,
) -> (Outcome, Option<Error>) {
    let namespace = obj.namespace().unwrap_or_default();
    let firing = ctx.gate.enter();
    let result = ctx
        .scaler
        .scale(
            key,
            &namespace,
            &obj.spec.scale_target_ref,
            fire.target_replicas,
            fire.scheduled,
        )
        .await;
    drop(firing);
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
                        reference,
                        REASON_SUCCESSFUL_RESCALE,
                        "Scale",
                        &scaled.message,
                    )
                    .await;
            }
            let outcome = Outcome::Succeeded {
                message: scaled.message,
                changed: scaled.changed,
            };
            (outcome, None)
        }
        Err(error) => {
            ctx.metrics.fires.with_label_values(&["failed"]).inc();
            tracing::warn!(object = %key, cron = fire.index, %error, "scale failed");
            ctx.events
                .warning(reference, error.event_reason(), "Scale", error.to_string())
                .await;
            let outcome = Outcome::Failed {
                reason: error.event_reason(),
                message: error.to_string(),
            };
            (outcome, Some(error))
        }
    }
}

/// Retry delay of a failed reconciliation: the object's backoff, but never past its next
/// scheduled occurrence.
pub fn error_policy(
    guarded: Arc<DeserializeGuard<CronHPA>>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    ctx.metrics.reconcile.failure(error.metric_label());
    // Only a decoded object reconciles, and so fails.
    let Ok(obj) = &guarded.0 else {
        return Action::await_change();
    };
    let key = key_of(obj);
    let delay = ctx.backoff.next_delay(&key);
    let now = ctx.clock.now();
    let next = plan(obj, now, ctx.settings.default_tz).requeue_after(now, ctx.settings.read_ahead);
    tracing::debug!(object = %key, %error, ?delay, "reconcile failed, retrying");
    Action::requeue(next.map_or(delay, |n| n.min(delay)))
}

/// Runs the controller until `stop` is cancelled (the entry every controller crate has).
pub async fn run(deps: Deps, config: Config, metrics: Metrics, stop: CancellationToken) {
    let clock = Arc::new(SystemClock {
        offset: config.clock_offset,
    });
    let ctx = Arc::new(Context::new(
        deps.client,
        deps.events,
        Arc::new(metrics),
        clock,
        config,
    ));
    run_with(ctx, deps.health, stop).await;
}

/// [`run`] over a prepared context (tests inject their clock this way).
pub async fn run_with(ctx: Arc<Context>, health: Health, stop: CancellationToken) {
    let api: Api<DeserializeGuard<CronHPA>> = match &ctx.settings.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    // Relist-safe triggers (addon_common::watch): after a relist every CronHPA is reconciled
    // from the refreshed store, never from its pre-relist content.
    let (store, writer) = reflector::store::<DeserializeGuard<CronHPA>>();
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
    let background = tokio::spawn(
        maintain(store, health.clone(), ctx.clone(), stop.clone())
            .instrument(tracing::info_span!("cache")),
    );
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
    // Write and publish what the last reconciliations queued (bounded: a stuck API must not
    // block exit).
    if !ctx.status.flush_for(Duration::from_secs(5)).await {
        tracing::warn!(
            pending = ctx.status.pending(),
            "stopping with statuses not yet written"
        );
    }
    if !ctx.events.flush_for(Duration::from_secs(5)).await {
        tracing::warn!(
            pending = ctx.events.pending(),
            "stopping with Events not yet published"
        );
    }
    ctx.metrics.clear();
    health.remove(CACHE_CHECK);
}

/// Marks the cache ready once it is, then forgets deleted objects now and then (the
/// `objects` gauge, the per-object state; in memory only, no API calls).
async fn maintain(
    store: reflector::Store<DeserializeGuard<CronHPA>>,
    health: Health,
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    if !watch::store_synced(&store, &stop).await {
        return;
    }
    health.set(CACHE_CHECK, true, "");
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                let keys: std::collections::HashSet<String> = store
                    .state()
                    .iter()
                    .map(|o| object_key(o.meta().namespace.as_deref(), &o.name_any()))
                    .collect();
                ctx.metrics.prune(|k| keys.contains(k));
                ctx.retain_objects(|k| keys.contains(k));
            }
        }
    }
}
