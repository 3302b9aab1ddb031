//! Status writes off the fire path, and the gate that keeps them (and Events) behind fires.
//!
//! At the scheduled second what matters is the scale write. The status patch that records the
//! occurrence, and the `SuccessfulRescale` Event, cost the API server as much again; when
//! thousands of objects fire at once they would delay the last scales by that much. So:
//!
//! - [`FireGate`] counts the scale writes in flight. Background writers call
//!   [`FireGate::quiet`] before each request: it returns at once when no fire is in flight,
//!   and otherwise when the burst is over or after a bounded wait ([`MAX_DEFER`]), so a
//!   never-ending stream of fires cannot starve them.
//! - [`StatusWriter`] takes the status a reconciliation computed and patches it in the
//!   background (latest wins per object, retried with backoff). Until the controller's cache
//!   shows the written status, [`StatusWriter::overlay`] hands it to the next reconciliation
//!   of that object, which therefore plans from what was decided, not from the stale cache:
//!   an occurrence is never fired twice because its status was not written yet.
//!
//! The price: the status of a fire appears up to [`MAX_DEFER`] (plus the patch) after the
//! scale, and a controller killed in that window fires that occurrence again after its
//! restart. That repeat is harmless: the target is read first and, being at size already, is
//! left alone (no write, no Event), as for any "already at size" fire.

use addon_common::kube;
use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use addon_common::kube::{
    Client,
    api::{Patch, PatchParams},
};
use addon_common::writes::Writer;
use addon_common::{api::cronhpa::CronHPA, api::cronhpa::CronHPAStatus, backoff::Backoff};
use chrono::{DateTime, Utc};
use serde_json::json;
use tokio::sync::Notify;
use tracing::Instrument;

use crate::{Error, metrics::Metrics, plan::Written};

/// Longest a background write waits for a burst of fires to end.
pub const MAX_DEFER: Duration = Duration::from_secs(5);
/// Default number of background status writers.
pub const DEFAULT_WRITERS: usize = 16;

/// Counts the fires (scale writes) in flight; see the module documentation.
#[derive(Default)]
pub struct FireGate {
    inflight: AtomicUsize,
    quiet: Notify,
}

/// A fire in flight; ends when dropped.
pub struct Firing<'a>(&'a FireGate);

impl Drop for Firing<'_> {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.quiet.notify_waiters();
        }
    }
}

impl FireGate {
    /// Marks a fire in flight until the returned guard is dropped.
    pub fn enter(&self) -> Firing<'_> {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        Firing(self)
    }

    /// Fires in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Returns when no fire is in flight, or after `max_wait`.
    pub async fn quiet(&self, max_wait: Duration) {
        let deadline = tokio::time::Instant::now() + max_wait;
        loop {
            let notified = self.quiet.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inflight() == 0 {
                return;
            }
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(deadline) => return,
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Queued,
    Writing,
    /// Written as this resourceVersion; kept until the cache shows it.
    Done(String),
}

#[derive(Debug)]
struct Entry {
    namespace: String,
    name: String,
    status: CronHPAStatus,
    wake: Option<DateTime<Utc>>,
    seq: u64,
    phase: Phase,
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    queue: VecDeque<String>,
    written: HashMap<String, Written>,
    seq: u64,
}

struct Inner {
    client: Client,
    gate: Arc<FireGate>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    state: Mutex<State>,
    work: Arc<Notify>,
    idle: Notify,
}

/// Writes statuses in the background; see the module documentation.
#[derive(Clone)]
pub struct StatusWriter {
    inner: Arc<Inner>,
}

/// Whether a cache at `seen` shows a write that returned `written` (numeric resourceVersions
/// compare as numbers, as every API server writes them; anything else only by equality).
fn reached(seen: Option<&str>, written: &str) -> bool {
    match (
        seen.and_then(|s| s.parse::<u64>().ok()),
        written.parse::<u64>(),
    ) {
        (Some(s), Ok(w)) => s >= w,
        _ => seen == Some(written),
    }
}

impl StatusWriter {
    /// A writer patching through `client` with `writers` background tasks (spawned now; they
    /// stop when every clone of the writer is dropped).
    pub fn new(
        client: Client,
        gate: Arc<FireGate>,
        metrics: Arc<Metrics>,
        backoff: (Duration, Duration),
        writers: usize,
    ) -> Self {
        let inner = Arc::new(Inner {
            client,
            gate,
            metrics,
            backoff: Backoff::new(backoff.0, backoff.1),
            state: Mutex::default(),
            work: Arc::new(Notify::new()),
            idle: Notify::new(),
        });
        for _ in 0..writers.max(1) {
            let weak = Arc::downgrade(&inner);
            let work = inner.work.clone();
            let task = async move {
                loop {
                    let notified = work.notified();
                    tokio::pin!(notified);
                    notified.as_mut().enable();
                    {
                        let Some(inner) = weak.upgrade() else { return };
                        let key = inner.lock().queue.pop_front();
                        if let Some(key) = key {
                            let span = tracing::info_span!("write_status", object = %key);
                            inner.write(key).instrument(span).await;
                            continue;
                        }
                    }
                    // Re-check now and then: the last writer handle may be gone.
                    let _ = tokio::time::timeout(Duration::from_secs(1), notified).await;
                }
            };
            tokio::spawn(task.instrument(tracing::info_span!("status_writer")));
        }
        Self { inner }
    }

    /// Queues `status` for the object (replacing a queued one). `wake`: when its
    /// reconciliation asked to be woken (the watch event of the write is then recognised).
    pub fn submit(
        &self,
        key: &str,
        namespace: &str,
        name: &str,
        status: CronHPAStatus,
        wake: Option<DateTime<Utc>>,
    ) {
        let mut s = self.inner.lock();
        s.written.remove(key);
        s.seq += 1;
        let seq = s.seq;
        let requeue = s.entries.get(key).is_none_or(|e| e.phase != Phase::Queued);
        s.entries.insert(
            key.to_string(),
            Entry {
                namespace: namespace.to_string(),
                name: name.to_string(),
                status,
                wake,
                seq,
                phase: Phase::Queued,
            },
        );
        if requeue {
            s.queue.push_back(key.to_string());
        }
        drop(s);
        self.inner.work.notify_one();
    }

    /// The status decided for the object but not yet in a cache at `resource_version`.
    pub fn overlay(&self, key: &str, resource_version: Option<&str>) -> Option<CronHPAStatus> {
        let mut s = self.inner.lock();
        let entry = s.entries.get(key)?;
        if let Phase::Done(written) = &entry.phase
            && reached(resource_version, written)
        {
            s.entries.remove(key);
            return None;
        }
        Some(entry.status.clone())
    }

    /// The requeue of an object whose cached version is our own last write (no new plan
    /// needed), as [`Written::requeue_after`].
    pub fn unchanged(
        &self,
        key: &str,
        resource_version: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<Duration> {
        self.inner
            .lock()
            .written
            .get(key)
            .and_then(|w| w.requeue_after(resource_version, now))
    }

    /// Forgets the own-write record of an object (its next event is planned).
    pub fn forget_written(&self, key: &str) {
        self.inner.lock().written.remove(key);
    }

    /// Statuses queued or being written.
    pub fn pending(&self) -> usize {
        self.inner
            .lock()
            .entries
            .values()
            .filter(|e| !matches!(e.phase, Phase::Done(_)))
            .count()
    }

    /// Forgets objects for which `keep` is false (deleted objects).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut s = self.inner.lock();
        s.entries.retain(|k, _| keep(k));
        s.written.retain(|k, _| keep(k));
    }

    /// Waits until nothing is queued or being written, at most `limit`; whether it got there.
    pub async fn flush_for(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let idle = self.inner.idle.notified();
                tokio::pin!(idle);
                idle.as_mut().enable();
                if self.pending() == 0 {
                    return;
                }
                idle.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write(self: &Arc<Self>, key: String) {
        self.gate.quiet(MAX_DEFER).await;
        let (namespace, name, status, wake, seq) = {
            let mut s = self.lock();
            let Some(entry) = s.entries.get_mut(&key) else {
                return;
            };
            if entry.phase != Phase::Queued {
                return;
            }
            entry.phase = Phase::Writing;
            (
                entry.namespace.clone(),
                entry.name.clone(),
                entry.status.clone(),
                entry.wake,
                entry.seq,
            )
        };
        // Only the written resourceVersion is read from the response.
        let api: Writer<CronHPA> = Writer::namespaced(self.client.clone(), &namespace);
        let patch = json!({ "status": status });
        let result = api
            .patch_subresource(
                "status",
                &name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await;
        let mut s = self.lock();
        let current = s.entries.get(&key).is_some_and(|e| e.seq == seq);
        match result {
            Ok(written) => {
                self.metrics
                    .status_writes
                    .with_label_values(&["succeeded"])
                    .inc();
                self.backoff.reset(&key);
                if current {
                    match written.metadata.resource_version {
                        Some(rv) => {
                            if let Some(wake) = wake {
                                s.written.insert(
                                    key.clone(),
                                    Written {
                                        resource_version: rv.clone(),
                                        wake,
                                    },
                                );
                            }
                            if let Some(e) = s.entries.get_mut(&key) {
                                e.phase = Phase::Done(rv);
                            }
                        }
                        None => {
                            s.entries.remove(&key);
                        }
                    }
                }
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {
                // The object is gone.
                s.entries.remove(&key);
            }
            Err(source) => {
                self.metrics
                    .status_writes
                    .with_label_values(&["failed"])
                    .inc();
                let error = Error::Status {
                    object: key.clone(),
                    source,
                };
                let delay = self.backoff.next_delay(&key);
                tracing::warn!(%error, ?delay, "status write failed, retrying");
                if current && let Some(e) = s.entries.get_mut(&key) {
                    e.phase = Phase::Queued;
                    let weak = Arc::downgrade(self);
                    let retry = async move {
                        tokio::time::sleep(delay).await;
                        if let Some(inner) = weak.upgrade() {
                            inner.lock().queue.push_back(key);
                            inner.work.notify_one();
                        }
                    };
                    tokio::spawn(retry.in_current_span());
                }
            }
        }
        let idle = s
            .entries
            .values()
            .all(|e| matches!(e.phase, Phase::Done(_)));
        drop(s);
        if idle {
            self.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_versions_compare_as_numbers_when_they_are() {
        assert!(reached(Some("12"), "12"));
        assert!(reached(Some("13"), "12"));
        assert!(!reached(Some("9"), "12"), "not lexically");
        assert!(!reached(None, "12"));
        assert!(reached(Some("abc"), "abc"));
        assert!(!reached(Some("abd"), "abc"));
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_opens_when_the_last_fire_ends_or_at_the_limit() {
        let gate = Arc::new(FireGate::default());
        // Nothing in flight: at once.
        tokio::time::timeout(Duration::from_millis(1), gate.quiet(MAX_DEFER))
            .await
            .expect("open at once");

        let first = gate.enter();
        let second = gate.enter();
        let start = tokio::time::Instant::now();
        let waiter = {
            let gate = gate.clone();
            tokio::spawn(async move { gate.quiet(Duration::from_secs(60)).await }.in_current_span())
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(first);
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished(), "one fire still in flight");
        drop(second);
        waiter.await.expect("task");
        assert_eq!(start.elapsed(), Duration::from_secs(2));

        // A fire that never ends: the limit.
        let _stuck = gate.enter();
        let start = tokio::time::Instant::now();
        gate.quiet(MAX_DEFER).await;
        assert_eq!(start.elapsed(), MAX_DEFER);
    }
}
