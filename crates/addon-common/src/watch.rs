//! Trigger streams that stay correct across relists.
//!
//! kube-runtime's `Controller` hands the reconciler the object it finds in its reflector
//! store. After a watch expires (410 Gone) the watcher relists: `Init`, one `InitApply` per
//! object, `InitDone`, and the reflector store keeps its *old* content until `InitDone`.
//! `touched_objects()` turns every `InitApply` into a trigger at once, so those reconciles read
//! the pre-relist objects, and nothing triggers them again once the store is swapped: a change
//! made while the watch was down is never acted on (seen as a controller stalling on a
//! large cluster). An object deleted while the watch was down triggers nothing at all.
//!
//! [`triggers`] passes `Apply` and `Delete` events on as triggers, drops `InitApply`, and
//! signals every `InitDone` on a [`Relists`] channel; the controller feeds that channel to
//! `Controller::reconcile_all_on`, so after each relist every object is reconciled from the
//! fresh store. (client-go informers do the equivalent: a relist replays every object as an
//! update.)
//!
//! [`store_synced`] is the one way a controller learns that a reflector store has synced (for
//! its readiness check): kube-runtime's `Store::wait_until_ready` wakes only the task that
//! polled it last, and the `Controller` over the same store polls it too.

use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Sends a signal at the end of each relist of any stream built by [`triggers`].
#[derive(Clone, Debug)]
pub struct Relists(mpsc::UnboundedSender<()>);

impl Relists {
    /// A sender and the stream of its signals (for `Controller::reconcile_all_on`).
    pub fn channel() -> (Self, BoxStream<'static, ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let rx = futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|()| ((), rx)) },
        );
        (Self(tx), rx.boxed())
    }

    fn relisted(&self) {
        // The receiver is gone only when the controller has stopped.
        let _ = self.0.send(());
    }
}

/// The objects a controller should be triggered for: applied and deleted objects as they come,
/// nothing for the objects of a relist (their reconciles would read the store before it holds
/// them) but a signal on `relists` when the relist is done. Put it after `.reflect(writer)`
/// (or after any cache that applies `InitDone` before passing it on).
pub fn triggers<K, S>(
    events: S,
    relists: Relists,
) -> impl Stream<Item = Result<K, watcher::Error>> + Send + 'static
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    events.filter_map(move |event| {
        std::future::ready(match event {
            Ok(watcher::Event::Apply(obj) | watcher::Event::Delete(obj)) => Some(Ok(obj)),
            Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => None,
            Ok(watcher::Event::InitDone) => {
                relists.relisted();
                None
            }
            Err(error) => Some(Err(error)),
        })
    })
}

/// How often [`store_synced`] polls the store again.
const SYNC_RECHECK: Duration = Duration::from_millis(250);

/// Whether `store` has synced (its first list is in), false if `stop` fired first or the
/// store's writer was dropped before. `Store::wait_until_ready` keeps only the waker of its
/// last poller (kube-runtime's `DelayedInit` over a oneshot) and the `Controller` polls it too,
/// so a task awaiting it alongside the controller may never wake: it is polled again every
/// 250 ms.
pub async fn store_synced<K>(store: &Store<K>, stop: &CancellationToken) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    loop {
        if stop.is_cancelled() {
            return false;
        }
        match tokio::time::timeout(SYNC_RECHECK, store.wait_until_ready()).await {
            Ok(Ok(())) => return true,
            Ok(Err(_writer_dropped)) => return false,
            Err(_elapsed) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use kube::runtime::reflector;
    use watcher::Event;

    #[tokio::test]
    async fn relisted_objects_trigger_once_the_relist_is_done() {
        let (relists, mut signals) = Relists::channel();
        let events: Vec<Result<Event<u32>, watcher::Error>> = vec![
            Ok(Event::Init),
            Ok(Event::InitApply(1)),
            Ok(Event::InitApply(2)),
            Ok(Event::InitDone),
            Ok(Event::Apply(3)),
            Err(watcher::Error::NoResourceVersion),
            Ok(Event::Delete(1)),
            Ok(Event::Init),
            Ok(Event::InitApply(2)),
            Ok(Event::InitDone),
        ];
        let out: Vec<Result<u32, watcher::Error>> =
            triggers(futures::stream::iter(events), relists)
                .collect()
                .await;
        let ok: Vec<u32> = out
            .iter()
            .filter_map(|r| r.as_ref().ok().copied())
            .collect();
        assert_eq!(ok, [3, 1], "no trigger for the objects of a relist");
        assert_eq!(out.iter().filter(|r| r.is_err()).count(), 1, "errors pass");
        for _ in 0..2 {
            assert_eq!(signals.next().await, Some(()), "one signal per relist");
        }
    }

    #[tokio::test]
    async fn readiness_is_seen_while_another_task_also_waits_on_the_store() {
        let (store, mut writer) = reflector::store::<Pod>();
        let stop = CancellationToken::new();
        let mine = {
            let (store, stop) = (store.clone(), stop.clone());
            tokio::spawn(async move { store_synced(&store, &stop).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Polls after ours, as the Controller does: only the last poller's waker is kept.
        let other = {
            let store = store.clone();
            tokio::spawn(async move { store.wait_until_ready().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        writer.apply_watcher_event(&Event::InitDone);
        let synced = tokio::time::timeout(Duration::from_secs(5), mine)
            .await
            .expect("readiness noticed")
            .expect("task");
        assert!(synced);
        other.await.expect("task").expect("ready");
    }

    #[tokio::test]
    async fn stop_or_a_dropped_writer_ends_the_wait() {
        let stop = CancellationToken::new();
        let (never, _writer) = reflector::store::<Pod>();
        let waiting = {
            let stop = stop.clone();
            tokio::spawn(async move { store_synced(&never, &stop).await })
        };
        stop.cancel();
        let synced = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("stop noticed")
            .expect("task");
        assert!(!synced, "stop ends the wait");

        let (orphan, writer) = reflector::store::<Pod>();
        drop(writer);
        let live = CancellationToken::new();
        assert!(
            !store_synced(&orphan, &live).await,
            "no writer: never synced"
        );
    }
}
