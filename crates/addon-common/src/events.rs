//! Kubernetes Events for state changes, through kube-runtime's `Recorder`
//! (`events.k8s.io/v1`, deduplicated into series; RBAC needs `create` and `patch` on events).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, Recorder, Reporter},
};

pub use kube::runtime::events::EventType;

/// The longest note the Events API accepts.
pub const MAX_NOTE_BYTES: usize = 1024;

/// Publishes Events as one controller; failures are logged, never returned, so an
/// Event that cannot be written never fails a reconciliation.
///
/// kube-runtime folds events with the same (type, reason, action, regarding, related)
/// into one series whatever their note, so an event about a child object (a pod created
/// for a TApp) must name that child as `related`: otherwise "created pod a" and "created
/// pod b" become one event counted twice.
#[derive(Clone)]
pub struct EventRecorder {
    recorder: Recorder,
}

impl EventRecorder {
    /// A recorder reporting as `controller`, with the pod name (`$POD_NAME`) as instance.
    pub fn new(client: Client, controller: &str) -> Self {
        let reporter = Reporter {
            controller: controller.to_owned(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client, reporter),
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

    /// An event about `regarding` that concerns the child or peer object `related` (shown by
    /// `kubectl describe` on `regarding`). kube-runtime folds events with the same (type,
    /// reason, action, regarding, related) into one series whatever their note, so an event
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
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(truncate_note(note)),
            action: action.to_owned(),
            secondary: related,
        };
        if let Err(error) = self.recorder.publish(&event, regarding).await {
            tracing::warn!(%error, reason, object = ?regarding.name, "cannot publish event");
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

#[cfg(test)]
mod tests {
    use super::*;

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
