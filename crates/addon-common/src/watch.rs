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

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::mpsc;

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

#[cfg(test)]
mod tests {
    use super::*;
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
}
