//! [`SlimPod`]: the part of a pod the controller reads, decoded straight from the wire.
//!
//! Every pod watch event used to be decoded into a whole `Pod` (managedFields, env, volumes,
//! probes, every container status...) and kept in the cache: most of the controller's CPU was
//! spent allocating and freeing that, and most of its memory holding it. A `SlimPod` is decoded
//! by skipping everything the planner and executor never read, and it is what
//! [`crate::index::OwnerIndex`] keeps. The planner reads it in place through
//! [`PodView`]; [`SlimPod::to_pod`] rebuilds a `Pod` holding just the kept fields only where a
//! patch is built or a foreign pod's spec is compared.
//!
//! What is kept:
//! - metadata: name, namespace, uid, resourceVersion, generation, creation and deletion
//!   timestamps, labels, annotations (less `kubectl.kubernetes.io/last-applied-configuration`),
//!   ownerReferences, finalizers;
//! - spec of a pod whose hash labels this implementation wrote: nodeName, restartPolicy, and
//!   name, image and resources of each container and init container (such pods are compared
//!   with their template by hash labels: see [`crate::plan::sync_needed`]);
//! - the whole spec of any other pod (adoption compares it with the template field by field);
//! - status: phase, reason, the `Ready` and in-place gate conditions, and name, image and
//!   imageID of each (init) container status.
//!
//! Whether a spec is kept whole is decided by the labels, so it depends on `metadata` coming
//! before `spec` in the object, as every API server writes it; the other order only costs a
//! whole spec, never a wrong decision.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use addon_common::k8s_openapi::api::core::v1::{
    Container, ContainerStatus, Pod, PodCondition, PodSpec, PodStatus, ResourceRequirements,
};
use addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    ObjectMeta, OwnerReference, Time,
};
use serde::Deserialize;
use serde::de::{Deserializer, IgnoredAny, MapAccess, Visitor};

use addon_common::api::tapp::IN_PLACE_UPDATE_READY_CONDITION;
use addon_common::{k8s_openapi, kube};

use crate::hash::labels_have_own_hashes;
use crate::pods::PodView;

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A pod as the controller caches it (see the module documentation).
#[derive(Clone, Debug, Default)]
pub struct SlimPod {
    /// The kept metadata fields, less labels and annotations (see [`PodView::label`]).
    pub metadata: ObjectMeta,
    labels: Option<Pairs>,
    annotations: Option<Pairs>,
    spec: Option<SpecView>,
    status: Option<SlimStatus>,
}

/// Labels or annotations as (key, value) pairs sorted by key: a map's node keeps room for 11
/// entries (over 500 bytes), and a pod has a handful.
#[derive(Clone, Debug, Default)]
struct Pairs(Box<[(Box<str>, Box<str>)]>);

impl Pairs {
    fn new(map: BTreeMap<String, String>) -> Self {
        Self(map.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(key))
            .ok()
            .map(|i| &*self.0[i].1)
    }

    fn to_map(&self) -> BTreeMap<String, String> {
        self.0
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}

#[derive(Clone, Debug)]
enum SpecView {
    Slim(SlimSpec),
    Full(Box<PodSpec>),
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SlimSpec {
    node_name: Option<String>,
    restart_policy: Option<String>,
    #[serde(deserialize_with = "tight")]
    containers: Vec<SlimContainer>,
    #[serde(deserialize_with = "tight_opt")]
    init_containers: Option<Vec<SlimContainer>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SlimContainer {
    name: String,
    image: Option<String>,
    resources: Option<ResourceRequirements>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SlimStatus {
    phase: Option<String>,
    reason: Option<String>,
    #[serde(deserialize_with = "read_conditions")]
    conditions: Option<Vec<PodCondition>>,
    #[serde(deserialize_with = "tight_opt")]
    container_statuses: Option<Vec<SlimContainerStatus>>,
    #[serde(deserialize_with = "tight_opt")]
    init_container_statuses: Option<Vec<SlimContainerStatus>>,
}

/// A list without spare capacity: decoded lists grow to at least 4 elements' room, and most
/// of a pod's lists hold one (a container, a status, an owner reference).
fn tight<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    let mut list = Vec::<T>::deserialize(d)?;
    list.shrink_to_fit();
    Ok(list)
}

/// [`tight`] for an optional list.
fn tight_opt<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    let mut list = Option::<Vec<T>>::deserialize(d)?;
    if let Some(l) = list.as_mut() {
        l.shrink_to_fit();
    }
    Ok(list)
}

/// The conditions the planner reads (`Ready` and the in-place gate), without spare capacity:
/// the others (PodScheduled, Initialized, ContainersReady...) were most of a pod's cache size.
/// Each condition is first read into a [`WireCondition`] borrowing its strings from the
/// event; only the kept ones are turned into `PodCondition`s (times parsed, strings owned).
fn read_conditions<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PodCondition>>, D::Error> {
    struct Kept;
    impl<'de> Visitor<'de> for Kept {
        type Value = Vec<PodCondition>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of pod conditions")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut kept = Vec::new();
            while let Some(c) = seq.next_element::<WireCondition<'de>>()? {
                if c.type_ == "Ready" || c.type_ == IN_PLACE_UPDATE_READY_CONDITION {
                    kept.push(c.into_condition().map_err(serde::de::Error::custom)?);
                }
            }
            kept.shrink_to_fit();
            Ok(kept)
        }
    }
    struct MaybeKept;
    impl<'de> Visitor<'de> for MaybeKept {
        type Value = Option<Vec<PodCondition>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of pod conditions or null")
        }
        fn visit_none<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Self::Value, D2::Error> {
            d.deserialize_seq(Kept).map(Some)
        }
    }
    d.deserialize_option(MaybeKept)
}

/// A pod condition as it is on the wire, its strings borrowed where they have no escapes.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCondition<'a> {
    #[serde(rename = "type", borrow)]
    type_: Cow<'a, str>,
    #[serde(borrow)]
    status: Cow<'a, str>,
    #[serde(default, borrow)]
    reason: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    message: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    last_transition_time: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    last_probe_time: Option<Cow<'a, str>>,
    #[serde(default)]
    observed_generation: Option<i64>,
}

impl WireCondition<'_> {
    fn into_condition(self) -> Result<PodCondition, String> {
        let time = |t: Option<Cow<'_, str>>| -> Result<Option<Time>, String> {
            t.map(|t| {
                t.parse::<k8s_openapi::jiff::Timestamp>()
                    .map(Time)
                    .map_err(|e| format!("invalid condition time {t:?}: {e}"))
            })
            .transpose()
        };
        Ok(PodCondition {
            type_: self.type_.into_owned(),
            status: self.status.into_owned(),
            reason: self.reason.map(Cow::into_owned),
            message: self.message.map(Cow::into_owned),
            last_transition_time: time(self.last_transition_time)?,
            last_probe_time: time(self.last_probe_time)?,
            observed_generation: self.observed_generation,
        })
    }
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SlimContainerStatus {
    name: String,
    image: String,
    #[serde(rename = "imageID")]
    image_id: String,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct SlimMeta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    generation: Option<i64>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    #[serde(deserialize_with = "tight_opt")]
    owner_references: Option<Vec<OwnerReference>>,
    #[serde(deserialize_with = "tight_opt")]
    finalizers: Option<Vec<String>>,
}

impl SlimMeta {
    /// The kept metadata, labels and annotations.
    fn split(self) -> (ObjectMeta, Option<Pairs>, Option<Pairs>) {
        let mut annotations = self.annotations;
        if let Some(a) = annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
        let meta = ObjectMeta {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            resource_version: self.resource_version,
            generation: self.generation,
            creation_timestamp: self.creation_timestamp,
            deletion_timestamp: self.deletion_timestamp,
            deletion_grace_period_seconds: self.deletion_grace_period_seconds,
            owner_references: self.owner_references,
            finalizers: self.finalizers,
            ..ObjectMeta::default()
        };
        (
            meta,
            self.labels.map(Pairs::new),
            annotations.map(Pairs::new),
        )
    }
}

impl SlimContainer {
    fn to_container(&self) -> Container {
        Container {
            name: self.name.clone(),
            image: self.image.clone(),
            resources: self.resources.clone(),
            ..Container::default()
        }
    }
}

impl SlimContainerStatus {
    fn to_status(&self) -> ContainerStatus {
        ContainerStatus {
            name: self.name.clone(),
            image: self.image.clone(),
            image_id: self.image_id.clone(),
            ..ContainerStatus::default()
        }
    }
}

impl SlimPod {
    /// A `Pod` holding the kept fields (and nothing else).
    pub fn to_pod(&self) -> Pod {
        let spec = self.spec.as_ref().map(|s| match s {
            SpecView::Full(spec) => (**spec).clone(),
            SpecView::Slim(s) => PodSpec {
                node_name: s.node_name.clone(),
                restart_policy: s.restart_policy.clone(),
                containers: s
                    .containers
                    .iter()
                    .map(SlimContainer::to_container)
                    .collect(),
                init_containers: s
                    .init_containers
                    .as_ref()
                    .map(|c| c.iter().map(SlimContainer::to_container).collect()),
                ..PodSpec::default()
            },
        });
        let statuses = |list: &Option<Vec<SlimContainerStatus>>| {
            list.as_ref()
                .map(|l| l.iter().map(SlimContainerStatus::to_status).collect())
        };
        let status = self.status.as_ref().map(|s| PodStatus {
            phase: s.phase.clone(),
            reason: s.reason.clone(),
            conditions: s.conditions.clone(),
            container_statuses: statuses(&s.container_statuses),
            init_container_statuses: statuses(&s.init_container_statuses),
            ..PodStatus::default()
        });
        Pod {
            metadata: ObjectMeta {
                labels: self.labels.as_ref().map(Pairs::to_map),
                annotations: self.annotations.as_ref().map(Pairs::to_map),
                ..self.metadata.clone()
            },
            spec,
            status,
        }
    }

    /// Whether the whole spec was kept (the pod's hash labels are not ours).
    pub fn has_full_spec(&self) -> bool {
        matches!(self.spec, Some(SpecView::Full(_)))
    }
}

impl PodView for SlimPod {
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn label(&self, key: &str) -> Option<&str> {
        self.labels.as_ref()?.get(key)
    }
    fn annotation(&self, key: &str) -> Option<&str> {
        self.annotations.as_ref()?.get(key)
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
        match self.spec.as_ref()? {
            SpecView::Slim(s) => s.node_name.as_deref(),
            SpecView::Full(s) => s.node_name.as_deref(),
        }
    }
    fn restart_policy(&self) -> Option<&str> {
        match self.spec.as_ref()? {
            SpecView::Slim(s) => s.restart_policy.as_deref(),
            SpecView::Full(s) => s.restart_policy.as_deref(),
        }
    }
    fn containers(&self) -> impl Iterator<Item = (&str, Option<&str>)> {
        let (slim, full) = match self.spec.as_ref() {
            Some(SpecView::Slim(s)) => (Some(&s.containers), None),
            Some(SpecView::Full(s)) => (None, Some(&s.containers)),
            None => (None, None),
        };
        let slim = slim
            .into_iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.image.as_deref()));
        let full = full
            .into_iter()
            .flatten()
            .map(|c| (c.name.as_str(), c.image.as_deref()));
        slim.chain(full)
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
        Cow::Owned(SlimPod::to_pod(self))
    }
}

impl kube::Resource for SlimPod {
    type DynamicType = ();
    type Scope = k8s_openapi::NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        <Pod as kube::Resource>::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[derive(Deserialize)]
#[serde(field_identifier, rename_all = "lowercase")]
enum Field {
    Metadata,
    Spec,
    Status,
    #[serde(other)]
    Other,
}

struct SlimPodVisitor;

impl<'de> Visitor<'de> for SlimPodVisitor {
    type Value = SlimPod;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Pod object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SlimPod, A::Error> {
        let mut metadata: Option<SlimMeta> = None;
        let mut spec = None;
        let mut status = None;
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::Metadata => metadata = Some(map.next_value()?),
                Field::Spec => {
                    let ours = metadata
                        .as_ref()
                        .is_some_and(|m| labels_have_own_hashes(m.labels.as_ref()));
                    spec = if ours {
                        map.next_value::<Option<SlimSpec>>()?.map(SpecView::Slim)
                    } else {
                        map.next_value::<Option<PodSpec>>()?
                            .map(|s| SpecView::Full(Box::new(s)))
                    };
                }
                Field::Status => status = map.next_value()?,
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let metadata = metadata.unwrap_or_default();
        // The spec arrived before the labels that would have slimmed it.
        if let Some(SpecView::Full(full)) = &spec
            && labels_have_own_hashes(metadata.labels.as_ref())
        {
            spec = Some(SpecView::Slim(slim_of(full)));
        }
        let (metadata, labels, annotations) = metadata.split();
        Ok(SlimPod {
            metadata,
            labels,
            annotations,
            spec,
            status,
        })
    }
}

fn slim_of(spec: &PodSpec) -> SlimSpec {
    let slim = |c: &Container| SlimContainer {
        name: c.name.clone(),
        image: c.image.clone(),
        resources: c.resources.clone(),
    };
    SlimSpec {
        node_name: spec.node_name.clone(),
        restart_policy: spec.restart_policy.clone(),
        containers: spec.containers.iter().map(slim).collect(),
        init_containers: spec
            .init_containers
            .as_ref()
            .map(|c| c.iter().map(slim).collect()),
    }
}

impl<'de> Deserialize<'de> for SlimPod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(SlimPodVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HASH_PREFIX;
    use addon_common::api::tapp::{TEMPLATE_HASH_LABEL, UNIQ_HASH_LABEL};
    use serde_json::{Value, json};

    fn wire(labels: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "web-0", "namespace": "ns", "uid": "u1", "resourceVersion": "7",
                "labels": labels,
                "annotations": {LAST_APPLIED: "{}", "keep": "me"},
                "ownerReferences": [{"apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
                    "name": "web", "uid": "t1", "controller": true}],
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {}}}],
                "deletionTimestamp": "2026-01-01T00:00:00Z"
            },
            "spec": {
                "nodeName": "n1", "restartPolicy": "OnFailure",
                "containers": [{"name": "c", "image": "nginx:1",
                    "resources": {"limits": {"cpu": "1"}},
                    "env": [{"name": "A", "value": "1"}]}],
                "initContainers": [{"name": "i", "image": "busybox"}],
                "volumes": [{"name": "v", "emptyDir": {}}],
                "readinessGates": [{"conditionType": "tkestack.io/InPlaceUpdate"}]
            },
            "status": {
                "phase": "Running", "reason": "NodeLost", "podIP": "10.0.0.1",
                "conditions": [{"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                    {"type": "tkestack.io/InPlaceUpdate", "status": "True",
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "c", "image": "nginx:1", "imageID": "sha-1",
                    "ready": true, "restartCount": 3, "state": {"running": {}}}],
                "initContainerStatuses": [{"name": "i", "image": "busybox", "imageID": "sha-i",
                    "ready": false, "restartCount": 0}]
            }
        })
    }

    fn own_labels() -> Value {
        json!({
            TEMPLATE_HASH_LABEL: format!("{HASH_PREFIX}1"),
            UNIQ_HASH_LABEL: format!("{HASH_PREFIX}2"),
            "tapp_instance_key": "0"
        })
    }

    /// The conditions the planner reads.
    fn read_conditions(list: &[PodCondition]) -> Vec<&PodCondition> {
        list.iter()
            .filter(|c| c.type_ == "Ready" || c.type_ == IN_PLACE_UPDATE_READY_CONDITION)
            .collect()
    }

    /// The fields a planner reads, from a decoded pod.
    fn read_fields(pod: &Pod) -> Value {
        let spec = pod.spec.clone().unwrap_or_default();
        let status = pod.status.clone().unwrap_or_default();
        json!({
            "meta": [pod.metadata.name, pod.metadata.namespace, pod.metadata.uid,
                     pod.metadata.resource_version, pod.metadata.labels,
                     pod.metadata.annotations, pod.metadata.owner_references,
                     pod.metadata.deletion_timestamp],
            "spec": [spec.node_name, spec.restart_policy,
                     spec.containers.iter().map(|c| (&c.name, &c.image, &c.resources)).collect::<Vec<_>>(),
                     spec.init_containers.iter().flatten().map(|c| (&c.name, &c.image)).collect::<Vec<_>>()],
            "status": [status.phase, status.reason,
                       read_conditions(status.conditions.as_deref().unwrap_or_default()),
                       status.container_statuses.iter().flatten().map(|c| (&c.name, &c.image, &c.image_id)).collect::<Vec<_>>(),
                       status.init_container_statuses.iter().flatten().map(|c| &c.name).collect::<Vec<_>>()],
        })
    }

    #[test]
    fn conditions_null_escaped_and_bad_times() {
        let decode = |conditions: Value| {
            serde_json::from_str::<SlimPod>(
                &json!({"metadata": {"name": "p"}, "status": {"conditions": conditions}})
                    .to_string(),
            )
        };
        let none = decode(Value::Null).expect("null conditions");
        assert!(none.conditions().is_empty());
        let escaped = decode(json!([{"type": "Initialized", "status": "True"},
            {"type": "Ready", "status": "False", "message": "a \"quoted\" note",
             "lastProbeTime": null, "observedGeneration": 3}]))
        .expect("escaped strings");
        let kept = escaped.conditions();
        assert_eq!(kept.len(), 1, "only Ready is kept");
        assert_eq!(kept[0].message.as_deref(), Some("a \"quoted\" note"));
        assert_eq!(kept[0].observed_generation, Some(3));
        assert!(kept[0].last_probe_time.is_none());
        let bad =
            decode(json!([{"type": "Ready", "status": "True", "lastTransitionTime": "yesterday"}]));
        assert!(bad.expect_err("bad time").to_string().contains("yesterday"));
    }

    #[test]
    fn own_pods_keep_what_the_planner_reads_and_nothing_else() {
        let v = wire(own_labels());
        let full: Pod = serde_json::from_value(v.clone()).expect("pod");
        let slim: SlimPod = serde_json::from_str(&v.to_string()).expect("slim");
        assert!(!slim.has_full_spec());
        let pod = slim.to_pod();
        let mut expected = full.clone();
        if let Some(a) = expected.metadata.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
        assert_eq!(read_fields(&pod), read_fields(&expected));
        assert!(pod.metadata.managed_fields.is_none());
        let spec = pod.spec.expect("spec");
        assert!(spec.volumes.is_none() && spec.containers[0].env.is_none());
        assert!(spec.readiness_gates.is_none());
        assert_eq!(pod.status.expect("status").pod_ip, None);
    }

    /// Everything a [`PodView`] answers.
    fn view(pod: &impl PodView) -> Value {
        json!({
            "meta": pod.metadata().name,
            "labels": [pod.label("tapp_instance_key"), pod.label(TEMPLATE_HASH_LABEL),
                       pod.label(UNIQ_HASH_LABEL), pod.label("missing")],
            "annotations": [pod.annotation("keep"), pod.annotation(LAST_APPLIED),
                            pod.annotation("missing")],
            "phase": pod.phase(), "reason": pod.reason(),
            "conditions": read_conditions(pod.conditions()),
            "hasSpec": pod.has_spec(), "node": pod.node_name(),
            "restartPolicy": pod.restart_policy(),
            "containers": pod.containers().collect::<Vec<_>>(),
            "statuses": pod.container_statuses().collect::<Vec<_>>(),
            "ran": pod.has_container_statuses(),
        })
    }

    #[test]
    fn the_view_of_a_slim_pod_reads_as_the_pod() {
        for labels in [
            own_labels(),
            json!({"tapp_template_hash_key": "1", "tapp_uniq_hash_key": "2"}),
        ] {
            let v = wire(labels);
            let mut full: Pod = serde_json::from_value(v.clone()).expect("pod");
            let slim: SlimPod = serde_json::from_str(&v.to_string()).expect("slim");
            assert_eq!(slim.annotation(LAST_APPLIED), None, "never kept");
            if let Some(a) = full.metadata.annotations.as_mut() {
                a.remove(LAST_APPLIED);
            }
            assert_eq!(view(&slim), view(&full));
            assert_eq!(view(&*PodView::to_pod(&slim)), view(&full));
            assert_eq!(slim.annotation("keep"), Some("me"));
            assert_eq!(
                slim.label(TEMPLATE_HASH_LABEL),
                full.label(TEMPLATE_HASH_LABEL)
            );
            assert!(slim.label(TEMPLATE_HASH_LABEL).is_some());
            assert_eq!(view(&slim)["containers"], json!([["c", "nginx:1"]]));
            let kept: Vec<&str> = slim.conditions().iter().map(|c| c.type_.as_str()).collect();
            assert_eq!(kept, ["Ready", IN_PLACE_UPDATE_READY_CONDITION]);
        }
        let empty: SlimPod = serde_json::from_str(r#"{"metadata":{"name":"x"}}"#).expect("slim");
        let mut named = Pod::default();
        named.metadata.name = Some("x".into());
        assert_eq!(view(&empty), view(&named));
    }

    #[test]
    fn kept_lists_have_no_spare_capacity() {
        let slim: SlimPod = serde_json::from_str(&wire(own_labels()).to_string()).expect("slim");
        let Some(SpecView::Slim(spec)) = &slim.spec else {
            panic!("slim spec expected");
        };
        let status = slim.status.as_ref().expect("status");
        let statuses = status.container_statuses.as_ref().expect("statuses");
        let refs = slim.metadata.owner_references.as_ref().expect("refs");
        let conditions = status.conditions.as_ref().expect("conditions");
        assert_eq!(spec.containers.capacity(), 1);
        assert_eq!(statuses.capacity(), 1);
        assert_eq!(refs.capacity(), 1);
        assert_eq!(conditions.capacity(), 2);
    }

    #[test]
    fn foreign_pods_keep_their_whole_spec() {
        let v = wire(json!({"tapp_template_hash_key": "123", "tapp_uniq_hash_key": "456"}));
        let full: Pod = serde_json::from_value(v.clone()).expect("pod");
        let slim: SlimPod = serde_json::from_str(&v.to_string()).expect("slim");
        assert!(slim.has_full_spec());
        assert_eq!(slim.to_pod().spec, full.spec);
    }

    #[test]
    fn a_spec_before_the_labels_is_slimmed_afterwards() {
        let v = wire(own_labels());
        let text = format!(
            r#"{{"spec":{},"status":{},"metadata":{}}}"#,
            v["spec"], v["status"], v["metadata"]
        );
        let slim: SlimPod = serde_json::from_str(&text).expect("slim");
        assert!(!slim.has_full_spec());
        let from_ordered: SlimPod = serde_json::from_str(&v.to_string()).expect("slim");
        assert_eq!(
            read_fields(&slim.to_pod()),
            read_fields(&from_ordered.to_pod())
        );
    }

    #[test]
    fn decodes_inside_watch_events_in_either_key_order() {
        let v = wire(own_labels());
        for text in [
            format!(r#"{{"type":"MODIFIED","object":{v}}}"#),
            format!(r#"{{"object":{v},"type":"MODIFIED"}}"#),
        ] {
            let event: kube::api::WatchEvent<SlimPod> = serde_json::from_str(&text).expect("event");
            let kube::api::WatchEvent::Modified(pod) = event else {
                panic!("not a MODIFIED event");
            };
            assert_eq!(pod.metadata.name.as_deref(), Some("web-0"));
            assert!(!pod.has_full_spec());
        }
    }

    #[test]
    fn nulls_and_missing_sections_decode() {
        let slim: SlimPod =
            serde_json::from_str(r#"{"metadata":{"name":"x"},"spec":null,"status":null}"#)
                .expect("slim");
        let pod = slim.to_pod();
        assert!(pod.spec.is_none() && pod.status.is_none());
        let slim: SlimPod = serde_json::from_str(r#"{"kind":"Pod"}"#).expect("slim");
        assert_eq!(slim.to_pod(), Pod::default());
    }
}
