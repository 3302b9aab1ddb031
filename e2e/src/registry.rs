//! Resource registry: built-in kinds and CRD-defined kinds, and the discovery documents.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use serde_json::{Value, json};

use crate::errors::{ApiError, ApiResult, Cause};
use crate::strategy::{self, Strategy};

/// Storage key: group + plural resource name (shared by all versions of a resource).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupResource {
    /// API group ("" for core).
    pub group: String,
    /// Plural resource name.
    pub resource: String,
}

impl GroupResource {
    /// Build from string slices.
    pub fn new(group: &str, resource: &str) -> Self {
        GroupResource {
            group: group.into(),
            resource: resource.into(),
        }
    }
}

/// `/scale` mapping.
#[derive(Clone, Debug)]
pub struct ScaleInfo {
    /// JSON path (`.spec.replicas`).
    pub spec_replicas_path: String,
    /// JSON path (`.status.replicas`).
    pub status_replicas_path: String,
    /// JSON path to a label selector string, or for built-ins the `spec.selector` object.
    pub label_selector_path: Option<String>,
}

/// A subresource row served in discovery besides status/scale.
#[derive(Clone, Debug)]
pub struct ExtraSubresource {
    /// e.g. `binding`.
    pub name: String,
    /// Kind of the request body.
    pub group: String,
    /// Version of the request body kind.
    pub version: String,
    /// Kind of the request body.
    pub kind: String,
    /// Verbs.
    pub verbs: Vec<String>,
}

impl ExtraSubresource {
    /// A subresource `name` whose request body is `group/version` `kind`.
    pub fn new(name: &str, group: &str, version: &str, kind: &str, verbs: &[&str]) -> Self {
        ExtraSubresource {
            name: name.into(),
            group: group.into(),
            version: version.into(),
            kind: kind.into(),
            verbs: s(verbs),
        }
    }
}

/// CRD `additionalPrinterColumns` entry.
#[derive(Clone, Debug)]
pub struct PrinterColumn {
    /// Column name.
    pub name: String,
    /// openapi type (`string`, `integer`, `date`, ...).
    pub type_: String,
    /// `format`.
    pub format: String,
    /// Description.
    pub description: String,
    /// Priority (0 = shown by default).
    pub priority: i64,
    /// Simple JSONPath like `.spec.replicas`.
    pub json_path: String,
}

/// A resource served at one group/version.
#[derive(Clone, Debug)]
pub struct ResourceInfo {
    /// API group ("" for core).
    pub group: String,
    /// Version.
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Plural.
    pub plural: String,
    /// Singular.
    pub singular: String,
    /// Short names.
    pub short_names: Vec<String>,
    /// Namespaced?
    pub namespaced: bool,
    /// Verbs.
    pub verbs: Vec<String>,
    /// Categories (`all`).
    pub categories: Vec<String>,
    /// Has a status subresource.
    pub status: bool,
    /// Scale subresource.
    pub scale: Option<ScaleInfo>,
    /// Other subresources (pods/binding, pods/eviction, namespaces/finalize).
    pub extra: Vec<ExtraSubresource>,
    /// Defined by a CRD.
    pub crd: bool,
    /// metadata.generation is maintained.
    pub tracks_generation: bool,
    /// Schema for pruning / validation: a CRD `openAPIV3Schema` or `{"$ref": ...}` into the built-in definitions.
    pub schema: Option<Arc<Value>>,
    /// openapi definition name for built-ins (`io.k8s.api.core.v1.Pod`).
    pub definition: Option<String>,
    /// CRD printer columns.
    pub printer_columns: Vec<PrinterColumn>,
    /// Is this the storage version (CRDs).
    pub storage: bool,
    /// The resource's rules (defaults, what writes may change, what a delete does).
    pub strategy: Arc<dyn Strategy>,
}

impl ResourceInfo {
    /// `apiVersion` string.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Storage key. events.k8s.io/v1 Events share storage with core/v1 Events.
    pub fn gr(&self) -> GroupResource {
        if self.is_new_events() {
            return GroupResource::new("", "events");
        }
        GroupResource::new(&self.group, &self.plural)
    }

    /// Is this `events.k8s.io` events (stored as core/v1 Events)?
    pub fn is_new_events(&self) -> bool {
        self.group == "events.k8s.io" && self.plural == "events"
    }

    /// List kind.
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// 404 helper.
    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(&self.group, &self.plural, name)
    }

    /// 422 helper.
    pub fn invalid(&self, name: &str, causes: Vec<Cause>) -> ApiError {
        ApiError::invalid(&self.group, &self.kind, name, causes)
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

const STD_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

struct B<'a> {
    gv: &'a str,
    kind: &'a str,
    plural: &'a str,
    short: &'a [&'a str],
    namespaced: bool,
    status: bool,
    scale: bool,
    all: bool,
    def: &'a str,
}

fn builtin(b: B<'_>, opts: strategy::Options) -> ResourceInfo {
    let (group, version) = match b.gv.split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (String::new(), b.gv.to_string()),
    };
    let scale = b.scale.then(|| ScaleInfo {
        spec_replicas_path: ".spec.replicas".into(),
        status_replicas_path: ".status.replicas".into(),
        label_selector_path: Some(".spec.selector".into()),
    });
    let strategy = strategy::for_builtin(&group, b.plural, opts);
    let extra = strategy.extra_subresources();
    let tracks_generation = b.status
        && !matches!(
            b.plural,
            "namespaces" | "nodes" | "persistentvolumeclaims" | "persistentvolumes" | "services"
        )
        || b.plural == "customresourcedefinitions";
    ResourceInfo {
        group,
        version,
        kind: b.kind.into(),
        plural: b.plural.into(),
        singular: b.kind.to_lowercase(),
        short_names: s(b.short),
        namespaced: b.namespaced,
        verbs: s(STD_VERBS),
        categories: if b.all { s(&["all"]) } else { vec![] },
        status: b.status,
        scale,
        extra,
        crd: false,
        tracks_generation,
        schema: Some(Arc::new(
            json!({"$ref": format!("#/components/schemas/{}", b.def)}),
        )),
        definition: Some(b.def.into()),
        printer_columns: vec![],
        storage: true,
        strategy,
    }
}

/// Create-only review resources answered without storage (authorization is not enforced).
fn reviews() -> Vec<ResourceInfo> {
    let mk = |gv: &str, kind: &str, plural: &str, namespaced: bool, def: &str| {
        let mut i = builtin(
            B {
                gv,
                kind,
                plural,
                short: &[],
                namespaced,
                status: false,
                scale: false,
                all: false,
                def,
            },
            strategy::Options::default(),
        );
        i.verbs = s(&["create"]);
        i.tracks_generation = false;
        i
    };
    vec![
        mk(
            "authorization.k8s.io/v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            false,
            "io.k8s.api.authorization.v1.SelfSubjectAccessReview",
        ),
        mk(
            "authorization.k8s.io/v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            false,
            "io.k8s.api.authorization.v1.SubjectAccessReview",
        ),
        mk(
            "authorization.k8s.io/v1",
            "LocalSubjectAccessReview",
            "localsubjectaccessreviews",
            true,
            "io.k8s.api.authorization.v1.LocalSubjectAccessReview",
        ),
        mk(
            "authorization.k8s.io/v1",
            "SelfSubjectRulesReview",
            "selfsubjectrulesreviews",
            false,
            "io.k8s.api.authorization.v1.SelfSubjectRulesReview",
        ),
        mk(
            "authentication.k8s.io/v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            false,
            "io.k8s.api.authentication.v1.SelfSubjectReview",
        ),
        mk(
            "authentication.k8s.io/v1",
            "TokenReview",
            "tokenreviews",
            false,
            "io.k8s.api.authentication.v1.TokenReview",
        ),
    ]
}

impl ResourceInfo {
    /// A create-only virtual resource (access reviews, token reviews).
    pub fn is_review(&self) -> bool {
        self.verbs.len() == 1 && self.verbs[0] == "create"
    }
}

/// The built-in resources served from start, with new strategies (allocators) of their own.
pub fn builtins(opts: strategy::Options) -> Vec<ResourceInfo> {
    let mut all = stored_builtins(opts);
    all.extend(reviews());
    all
}

fn stored_builtins(opts: strategy::Options) -> Vec<ResourceInfo> {
    macro_rules! r {
        ($gv:expr, $kind:expr, $plural:expr, [$($sh:expr),*], ns=$ns:expr, status=$st:expr, scale=$sc:expr, all=$all:expr, $def:expr) => {
            builtin(B { gv: $gv, kind: $kind, plural: $plural, short: &[$($sh),*], namespaced: $ns, status: $st, scale: $sc, all: $all, def: $def }, opts)
        };
    }
    vec![
        r!(
            "v1",
            "Namespace",
            "namespaces",
            ["ns"],
            ns = false,
            status = true,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.Namespace"
        ),
        r!(
            "v1",
            "Pod",
            "pods",
            ["po"],
            ns = true,
            status = true,
            scale = false,
            all = true,
            "io.k8s.api.core.v1.Pod"
        ),
        r!(
            "v1",
            "Node",
            "nodes",
            ["no"],
            ns = false,
            status = true,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.Node"
        ),
        r!(
            "v1",
            "Service",
            "services",
            ["svc"],
            ns = true,
            status = true,
            scale = false,
            all = true,
            "io.k8s.api.core.v1.Service"
        ),
        r!(
            "v1",
            "Endpoints",
            "endpoints",
            ["ep"],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.Endpoints"
        ),
        r!(
            "v1",
            "ConfigMap",
            "configmaps",
            ["cm"],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.ConfigMap"
        ),
        r!(
            "v1",
            "Secret",
            "secrets",
            [],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.Secret"
        ),
        r!(
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            ["sa"],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.ServiceAccount"
        ),
        r!(
            "v1",
            "Event",
            "events",
            ["ev"],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.Event"
        ),
        r!(
            "v1",
            "PersistentVolumeClaim",
            "persistentvolumeclaims",
            ["pvc"],
            ns = true,
            status = true,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.PersistentVolumeClaim"
        ),
        r!(
            "v1",
            "PersistentVolume",
            "persistentvolumes",
            ["pv"],
            ns = false,
            status = true,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.PersistentVolume"
        ),
        r!(
            "v1",
            "ResourceQuota",
            "resourcequotas",
            ["quota"],
            ns = true,
            status = true,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.ResourceQuota"
        ),
        r!(
            "v1",
            "LimitRange",
            "limitranges",
            ["limits"],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.core.v1.LimitRange"
        ),
        r!(
            "apps/v1",
            "Deployment",
            "deployments",
            ["deploy"],
            ns = true,
            status = true,
            scale = true,
            all = true,
            "io.k8s.api.apps.v1.Deployment"
        ),
        r!(
            "apps/v1",
            "ReplicaSet",
            "replicasets",
            ["rs"],
            ns = true,
            status = true,
            scale = true,
            all = true,
            "io.k8s.api.apps.v1.ReplicaSet"
        ),
        r!(
            "apps/v1",
            "StatefulSet",
            "statefulsets",
            ["sts"],
            ns = true,
            status = true,
            scale = true,
            all = true,
            "io.k8s.api.apps.v1.StatefulSet"
        ),
        r!(
            "apps/v1",
            "DaemonSet",
            "daemonsets",
            ["ds"],
            ns = true,
            status = true,
            scale = false,
            all = true,
            "io.k8s.api.apps.v1.DaemonSet"
        ),
        r!(
            "apps/v1",
            "ControllerRevision",
            "controllerrevisions",
            [],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.apps.v1.ControllerRevision"
        ),
        r!(
            "batch/v1",
            "Job",
            "jobs",
            [],
            ns = true,
            status = true,
            scale = false,
            all = true,
            "io.k8s.api.batch.v1.Job"
        ),
        r!(
            "batch/v1",
            "CronJob",
            "cronjobs",
            ["cj"],
            ns = true,
            status = true,
            scale = false,
            all = true,
            "io.k8s.api.batch.v1.CronJob"
        ),
        r!(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "horizontalpodautoscalers",
            ["hpa"],
            ns = true,
            status = true,
            scale = false,
            all = true,
            "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler"
        ),
        r!(
            "coordination.k8s.io/v1",
            "Lease",
            "leases",
            [],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.coordination.v1.Lease"
        ),
        r!(
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
            [],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.discovery.v1.EndpointSlice"
        ),
        r!(
            "events.k8s.io/v1",
            "Event",
            "events",
            ["ev"],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.events.v1.Event"
        ),
        r!(
            "policy/v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            ["pdb"],
            ns = true,
            status = true,
            scale = false,
            all = false,
            "io.k8s.api.policy.v1.PodDisruptionBudget"
        ),
        r!(
            "networking.k8s.io/v1",
            "Ingress",
            "ingresses",
            ["ing"],
            ns = true,
            status = true,
            scale = false,
            all = false,
            "io.k8s.api.networking.v1.Ingress"
        ),
        r!(
            "networking.k8s.io/v1",
            "NetworkPolicy",
            "networkpolicies",
            ["netpol"],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.networking.v1.NetworkPolicy"
        ),
        r!(
            "storage.k8s.io/v1",
            "StorageClass",
            "storageclasses",
            ["sc"],
            ns = false,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.storage.v1.StorageClass"
        ),
        r!(
            "scheduling.k8s.io/v1",
            "PriorityClass",
            "priorityclasses",
            ["pc"],
            ns = false,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.scheduling.v1.PriorityClass"
        ),
        r!(
            "rbac.authorization.k8s.io/v1",
            "Role",
            "roles",
            [],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.rbac.v1.Role"
        ),
        r!(
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "rolebindings",
            [],
            ns = true,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.rbac.v1.RoleBinding"
        ),
        r!(
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            [],
            ns = false,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.rbac.v1.ClusterRole"
        ),
        r!(
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            [],
            ns = false,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.rbac.v1.ClusterRoleBinding"
        ),
        r!(
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
            "validatingwebhookconfigurations",
            [],
            ns = false,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration"
        ),
        r!(
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            [],
            ns = false,
            status = false,
            scale = false,
            all = false,
            "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration"
        ),
        r!(
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            ["crd", "crds"],
            ns = false,
            status = true,
            scale = false,
            all = false,
            "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition"
        ),
    ]
}

/// The order groups are listed in `/apis`.
const GROUP_ORDER: &[&str] = &[
    "apiregistration.k8s.io",
    "apps",
    "events.k8s.io",
    "authentication.k8s.io",
    "authorization.k8s.io",
    "autoscaling",
    "batch",
    "certificates.k8s.io",
    "networking.k8s.io",
    "policy",
    "rbac.authorization.k8s.io",
    "storage.k8s.io",
    "admissionregistration.k8s.io",
    "apiextensions.k8s.io",
    "scheduling.k8s.io",
    "coordination.k8s.io",
    "discovery.k8s.io",
];

#[derive(Default)]
struct Inner {
    /// (group, version, plural) -> info
    resources: BTreeMap<(String, String, String), Arc<ResourceInfo>>,
    /// group -> versions in preference order
    groups: Vec<(String, Vec<String>)>,
}

/// Thread-safe registry of served resources.
#[derive(Default)]
pub struct Registry {
    inner: RwLock<Inner>,
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}
fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

impl Registry {
    /// Registry with the built-in kinds.
    pub fn with_builtins(opts: strategy::Options) -> Self {
        let r = Registry::default();
        for info in builtins(opts) {
            r.add(info);
        }
        r
    }

    /// The strategy of each stored resource, by storage key (what the storage asks on deletes).
    pub fn storage_strategies(&self) -> strategy::ByResource {
        let mut out = strategy::ByResource::new();
        for info in read(&self.inner).resources.values() {
            out.entry(info.gr())
                .or_insert_with(|| info.strategy.clone());
        }
        out
    }

    /// Add (or replace) a resource version.
    pub fn add(&self, info: ResourceInfo) {
        let mut g = write(&self.inner);
        let key = (
            info.group.clone(),
            info.version.clone(),
            info.plural.clone(),
        );
        if !info.group.is_empty() {
            match g.groups.iter_mut().find(|(n, _)| *n == info.group) {
                Some((_, versions)) => {
                    if !versions.contains(&info.version) {
                        versions.push(info.version.clone());
                    }
                }
                None => g
                    .groups
                    .push((info.group.clone(), vec![info.version.clone()])),
            }
            let order = |n: &str| {
                GROUP_ORDER
                    .iter()
                    .position(|x| *x == n)
                    .unwrap_or(usize::MAX)
            };
            g.groups.sort_by_key(|a| order(&a.0));
        }
        g.resources.insert(key, Arc::new(info));
    }

    /// Replace all versions of a CRD-defined group/resource; `versions` in preference order.
    pub fn set_crd(&self, group: &str, plural: &str, versions: Vec<ResourceInfo>) {
        self.remove_crd(group, plural);
        let mut g = write(&self.inner);
        let mut order: Vec<String> = versions.iter().map(|v| v.version.clone()).collect();
        for info in versions {
            g.resources.insert(
                (
                    info.group.clone(),
                    info.version.clone(),
                    info.plural.clone(),
                ),
                Arc::new(info),
            );
        }
        match g.groups.iter_mut().find(|(n, _)| n == group) {
            Some((_, vs)) => {
                for v in vs.iter() {
                    if !order.contains(v) {
                        order.push(v.clone());
                    }
                }
                *vs = order;
            }
            None => g.groups.push((group.to_string(), order)),
        }
    }

    /// Remove all versions of a CRD-defined resource.
    pub fn remove_crd(&self, group: &str, plural: &str) {
        let mut g = write(&self.inner);
        g.resources
            .retain(|(gr, _, p), _| !(gr == group && p == plural));
        let remaining: Vec<String> = g
            .resources
            .keys()
            .filter(|(gr, _, _)| gr == group)
            .map(|(_, v, _)| v.clone())
            .collect();
        if let Some(pos) = g.groups.iter().position(|(n, _)| n == group) {
            g.groups[pos].1.retain(|v| remaining.contains(v));
            if g.groups[pos].1.is_empty() {
                g.groups.remove(pos);
            }
        }
    }

    /// Look up a resource.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceInfo>> {
        read(&self.inner)
            .resources
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Find the preferred version of a kind.
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceInfo>> {
        read(&self.inner)
            .resources
            .iter()
            .find(|((g, v, _), i)| g == group && v == version && i.kind == kind)
            .map(|(_, i)| i.clone())
    }

    /// Resources of a group version.
    pub fn resources_of(&self, group: &str, version: &str) -> Vec<Arc<ResourceInfo>> {
        read(&self.inner)
            .resources
            .iter()
            .filter(|((g, v, _), _)| g == group && v == version)
            .map(|(_, i)| i.clone())
            .collect()
    }

    /// All resources.
    pub fn all(&self) -> Vec<Arc<ResourceInfo>> {
        read(&self.inner).resources.values().cloned().collect()
    }

    /// Groups (excluding core) with versions in preference order.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        read(&self.inner).groups.clone()
    }

    /// Is (group, version) served?
    pub fn has_group_version(&self, group: &str, version: &str) -> bool {
        if group.is_empty() {
            return version == "v1";
        }
        read(&self.inner)
            .groups
            .iter()
            .any(|(g, vs)| g == group && vs.iter().any(|v| v == version))
    }

    /// `/api` body.
    pub fn api_versions(&self) -> Value {
        json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]})
    }

    fn group_json(name: &str, versions: &[String]) -> Value {
        let vs: Vec<Value> = versions
            .iter()
            .map(|v| json!({"groupVersion": format!("{name}/{v}"), "version": v}))
            .collect();
        let preferred = vs.first().cloned().unwrap_or(Value::Null);
        json!({"name": name, "versions": vs, "preferredVersion": preferred})
    }

    /// `/apis` body.
    pub fn api_group_list(&self) -> Value {
        let groups: Vec<Value> = self
            .groups()
            .iter()
            .map(|(n, vs)| Self::group_json(n, vs))
            .collect();
        json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
    }

    /// `/apis/{group}` body.
    pub fn api_group(&self, group: &str) -> Option<Value> {
        self.groups()
            .iter()
            .find(|(n, _)| n == group)
            .map(|(n, vs)| {
                let mut v = Self::group_json(n, vs);
                v["kind"] = json!("APIGroup");
                v["apiVersion"] = json!("v1");
                v
            })
    }

    /// `/api/v1` or `/apis/{g}/{v}` body.
    pub fn resource_list(&self, group: &str, version: &str) -> Option<Value> {
        if !self.has_group_version(group, version) {
            return None;
        }
        let gv = if group.is_empty() {
            version.to_string()
        } else {
            format!("{group}/{version}")
        };
        let mut rows = Vec::new();
        for info in self.resources_of(group, version) {
            let mut row = json!({
                "name": info.plural,
                "singularName": info.singular,
                "namespaced": info.namespaced,
                "kind": info.kind,
                "verbs": info.verbs,
            });
            if !info.short_names.is_empty() {
                row["shortNames"] = json!(info.short_names);
            }
            if !info.categories.is_empty() {
                row["categories"] = json!(info.categories);
            }
            if info.crd || !info.group.is_empty() || info.plural == "pods" {
                row["storageVersionHash"] = json!(hash8(&format!("{}/{}", gv, info.plural)));
            }
            rows.push(row);
            if info.status {
                rows.push(json!({"name": format!("{}/status", info.plural), "singularName": "", "namespaced": info.namespaced, "kind": info.kind, "verbs": ["get", "patch", "update"]}));
            }
            if info.scale.is_some() {
                rows.push(json!({"name": format!("{}/scale", info.plural), "singularName": "", "namespaced": info.namespaced, "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]}));
            }
            for e in &info.extra {
                let mut row = json!({"name": format!("{}/{}", info.plural, e.name), "singularName": "", "namespaced": info.namespaced, "kind": e.kind, "verbs": e.verbs});
                if !e.group.is_empty() {
                    row["group"] = json!(e.group);
                    row["version"] = json!(e.version);
                }
                rows.push(row);
            }
        }
        Some(
            json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rows}),
        )
    }
}

impl Registry {
    /// Aggregated discovery (`apidiscovery.k8s.io/v2` APIGroupDiscoveryList) for `/api`
    /// (`core = true`) or `/apis`.
    pub fn aggregated(&self, core: bool) -> Value {
        let groups: Vec<(String, Vec<String>)> = if core {
            vec![(String::new(), vec!["v1".to_string()])]
        } else {
            self.groups()
        };
        let items: Vec<Value> = groups
            .iter()
            .map(|(g, versions)| {
                let vs: Vec<Value> = versions
                    .iter()
                    .map(|v| {
                        let resources: Vec<Value> = self
                            .resources_of(g, v)
                            .iter()
                            .map(|i| {
                                let mut subs = Vec::new();
                                if i.status {
                                    subs.push(json!({"subresource": "status", "responseKind": {"group": i.group, "version": i.version, "kind": i.kind}, "verbs": ["get", "patch", "update"]}));
                                }
                                if i.scale.is_some() {
                                    subs.push(json!({"subresource": "scale", "responseKind": {"group": "autoscaling", "version": "v1", "kind": "Scale"}, "verbs": ["get", "patch", "update"]}));
                                }
                                for e in &i.extra {
                                    subs.push(json!({"subresource": e.name, "responseKind": {"group": e.group, "version": e.version, "kind": e.kind}, "verbs": e.verbs}));
                                }
                                let mut r = json!({
                                    "resource": i.plural,
                                    "responseKind": {"group": i.group, "version": i.version, "kind": i.kind},
                                    "scope": if i.namespaced { "Namespaced" } else { "Cluster" },
                                    "singularResource": i.singular,
                                    "verbs": i.verbs,
                                });
                                if !i.short_names.is_empty() {
                                    r["shortNames"] = json!(i.short_names);
                                }
                                if !i.categories.is_empty() {
                                    r["categories"] = json!(i.categories);
                                }
                                if !subs.is_empty() {
                                    r["subresources"] = Value::Array(subs);
                                }
                                r
                            })
                            .collect();
                        json!({"version": v, "resources": resources, "freshness": "Current"})
                    })
                    .collect();
                json!({"metadata": {"name": g, "creationTimestamp": null}, "versions": vs})
            })
            .collect();
        json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
    }
}

/// A short stable hash used for storageVersionHash.
pub fn hash8(s: &str) -> String {
    use base64::Engine;
    let mut h: u64 = 0xcbf29ce484222325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    base64::engine::general_purpose::STANDARD.encode(&h.to_be_bytes()[..8])[..11].to_string()
}

/// Build the served `ResourceInfo`s of a CRD object, after validating its names.
pub fn crd_resources(crd: &Value) -> ApiResult<Vec<ResourceInfo>> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let group = spec
        .get("group")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let names = spec.get("names").cloned().unwrap_or(Value::Null);
    let plural = names
        .get("plural")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let kind = names
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let scope = spec
        .get("scope")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let causes = crd_causes(name, &group, &plural, &kind, scope, &versions);
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "apiextensions.k8s.io",
            "CustomResourceDefinition",
            name,
            causes,
        ));
    }
    let strs = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for v in versions
        .iter()
        .filter(|v| v.get("served").and_then(Value::as_bool).unwrap_or(true))
    {
        let scale = crd_scale(v);
        let printer_columns = crd_printer_columns(v);
        out.push(ResourceInfo {
            group: group.clone(),
            version: v
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .into(),
            kind: kind.clone(),
            plural: plural.clone(),
            singular: names
                .get("singular")
                .and_then(Value::as_str)
                .map(String::from)
                .unwrap_or_else(|| kind.to_lowercase()),
            short_names: strs(names.get("shortNames")),
            namespaced: scope == "Namespaced",
            verbs: s(STD_VERBS),
            categories: strs(names.get("categories")),
            status: v.pointer("/subresources/status").is_some(),
            scale,
            extra: vec![],
            crd: true,
            tracks_generation: true,
            schema: v.pointer("/schema/openAPIV3Schema").cloned().map(Arc::new),
            definition: None,
            printer_columns,
            storage: v.get("storage").and_then(Value::as_bool).unwrap_or(false),
            strategy: strategy::custom(),
        });
    }
    // Kubernetes version priority: GA > beta > alpha, higher numbers first.
    out.sort_by_key(|i| std::cmp::Reverse(version_priority(&i.version)));
    Ok(out)
}

/// The scale subresource of one CRD version, with the default paths.
fn crd_scale(v: &Value) -> Option<ScaleInfo> {
    v.pointer("/subresources/scale").map(|sc| ScaleInfo {
        spec_replicas_path: sc
            .get("specReplicasPath")
            .and_then(Value::as_str)
            .unwrap_or(".spec.replicas")
            .into(),
        status_replicas_path: sc
            .get("statusReplicasPath")
            .and_then(Value::as_str)
            .unwrap_or(".status.replicas")
            .into(),
        label_selector_path: sc
            .get("labelSelectorPath")
            .and_then(Value::as_str)
            .map(String::from),
    })
}

/// The additionalPrinterColumns of one CRD version.
fn crd_printer_columns(v: &Value) -> Vec<PrinterColumn> {
    v.get("additionalPrinterColumns")
        .and_then(Value::as_array)
        .map(|cols| {
            cols.iter()
                .map(|c| PrinterColumn {
                    name: c
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    type_: c
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("string")
                        .into(),
                    format: c
                        .get("format")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    description: c
                        .get("description")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                    priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                    json_path: c
                        .get("jsonPath")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// What is wrong with a CRD's names, scope and versions (empty when it is valid).
fn crd_causes(
    name: &str,
    group: &str,
    plural: &str,
    kind: &str,
    scope: &str,
    versions: &[Value],
) -> Vec<Cause> {
    let mut causes = Vec::new();
    if group.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.group",
            "Required value",
        ));
    }
    if plural.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.plural",
            "Required value",
        ));
    }
    if kind.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.names.kind",
            "Required value",
        ));
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "metadata.name",
            format!("Invalid value: \"{name}\": must be spec.names.plural+\".\"+spec.group"),
        ));
    }
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause::new(
            "FieldValueNotSupported",
            "spec.scope",
            format!(
                "Unsupported value: \"{scope}\": supported values: \"Cluster\", \"Namespaced\""
            ),
        ));
    }
    if versions.is_empty() {
        causes.push(Cause::new(
            "FieldValueRequired",
            "spec.versions",
            "Required value",
        ));
    }
    let storage_count = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .count();
    if !versions.is_empty() && storage_count != 1 {
        causes.push(Cause::new(
            "FieldValueInvalid",
            "spec.versions",
            format!("Invalid value: {storage_count}: must have exactly one version marked as storage version"),
        ));
    }
    for (i, v) in versions.iter().enumerate() {
        if v.pointer("/schema/openAPIV3Schema").is_none() {
            causes.push(Cause::new(
                "FieldValueRequired",
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                "Required value: schemas are required",
            ));
        }
    }
    causes
}

/// Kube-style version priority (v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > others).
pub fn version_priority(v: &str) -> (u8, u64, u64) {
    let re = |s: &str| -> Option<(u64, u8, u64)> {
        let rest = s.strip_prefix('v')?;
        let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let major: u64 = digits.parse().ok()?;
        let tail = &rest[digits.len()..];
        if tail.is_empty() {
            return Some((major, 3, 0));
        }
        let (kind, num) = if let Some(n) = tail.strip_prefix("beta") {
            (2, n)
        } else if let Some(n) = tail.strip_prefix("alpha") {
            (1, n)
        } else {
            return None;
        };
        Some((major, kind, num.parse().ok()?))
    };
    match re(v) {
        Some((major, kind, minor)) => (kind, major, minor),
        None => (0, 0, 0),
    }
}
