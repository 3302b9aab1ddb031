//! Kubernetes Events for state changes (`events.k8s.io/v1`, repeated events folded into
//! series; RBAC needs `create` and `patch` on events).
//!
//! Same wire behaviour as kube-runtime's `Recorder` (event names `<object>.<hex nanos>`,
//! series keyed by type, reason, action, reporter, regarding and related object, a 6-minute
//! series window), with a cache that scales: kube-runtime's recorder stores every recent
//! Event whole and scans the whole cache under a write lock on each publish, which is
//! quadratic in a burst (with 20,000 Events in six minutes it was a TApp controller's hottest
//! function and a quarter of its memory). Here a series costs its key, its Event's name and a
//! count, and expiry pops a time-ordered queue.

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{SecondsFormat, Utc};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::Client;
use kube::api::{Patch, PatchParams, PostParams};

use crate::writes::Writer;
use serde::Serialize;
use serde_json::json;

pub use kube::runtime::events::EventType;

/// The longest note the Events API accepts.
pub const MAX_NOTE_BYTES: usize = 1024;

/// How long repeated Events are folded into one series (as kube-runtime and client-go).
pub const SERIES_WINDOW: Duration = Duration::from_secs(6 * 60);

struct Series {
    namespace: String,
    name: String,
    count: i32,
    expires: Instant,
}

/// The most series remembered (client-go's event correlator keeps 4096 too): beyond it the
/// oldest is forgotten, and its next repeat starts a new Event instead of counting on.
pub const MAX_SERIES: usize = 4096;

/// Live series by a 64-bit hash of (type, reason, action, regarding, related): the keys are
/// long and a controller of many objects publishes thousands of distinct ones.
#[derive(Default)]
struct Cache {
    series: HashMap<u64, Series>,
    /// (expiry, key) in publish order; an entry whose series was renewed since is skipped.
    expiry: VecDeque<(Instant, u64)>,
}

impl Cache {
    /// Forgets the series expired at `now`, then the oldest ones beyond [`MAX_SERIES`].
    fn expire(&mut self, now: Instant) {
        while let Some(&(at, key)) = self.expiry.front() {
            if at > now && self.series.len() <= MAX_SERIES {
                break;
            }
            self.expiry.pop_front();
            // A record older than its series' last renewal is stale: skip it.
            if self.series.get(&key).is_some_and(|s| s.expires <= at) {
                self.series.remove(&key);
            }
        }
    }
}

/// Publishes Events as one controller; failures are logged, never returned, so an
/// Event that cannot be written never fails a reconciliation.
///
/// Events with the same (type, reason, action, regarding, related) within
/// [`SERIES_WINDOW`] are folded into one series whatever their note, so an event about a
/// child object (a pod created for a TApp) must name that child as `related`: otherwise
/// "created pod a" and "created pod b" become one event counted twice.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    cache: Arc<Mutex<Cache>>,
    last_nanos: Arc<AtomicU64>,
}

fn reference_key(h: &mut DefaultHasher, r: &ObjectReference) {
    for part in [&r.api_version, &r.kind, &r.namespace, &r.name, &r.uid] {
        part.as_deref().unwrap_or("").hash(h);
    }
}

impl EventRecorder {
    /// A recorder reporting as `controller`, with the pod name (`$POD_NAME`) as instance.
    pub fn new(client: Client, controller: &str) -> Self {
        Self {
            client,
            controller: controller.to_owned(),
            instance: std::env::var("POD_NAME").unwrap_or_else(|_| controller.to_owned()),
            cache: Arc::default(),
            last_nanos: Arc::default(),
        }
    }

    /// A `Normal` event about `regarding` alone.
    pub async fn normal(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        self.publish(
            regarding,
            None,
            EventType::Normal,
            reason,
            action,
            note.into(),
        )
        .await;
    }

    /// A `Warning` event about `regarding` alone.
    pub async fn warning(
        &self,
        regarding: &ObjectReference,
        reason: &str,
        action: &str,
        note: impl Into<String>,
    ) {
        self.publish(
            regarding,
            None,
            EventType::Warning,
            reason,
            action,
            note.into(),
        )
        .await;
    }

    /// Number of series currently held (for tests and debugging).
    pub fn cached_series(&self) -> usize {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.expire(Instant::now());
        cache.series.len()
    }

    /// A unique, increasing suffix for event names: the current time in nanoseconds, bumped
    /// past the previous one.
    fn name_suffix(&self) -> u64 {
        let now = u64::try_from(Utc::now().timestamp_nanos_opt().unwrap_or_default()).unwrap_or(0);
        let mut prev = self.last_nanos.load(Ordering::Relaxed);
        loop {
            let next = now.max(prev + 1);
            match self.last_nanos.compare_exchange_weak(
                prev,
                next,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return next,
                Err(seen) => prev = seen,
            }
        }
    }

    /// An event about `regarding` that concerns the child or peer object `related` (shown by
    /// `kubectl describe` on `regarding`). Events with the same (type, reason, action,
    /// regarding, related) are folded into one series whatever their note, so an event
    /// about one of several children must name that child here.
    pub async fn publish(
        &self,
        regarding: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let type_name = match type_ {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        };
        let key = {
            let mut h = DefaultHasher::new();
            (type_name, reason, action).hash(&mut h);
            reference_key(&mut h, regarding);
            if let Some(r) = &related {
                reference_key(&mut h, r);
            }
            h.finish()
        };
        let now = Instant::now();
        let stamp = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
        // Renew a live series (the lock is not held across the API call).
        let existing = {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.expire(now);
            cache.series.get_mut(&key).map(|s| {
                s.count += 1;
                s.expires = now + SERIES_WINDOW;
                (s.namespace.clone(), s.name.clone(), s.count)
            })
        };
        if let Some((namespace, name, count)) = existing {
            self.cache
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .expiry
                .push_back((now + SERIES_WINDOW, key));
            let api: Writer<K8sEvent> = Writer::namespaced(self.client.clone(), &namespace);
            let patch = json!({"series": {"count": count, "lastObservedTime": stamp}});
            match api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 404 => {} // gone: start a new series
                Err(error) => {
                    tracing::warn!(%error, reason, object = ?regarding.name, "cannot publish event");
                    return;
                }
            }
        }
        let namespace = regarding
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned());
        let name = format!(
            "{}.{:x}",
            regarding.name.as_deref().unwrap_or(&self.controller),
            self.name_suffix()
        );
        let note = truncate_note(note);
        let event = NewEvent {
            api_version: "events.k8s.io/v1",
            kind: "Event",
            metadata: NewEventMeta {
                name: &name,
                namespace: &namespace,
            },
            event_time: &stamp,
            type_: type_name,
            reason,
            action,
            note: &note,
            regarding,
            related: related.as_ref(),
            reporting_controller: &self.controller,
            reporting_instance: &self.instance,
        };
        let api: Writer<K8sEvent> = Writer::namespaced(self.client.clone(), &namespace);
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.series.insert(
                    key,
                    Series {
                        namespace,
                        name,
                        count: 1,
                        expires: now + SERIES_WINDOW,
                    },
                );
                cache.expiry.push_back((now + SERIES_WINDOW, key));
                cache.expire(now);
            }
            Err(error) => {
                tracing::warn!(%error, reason, object = ?regarding.name, "cannot publish event");
            }
        }
    }
}

/// Cuts a note to [`MAX_NOTE_BYTES`] on a character boundary, marking the cut with `…`.
pub fn truncate_note(mut note: String) -> String {
    if note.len() <= MAX_NOTE_BYTES {
        return note;
    }
    let mut end = MAX_NOTE_BYTES - '…'.len_utf8();
    while !note.is_char_boundary(end) {
        end -= 1;
    }
    note.truncate(end);
    note.push('…');
    note
}

/// The body of a new Event (events.k8s.io/v1), serialized without building a JSON tree.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct NewEvent<'a> {
    api_version: &'static str,
    kind: &'static str,
    metadata: NewEventMeta<'a>,
    event_time: &'a str,
    #[serde(rename = "type")]
    type_: &'a str,
    reason: &'a str,
    action: &'a str,
    note: &'a str,
    regarding: &'a ObjectReference,
    #[serde(skip_serializing_if = "Option::is_none")]
    related: Option<&'a ObjectReference>,
    reporting_controller: &'a str,
    reporting_instance: &'a str,
}

#[derive(Serialize)]
struct NewEventMeta<'a> {
    name: &'a str,
    namespace: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(cache: &mut Cache, key: u64, expires: Instant) {
        cache.series.insert(
            key,
            Series {
                namespace: "ns".into(),
                name: format!("e{key}"),
                count: 1,
                expires,
            },
        );
        cache.expiry.push_back((expires, key));
    }

    #[test]
    fn series_expire_after_their_last_renewal() {
        let t0 = Instant::now();
        let mut cache = Cache::default();
        add(&mut cache, 1, t0 + SERIES_WINDOW);
        add(&mut cache, 2, t0 + SERIES_WINDOW);
        // Series 1 is renewed a minute later.
        let renewed = t0 + Duration::from_secs(60) + SERIES_WINDOW;
        cache.series.get_mut(&1).expect("series 1").expires = renewed;
        cache.expiry.push_back((renewed, 1));
        cache.expire(t0 + SERIES_WINDOW);
        assert!(cache.series.contains_key(&1), "renewed series kept");
        assert!(!cache.series.contains_key(&2), "expired series dropped");
        cache.expire(renewed);
        assert!(cache.series.is_empty());
        assert!(cache.expiry.is_empty());
    }

    #[test]
    fn the_oldest_series_are_forgotten_beyond_the_cap() {
        let t0 = Instant::now();
        let mut cache = Cache::default();
        for key in 0..(MAX_SERIES as u64 + 10) {
            add(
                &mut cache,
                key,
                t0 + SERIES_WINDOW + Duration::from_millis(key),
            );
        }
        // Series 0 was renewed, so it is not the oldest any more.
        let renewed = t0 + SERIES_WINDOW + Duration::from_secs(3600);
        cache.series.get_mut(&0).expect("series 0").expires = renewed;
        cache.expiry.push_back((renewed, 0));
        cache.expire(t0);
        assert_eq!(cache.series.len(), MAX_SERIES);
        assert!(cache.series.contains_key(&0), "renewed series kept");
        for key in 1..=10 {
            assert!(!cache.series.contains_key(&key), "series {key} forgotten");
        }
        assert!(cache.series.contains_key(&11));
    }

    #[test]
    fn short_notes_are_kept() {
        assert_eq!(truncate_note("New size: 3".into()), "New size: 3");
    }

    #[test]
    fn long_notes_are_cut_on_a_char_boundary() {
        let long = "扩容".repeat(400); // 3 bytes per char
        let cut = truncate_note(long);
        assert!(cut.len() <= MAX_NOTE_BYTES, "{}", cut.len());
        assert!(cut.ends_with('…'));
    }
}
