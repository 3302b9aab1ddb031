//! Watching custom resources whose objects may not decode.
//!
//! The Go originals served their CRDs as `apiextensions/v1beta1` without a schema, so a
//! cluster that ran them can hold objects with fields of the wrong type (a string where an
//! integer belongs, a list where a map belongs). A controller that watches `K` directly stops
//! at the first such object: kube-runtime's watcher fails the whole list and retries it
//! forever, and nothing else is reconciled. Controllers therefore watch
//! [`DeserializeGuard<K>`]: an object that does not decode arrives as an [`InvalidObject`]
//! holding its metadata and the decoding error, and the reconciler hands it to [`decoded`],
//! which logs it and publishes a Warning Event on it, and goes on with the rest.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
pub use kube::core::DeserializeGuard;
pub use kube::core::error_boundary::InvalidObject;

use crate::events::EventRecorder;

/// Reason of the Warning Event published on an object that cannot be decoded.
pub const REASON_INVALID_OBJECT: &str = "InvalidObject";

/// Action of that Event.
pub const ACTION_DECODE: &str = "Decode";

/// The decoded object of a guarded watch event, or `None` after reporting why it could not be
/// decoded: a warning in the log and a Warning Event (`InvalidObject`) on the object, which
/// names the decoding error so that `kubectl describe` tells the user what to fix.
///
/// A reconciler returns `Action::await_change()` on `None`: only an edit of the object can make
/// it decodable.
pub async fn decoded<'a, K>(guard: &'a DeserializeGuard<K>, events: &EventRecorder) -> Option<&'a K>
where
    K: Resource<DynamicType = ()>,
{
    match &guard.0 {
        Ok(object) => Some(object),
        Err(invalid) => {
            report(invalid, reference::<K>(invalid), events).await;
            None
        }
    }
}

/// The reference of an object known only by its metadata.
pub fn reference<K>(invalid: &InvalidObject) -> ObjectReference
where
    K: Resource<DynamicType = ()>,
{
    let meta = &invalid.metadata;
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        namespace: meta.namespace.clone(),
        name: meta.name.clone(),
        uid: meta.uid.clone(),
        resource_version: meta.resource_version.clone(),
        ..ObjectReference::default()
    }
}

async fn report(invalid: &InvalidObject, regarding: ObjectReference, events: &EventRecorder) {
    tracing::warn!(
        kind = regarding.kind.as_deref().unwrap_or_default(),
        namespace = regarding.namespace.as_deref().unwrap_or_default(),
        name = regarding.name.as_deref().unwrap_or_default(),
        error = %invalid.error,
        "cannot decode the object; skipping it until it is edited"
    );
    events
        .warning(
            &regarding,
            REASON_INVALID_OBJECT,
            ACTION_DECODE,
            format!("cannot decode this object: {}", invalid.error),
        )
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::tapp::TApp;

    #[test]
    fn a_wrong_typed_field_decodes_to_its_metadata_and_the_error() {
        let guard: DeserializeGuard<TApp> = serde_json::from_value(serde_json::json!({
            "apiVersion": "apps.tkestack.io/v1",
            "kind": "TApp",
            "metadata": {"name": "old", "namespace": "default", "uid": "u1"},
            "spec": {"replicas": "three", "template": {}}
        }))
        .expect("a guard always decodes an object with metadata");
        let invalid = guard.0.as_ref().expect_err("replicas is a string");
        // serde-value's wording: `Invalid type string "three". Expected i32`.
        assert!(
            invalid.error.to_lowercase().contains("invalid type"),
            "{}",
            invalid.error
        );
        let r = reference::<TApp>(invalid);
        assert_eq!(r.kind.as_deref(), Some("TApp"));
        assert_eq!(r.api_version.as_deref(), Some("apps.tkestack.io/v1"));
        assert_eq!(
            (r.namespace.as_deref(), r.name.as_deref(), r.uid.as_deref()),
            (Some("default"), Some("old"), Some("u1"))
        );
    }
}
