//! Pure helpers over pods and label selectors.

use std::borrow::Cow;
use std::collections::BTreeMap;

use addon_common::api::tapp::{
    IN_PLACE_UPDATE_READY_CONDITION, IN_PLACE_UPDATE_STATE_ANNOTATION, INSTANCE_ID_LABEL,
    parse_instance_id,
};
use addon_common::k8s_openapi::api::core::v1::{Pod, PodCondition};
use addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};

/// Pod annotation (ours) recording, per container name, the imageID a container ran before
/// an in-place update. Lets "still updating" be decided by imageID instead of the fragile
/// image-string heuristic (tapp PR#63).
pub const PRE_UPDATE_IMAGE_IDS_ANNOTATION: &str = "apps.tkestack.io/pre-update-image-ids";

/// The pod fields the planner reads. Implemented by `Pod` (tests, anything built by hand) and
/// by [`crate::slim::SlimPod`], the form the pod cache holds: planning reads the cache in
/// place, without rebuilding a `Pod` per pod and reconcile.
pub trait PodView {
    /// The metadata: name, namespace, uid, resourceVersion, timestamps, ownerReferences,
    /// finalizers. Labels and annotations are read with [`PodView::label`] and
    /// [`PodView::annotation`] (a `SlimPod` keeps them apart, in less room).
    fn metadata(&self) -> &ObjectMeta;
    /// A label's value.
    fn label(&self, key: &str) -> Option<&str>;
    /// An annotation's value.
    fn annotation(&self, key: &str) -> Option<&str>;
    /// `status.phase`.
    fn phase(&self) -> Option<&str>;
    /// `status.reason`.
    fn reason(&self) -> Option<&str>;
    /// `status.conditions`.
    fn conditions(&self) -> &[PodCondition];
    /// Whether the pod has a spec at all.
    fn has_spec(&self) -> bool;
    /// `spec.nodeName`.
    fn node_name(&self) -> Option<&str>;
    /// `spec.restartPolicy`.
    fn restart_policy(&self) -> Option<&str>;
    /// (name, image) of each regular container.
    fn containers(&self) -> impl Iterator<Item = (&str, Option<&str>)>;
    /// (name, image, imageID) of each regular container's status.
    fn container_statuses(&self) -> impl Iterator<Item = (&str, &str, &str)>;
    /// Whether any container or init container has a status.
    fn has_container_statuses(&self) -> bool;
    /// The pod as a `Pod` (for the rare paths that build patches or compare whole specs).
    fn to_pod(&self) -> Cow<'_, Pod>;
}

impl PodView for Pod {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn label(&self, key: &str) -> Option<&str> {
        self.metadata.labels.as_ref()?.get(key).map(String::as_str)
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .annotations
            .as_ref()?
            .get(key)
            .map(String::as_str)
    }
    fn phase(&self) -> Option<&str> {
        self.status.as_ref()?.phase.as_deref()
    }
    fn reason(&self) -> Option<&str> {
        self.status.as_ref()?.reason.as_deref()
    }
    fn conditions(&self) -> &[PodCondition] {
        self.status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
    }
    fn has_spec(&self) -> bool {
        self.spec.is_some()
    }
    fn node_name(&self) -> Option<&str> {
        self.spec.as_ref()?.node_name.as_deref()
    }
    fn restart_policy(&self) -> Option<&str> {
        self.spec.as_ref()?.restart_policy.as_deref()
    }
    fn containers(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        self.spec
            .iter()
            .flat_map(|s| &s.containers)
            .map(|c| (c.name.as_str(), c.image.as_deref()))
    }
    fn container_statuses(&self) -> impl Iterator<Item = (&str, &str, &str)> {
        self.status
            .iter()
            .flat_map(|s| s.container_statuses.iter().flatten())
            .map(|c| (c.name.as_str(), c.image.as_str(), c.image_id.as_str()))
    }
    fn has_container_statuses(&self) -> bool {
        self.status.as_ref().is_some_and(|s| {
            s.container_statuses.as_ref().is_some_and(|l| !l.is_empty())
                || s.init_container_statuses
                    .as_ref()
                    .is_some_and(|l| !l.is_empty())
        })
    }
    fn to_pod(&self) -> Cow<'_, Pod> {
        Cow::Borrowed(self)
    }
}

macro_rules! forward_pod_view {
    ($($t:ty),*) => {$(
        impl<T: PodView + ?Sized> PodView for $t {
            fn metadata(&self) -> &ObjectMeta {
                (**self).metadata()
            }
            fn label(&self, key: &str) -> Option<&str> {
                (**self).label(key)
            }
            fn annotation(&self, key: &str) -> Option<&str> {
                (**self).annotation(key)
            }
            fn phase(&self) -> Option<&str> {
                (**self).phase()
            }
            fn reason(&self) -> Option<&str> {
                (**self).reason()
            }
            fn conditions(&self) -> &[PodCondition] {
                (**self).conditions()
            }
            fn has_spec(&self) -> bool {
                (**self).has_spec()
            }
            fn node_name(&self) -> Option<&str> {
                (**self).node_name()
            }
            fn restart_policy(&self) -> Option<&str> {
                (**self).restart_policy()
            }
            fn containers(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
                (**self).containers()
            }
            fn container_statuses(&self) -> impl Iterator<Item = (&str, &str, &str)> {
                (**self).container_statuses()
            }
            fn has_container_statuses(&self) -> bool {
                (**self).has_container_statuses()
            }
            fn to_pod(&self) -> Cow<'_, Pod> {
                (**self).to_pod()
            }
        }
    )*};
}
forward_pod_view!(&T, std::sync::Arc<T>);

/// The instance id of a pod (its `tapp_instance_key` label).
pub fn instance_id(pod: &impl PodView) -> Option<u32> {
    pod.label(INSTANCE_ID_LABEL).and_then(parse_instance_id)
}

/// The pod has a deletion timestamp.
pub fn is_dying(pod: &impl PodView) -> bool {
    pod.metadata().deletion_timestamp.is_some()
}

/// The pod's phase ("" when unknown yet).
pub fn phase(pod: &impl PodView) -> &str {
    pod.phase().unwrap_or("")
}

/// A pod condition by type.
pub fn condition<'a>(pod: &'a impl PodView, type_: &str) -> Option<&'a PodCondition> {
    pod.conditions().iter().find(|c| c.type_ == type_)
}

/// PodReady is True.
pub fn is_ready(pod: &impl PodView) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.status == "True")
}

/// The in-place readiness gate condition value, if set.
pub fn in_place_condition(pod: &impl PodView) -> Option<bool> {
    condition(pod, IN_PLACE_UPDATE_READY_CONDITION).map(|c| c.status == "True")
}

/// Image equality as the original judges it: also accepts `docker.io/` prefixes and an
/// implicit `:latest` tag.
pub fn image_equal(spec_image: &str, status_image: &str) -> bool {
    fn normalise(image: &str) -> String {
        let mut s = image
            .strip_prefix("docker.io/library/")
            .or_else(|| image.strip_prefix("docker.io/"))
            .unwrap_or(image)
            .to_string();
        let last = s.rsplit('/').next().unwrap_or("");
        if !last.contains(':') && !last.contains('@') {
            s.push_str(":latest");
        }
        s
    }
    spec_image == status_image || normalise(spec_image) == normalise(status_image)
}

/// "Updating" (reference A.7 step 4): the pod was updated in place (annotation "true") and some
/// container does not run its spec image yet: no status, an empty imageID, the imageID recorded
/// before the update, or (when none was recorded) an image string that differs from the spec.
/// Only regular containers count: init containers of a running pod are not re-run.
pub fn is_updating(pod: &impl PodView) -> bool {
    if pod.annotation(IN_PLACE_UPDATE_STATE_ANNOTATION) != Some("true") {
        return false;
    }
    if !pod.has_spec() {
        return false;
    }
    let recorded = recorded_image_ids(pod.annotation(PRE_UPDATE_IMAGE_IDS_ANNOTATION));
    pod.containers().any(|(name, image)| {
        let Some((_, status_image, image_id)) =
            pod.container_statuses().find(|(n, _, _)| *n == name)
        else {
            return true;
        };
        if image_id.is_empty() {
            return true;
        }
        match recorded.get(&Text(Cow::Borrowed(name))) {
            Some(old) => old.0 == image_id,
            None => !image_equal(image.unwrap_or(""), status_image),
        }
    })
}

/// A string of an annotation's JSON, borrowed from it unless it has escapes.
#[derive(serde::Deserialize, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Text<'a>(#[serde(borrow)] Cow<'a, str>);

/// The imageIDs recorded in [`PRE_UPDATE_IMAGE_IDS_ANNOTATION`] by container name, borrowed
/// from the annotation: the planner reads them on every plan for every pod ever updated in
/// place (the annotation stays). Empty when the annotation is absent or not a JSON object of
/// strings.
fn recorded_image_ids(annotation: Option<&str>) -> BTreeMap<Text<'_>, Text<'_>> {
    annotation
        .and_then(|a| serde_json::from_str(a).ok())
        .unwrap_or_default()
}

/// Whether `labels` satisfy `selector` (matchLabels and matchExpressions).
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_ok = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let exprs_ok = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    labels_ok && exprs_ok
}

/// A selector in the string form of Go's `LabelSelectorAsSelector(...).String()`:
/// requirements sorted by key, `k=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
pub fn selector_string(selector: &LabelSelector) -> String {
    let mut reqs: Vec<(String, String)> = Vec::new();
    for (k, v) in selector.match_labels.iter().flatten() {
        reqs.push((k.clone(), format!("{k}={v}")));
    }
    for e in selector.match_expressions.iter().flatten() {
        let mut values = e.values.clone().unwrap_or_default();
        values.sort();
        let text = match e.operator.as_str() {
            "In" => format!("{} in ({})", e.key, values.join(",")),
            "NotIn" => format!("{} notin ({})", e.key, values.join(",")),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other}", e.key),
        };
        reqs.push((e.key.clone(), text));
    }
    reqs.sort();
    reqs.into_iter()
        .map(|(_, t)| t)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    /// Reference §G: TestIsUpdatingPods (tkestack/tapp pkg/tapp/controller_test.go).
    #[test]
    fn golden_is_updating_pods() {
        let containers = |a: &str, b: &str| json!([{"name": "containerA", "image": a}, {"name": "containerB", "image": b}]);
        let statuses = |a: &str, aid: &str, b: &str, bid: &str| {
            json!([{"name": "containerA", "image": a, "imageID": aid, "ready": true, "restartCount": 0},
                   {"name": "containerB", "image": b, "imageID": bid, "ready": true, "restartCount": 0}])
        };
        let ann = json!({"tkestack.io/inplace-update-state": "true"});
        let pods = [
            pod(
                json!({"metadata": {"labels": {"tapp_instance_key": "0"}}, "spec": {"containers": containers("nginx", "2048")},
                "status": {"containerStatuses": statuses("nginx", "123456", "2048", "12345")}}),
            ),
            pod(
                json!({"metadata": {"labels": {"tapp_instance_key": "1"}}, "spec": {"containers": containers("nginx", "2048")},
                "status": {"containerStatuses": statuses("nginx", "123456", "2048", "")}}),
            ),
            pod(
                json!({"metadata": {"labels": {"tapp_instance_key": "2"}}, "spec": {"containers": containers("nginx:1.7.9", "2048")},
                "status": {"containerStatuses": statuses("nginx", "123456", "2048", "12345")}}),
            ),
            pod(
                json!({"metadata": {"labels": {"tapp_instance_key": "3"}, "annotations": ann}, "spec": {"containers": containers("nginx:1.7.9", "2048")},
                "status": {"containerStatuses": statuses("docker.io/nginx:1.7.9", "1234567", "2048:latest", "123456")}}),
            ),
            pod(
                json!({"metadata": {"labels": {"tapp_instance_key": "4"}, "annotations": ann}, "spec": {"containers": containers("nginx:1.7.9", "2048")},
                "status": {"containerStatuses": statuses("nginx", "1234567", "2048:latest", "123456")}}),
            ),
        ];
        let updating: Vec<u32> = pods
            .iter()
            .filter(is_updating)
            .filter_map(instance_id)
            .collect();
        assert_eq!(updating, vec![4]);
    }

    #[test]
    fn recorded_image_ids_decide_over_image_strings() {
        // The registry reports another name for the same image: the imageID changed, so the
        // update is done although the strings differ (the original would wait forever).
        let done = pod(
            json!({"metadata": {"annotations": {"tkestack.io/inplace-update-state": "true",
                PRE_UPDATE_IMAGE_IDS_ANNOTATION: "{\"c\":\"sha256:old\"}"}},
            "spec": {"containers": [{"name": "c", "image": "mirror.local/nginx:2"}]},
            "status": {"containerStatuses": [{"name": "c", "image": "nginx:2", "imageID": "sha256:new", "ready": true, "restartCount": 1}]}}),
        );
        assert!(!is_updating(&done));
        let waiting = pod(
            json!({"metadata": {"annotations": {"tkestack.io/inplace-update-state": "true",
                PRE_UPDATE_IMAGE_IDS_ANNOTATION: "{\"c\":\"sha256:old\"}"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:2"}]},
            "status": {"containerStatuses": [{"name": "c", "image": "nginx:1", "imageID": "sha256:old", "ready": true, "restartCount": 0}]}}),
        );
        assert!(is_updating(&waiting));
    }

    #[test]
    fn recorded_image_ids_are_read_in_place() {
        let id = |annotation: &str, container: &str| -> Option<String> {
            recorded_image_ids(Some(annotation))
                .get(&Text(container.into()))
                .map(|t| t.0.to_string())
        };
        let ids = r#"{"a":"sha256:1","b":"docker-pullable://nginx@sha256:2"}"#;
        assert_eq!(id(ids, "a").as_deref(), Some("sha256:1"));
        let map = recorded_image_ids(Some(ids));
        assert!(
            map.iter()
                .all(|(k, v)| matches!((&k.0, &v.0), (Cow::Borrowed(_), Cow::Borrowed(_))))
        );
        assert_eq!(id(ids, "c"), None);
        // Escapes (Go's encoding/json writes <, > and & as \u escapes) are decoded.
        let escaped = r#"{"a":"x\u0026y","a\u003c":"z"}"#;
        assert_eq!(id(escaped, "a").as_deref(), Some("x&y"));
        assert_eq!(id(escaped, "a<").as_deref(), Some("z"));
        // The last of repeated names.
        assert_eq!(id(r#"{"a":"1","a":"2"}"#, "a").as_deref(), Some("2"));
        // Anything but an object of strings records nothing.
        assert!(recorded_image_ids(None).is_empty());
        for bad in [
            "",
            "null",
            r#"["a"]"#,
            r#"{"a":1}"#,
            r#"{"b":1,"a":"1"}"#,
            r#"{"a":"1"} x"#,
            r#"{"a":"1""#,
        ] {
            assert!(recorded_image_ids(Some(bad)).is_empty(), "{bad}");
        }
    }

    #[test]
    fn selectors() {
        let sel: LabelSelector = serde_json::from_value(
            json!({"matchLabels": {"app": "nginx", "version": "v1", "type": "tapp"}}),
        )
        .expect("sel");
        assert_eq!(selector_string(&sel), "app=nginx,type=tapp,version=v1");
        let sel: LabelSelector =
            serde_json::from_value(json!({"matchLabels": {"app": "nginx"}})).expect("sel");
        assert_eq!(selector_string(&sel), "app=nginx");
        let sel: LabelSelector = serde_json::from_value(json!({"matchLabels": {"app": "x"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}, {"key": "canary", "operator": "DoesNotExist"}]})).expect("sel");
        assert_eq!(selector_string(&sel), "app=x,!canary,tier in (a,b)");
        let labels = BTreeMap::from([
            ("app".to_string(), "x".to_string()),
            ("tier".to_string(), "a".to_string()),
        ]);
        assert!(selector_matches(&sel, &labels));
        let mut canary = labels.clone();
        canary.insert("canary".into(), "1".into());
        assert!(!selector_matches(&sel, &canary));
    }

    #[test]
    fn image_equality_heuristic() {
        assert!(image_equal("nginx", "docker.io/nginx:latest"));
        assert!(image_equal("nginx", "docker.io/library/nginx:latest"));
        assert!(image_equal("nginx:1.7.9", "docker.io/nginx:1.7.9"));
        assert!(!image_equal("nginx:1.7.9", "nginx"));
        assert!(image_equal("registry:5000/app", "registry:5000/app:latest"));
    }
}
