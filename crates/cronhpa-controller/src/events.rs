//! Events published off the fire path: a bounded queue drained by a few background workers.
//!
//! A fire must not wait for its `SuccessfulRescale` Event: at 10,000 simultaneous fires the
//! Event POSTs would be a quarter of the API requests on the critical path. Reconciliations
//! hand their Events to an [`EventQueue`] instead; a few workers publish them (so during a
//! burst they take a small share of the API server, and drain at full speed after it).
//!
//! - **Bounded**: at most `capacity` Events wait; when the queue is full, `publish` waits for
//!   room (backpressure on the reconciliations), memory never grows without bound.
//! - **Ordered per object**: an object's Events always go to the same worker (by hash of the
//!   object's namespace/name), which publishes them one after the other.
//! - **One series cache**: the workers share one `EventRecorder`; an object's Events still
//!   fold into series.
//! - **Never lost on a clean stop**: [`EventQueue::flush`] waits until every queued Event is
//!   published (the controller flushes, with a time limit, when it stops).

use std::{
    collections::hash_map::DefaultHasher,
    hash::{Hash, Hasher},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use addon_common::{
    events::{EventRecorder, EventType},
    k8s_openapi::api::core::v1::ObjectReference,
};
use tokio::sync::{Notify, mpsc};
use tracing::Instrument;

use crate::status::{FireGate, MAX_DEFER};

/// Default number of Events that may wait in the queue (about 400 bytes each).
pub const DEFAULT_CAPACITY: usize = 16_384;
/// Default number of background publishers.
pub const DEFAULT_WORKERS: usize = 8;

struct Pending {
    regarding: ObjectReference,
    type_: EventType,
    reason: &'static str,
    action: &'static str,
    note: String,
}

/// Counts queued-but-unpublished Events and wakes [`EventQueue::flush`].
#[derive(Default)]
struct Outstanding {
    count: AtomicUsize,
    idle: Notify,
}

impl Outstanding {
    fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }
}

/// Publishes Events in the background, in order per object; see the module documentation.
#[derive(Clone)]
pub struct EventQueue {
    shards: Arc<[mpsc::Sender<Pending>]>,
    outstanding: Arc<Outstanding>,
}

impl EventQueue {
    /// A queue of at most `capacity` Events, published with `recorder` (the process's one,
    /// so that an object's Events fold into series) by `workers` tasks. Must be called inside
    /// a tokio runtime (it spawns the workers, which stop when every clone of the queue is
    /// dropped).
    /// With a `gate`, each Event waits (boundedly) for the fires in flight to end.
    pub fn new(
        recorder: EventRecorder,
        capacity: usize,
        workers: usize,
        gate: Option<Arc<FireGate>>,
    ) -> Self {
        let workers = workers.max(1);
        let per_shard = (capacity / workers).max(1);
        let outstanding = Arc::new(Outstanding::default());
        let shards: Vec<mpsc::Sender<Pending>> = (0..workers)
            .map(|worker| {
                let (tx, mut rx) = mpsc::channel::<Pending>(per_shard);
                let recorder = recorder.clone();
                let outstanding = outstanding.clone();
                let gate = gate.clone();
                let task = async move {
                    while let Some(e) = rx.recv().await {
                        if let Some(gate) = &gate {
                            gate.quiet(MAX_DEFER).await;
                        }
                        let span = tracing::info_span!(
                            "publish_event",
                            namespace = e.regarding.namespace.as_deref().unwrap_or_default(),
                            name = e.regarding.name.as_deref().unwrap_or_default(),
                            reason = e.reason
                        );
                        recorder
                            .publish(&e.regarding, None, e.type_, e.reason, e.action, e.note)
                            .instrument(span)
                            .await;
                        outstanding.done();
                    }
                };
                tokio::spawn(task.instrument(tracing::info_span!("event_queue", worker)));
                tx
            })
            .collect();
        Self {
            shards: shards.into(),
            outstanding,
        }
    }

    fn shard(&self, regarding: &ObjectReference) -> &mpsc::Sender<Pending> {
        let mut h = DefaultHasher::new();
        (&regarding.namespace, &regarding.name).hash(&mut h);
        // The modulo of a u64 by a usize fits in a usize.
        &self.shards[(h.finish() % self.shards.len() as u64) as usize]
    }

    /// Queues an Event about `regarding`; waits only while the queue is full.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        type_: EventType,
        reason: &'static str,
        action: &'static str,
        note: impl Into<String>,
    ) {
        let pending = Pending {
            regarding: regarding.clone(),
            type_,
            reason,
            action,
            note: note.into(),
        };
        // Reserve first (cancel-safe: a caller that gives up while the queue is full leaves
        // nothing behind), count, then hand over.
        match self.shard(regarding).reserve().await {
            Ok(permit) => {
                self.outstanding.count.fetch_add(1, Ordering::AcqRel);
                permit.send(pending);
            }
            Err(_) => {
                // The worker is gone (runtime shutting down): nothing would publish it.
                tracing::warn!(reason, object = ?regarding.name, "event queue closed, event dropped");
            }
        }
    }

    /// A `Normal` Event.
    pub async fn normal(
        &self,
        regarding: &ObjectReference,
        reason: &'static str,
        action: &'static str,
        note: impl Into<String>,
    ) {
        self.publish(regarding, EventType::Normal, reason, action, note)
            .await;
    }

    /// A `Warning` Event.
    pub async fn warning(
        &self,
        regarding: &ObjectReference,
        reason: &'static str,
        action: &'static str,
        note: impl Into<String>,
    ) {
        self.publish(regarding, EventType::Warning, reason, action, note)
            .await;
    }

    /// Events queued and not yet published.
    pub fn pending(&self) -> usize {
        self.outstanding.count.load(Ordering::Acquire)
    }

    /// Waits until every Event queued so far is published.
    pub async fn flush(&self) {
        loop {
            let idle = self.outstanding.idle.notified();
            if self.pending() == 0 {
                return;
            }
            idle.await;
        }
    }

    /// [`flush`](Self::flush) for at most `limit`; `false` when Events were still pending.
    pub async fn flush_for(&self, limit: Duration) -> bool {
        tokio::time::timeout(limit, self.flush()).await.is_ok()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use addon_common::kube::{Client, client::Body};
    use http::{Request, Response};

    /// A client whose Events API records (object, note) and waits on `gate` first.
    fn client(
        seen: Arc<Mutex<Vec<(String, String)>>>,
        gate: Arc<tokio::sync::RwLock<()>>,
    ) -> Client {
        let service = tower::service_fn(move |req: Request<Body>| {
            let seen = seen.clone();
            let gate = gate.clone();
            async move {
                let _pass = gate.read().await;
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                let mut event: serde_json::Value =
                    serde_json::from_slice(&body).unwrap_or_default();
                seen.lock().unwrap_or_else(|p| p.into_inner()).push((
                    event["regarding"]["name"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    event["note"].as_str().unwrap_or_default().to_owned(),
                ));
                event["metadata"]["resourceVersion"] = serde_json::json!("1");
                Ok::<_, std::convert::Infallible>(
                    Response::builder()
                        .status(201)
                        .header("content-type", "application/json")
                        .body(event.to_string())
                        .unwrap_or_default(),
                )
            }
        });
        Client::new(service, "default")
    }

    fn reference(name: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("extensions.tkestack.io/v1".into()),
            kind: Some("CronHPA".into()),
            name: Some(name.into()),
            namespace: Some("default".into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn events_keep_their_order_per_object_and_flush_waits_for_all() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = EventRecorder::new(client(seen.clone(), Arc::default()), "test");
        let queue = EventQueue::new(recorder, 64, 3, None);
        for i in 0..10 {
            for name in ["a", "b", "c", "d"] {
                // Distinct reasons: no folding into series.
                let reason = ["R0", "R1", "R2", "R3", "R4", "R5", "R6", "R7", "R8", "R9"][i];
                queue
                    .normal(&reference(name), reason, "Scale", format!("{name}{i}"))
                    .await;
            }
        }
        queue.flush().await;
        assert_eq!(queue.pending(), 0);
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner()).clone();
        assert_eq!(seen.len(), 40);
        for name in ["a", "b", "c", "d"] {
            let notes: Vec<&str> = seen
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, note)| note.as_str())
                .collect();
            let want: Vec<String> = (0..10).map(|i| format!("{name}{i}")).collect();
            assert_eq!(notes, want, "{name}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_makes_publishers_wait_instead_of_growing() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(tokio::sync::RwLock::new(()));
        let blocked = gate.clone().write_owned().await;
        // One worker, room for two waiting Events.
        let queue = EventQueue::new(
            EventRecorder::new(client(seen.clone(), gate), "test"),
            2,
            1,
            None,
        );
        // Distinct reasons: each Event is its own (no folding into a series).
        let publish = |note: &'static str| {
            let queue = queue.clone();
            async move {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    queue.warning(&reference("a"), note, "Scale", note),
                )
                .await
                .is_ok()
            }
        };
        // The worker takes the first (and hangs on the API), two more wait in the queue...
        assert!(publish("1").await);
        assert!(publish("2").await);
        assert!(publish("3").await);
        // ...and the fourth has no room.
        assert!(!publish("4").await, "the queue is bounded");
        assert_eq!(
            queue.pending(),
            3,
            "a publisher that gave up left nothing behind"
        );
        assert!(!queue.flush_for(Duration::from_secs(1)).await);
        drop(blocked);
        queue.flush().await;
        let notes: Vec<String> = seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(_, n)| n.clone())
            .collect();
        assert_eq!(notes, ["1", "2", "3"]);
    }
}
