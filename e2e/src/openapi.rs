//! `/openapi/v3` documents: built-in schemas from k8s-openapi's schemars impls, CRD schemas from
//! their `openAPIV3Schema`.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use serde_json::{Map, Value, json};

use crate::registry::{Registry, ResourceInfo, hash8};

/// Name of the ObjectMeta definition.
pub const OBJECT_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Built-in definitions (`components.schemas`), generated once.
pub fn definitions() -> &'static Map<String, Value> {
    static DEFS: OnceLock<Map<String, Value>> = OnceLock::new();
    DEFS.get_or_init(|| {
        use k8s_openapi::api::{
            admissionregistration::v1 as adm, apps::v1 as apps, autoscaling, batch::v1 as batch,
            coordination::v1 as coord, core::v1 as core, discovery::v1 as disc, events::v1 as ev,
            networking::v1 as net, policy::v1 as policy, rbac::v1 as rbac, scheduling::v1 as sched,
            storage::v1 as storage,
        };
        use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiext;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
        let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
        macro_rules! add {
            ($($t:ty),* $(,)?) => { $( let _ = generator.subschema_for::<$t>(); )* };
        }
        add!(
            core::Namespace,
            core::Pod,
            core::Node,
            core::Service,
            core::Endpoints,
            core::ConfigMap,
            core::Secret,
            core::ServiceAccount,
            core::Event,
            core::PersistentVolumeClaim,
            core::PersistentVolume,
            core::ResourceQuota,
            core::LimitRange,
            core::Binding,
            apps::Deployment,
            apps::ReplicaSet,
            apps::StatefulSet,
            apps::DaemonSet,
            apps::ControllerRevision,
            batch::Job,
            batch::CronJob,
            autoscaling::v2::HorizontalPodAutoscaler,
            autoscaling::v1::Scale,
            coord::Lease,
            disc::EndpointSlice,
            ev::Event,
            policy::PodDisruptionBudget,
            policy::Eviction,
            net::Ingress,
            net::NetworkPolicy,
            storage::StorageClass,
            sched::PriorityClass,
            rbac::Role,
            rbac::RoleBinding,
            rbac::ClusterRole,
            rbac::ClusterRoleBinding,
            adm::ValidatingWebhookConfiguration,
            adm::MutatingWebhookConfiguration,
            apiext::CustomResourceDefinition,
            meta::ObjectMeta,
            meta::Status,
            meta::DeleteOptions,
            k8s_openapi::api::authorization::v1::SelfSubjectAccessReview,
            k8s_openapi::api::authorization::v1::SubjectAccessReview,
            k8s_openapi::api::authorization::v1::LocalSubjectAccessReview,
            k8s_openapi::api::authorization::v1::SelfSubjectRulesReview,
            k8s_openapi::api::authentication::v1::SelfSubjectReview,
            k8s_openapi::api::authentication::v1::TokenReview,
            k8s_openapi::api::authentication::v1::TokenRequest,
        );
        generator.take_definitions(true)
    })
}

fn collect_refs(v: &Value, defs: &Map<String, Value>, seen: &mut BTreeSet<String>) {
    match v {
        Value::Object(m) => {
            if let Some(r) = m.get("$ref").and_then(Value::as_str) {
                let name = r.rsplit('/').next().unwrap_or_default().to_string();
                if seen.insert(name.clone())
                    && let Some(d) = defs.get(&name)
                {
                    collect_refs(d, defs, seen);
                }
            }
            for x in m.values() {
                collect_refs(x, defs, seen);
            }
        }
        Value::Array(a) => {
            for x in a {
                collect_refs(x, defs, seen);
            }
        }
        _ => {}
    }
}

/// Definition name of a CRD kind: `com.example.v1.Widget`.
pub fn crd_definition_name(info: &ResourceInfo) -> String {
    let rev: Vec<&str> = info.group.split('.').rev().collect();
    format!("{}.{}.{}", rev.join("."), info.version, info.kind)
}

fn gvk(info: &ResourceInfo) -> Value {
    json!([{"group": info.group, "version": info.version, "kind": info.kind}])
}

fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// The CRD schema as served in openapi (apiVersion/kind/metadata added).
pub fn crd_schema(info: &ResourceInfo) -> Value {
    let mut s = info
        .schema
        .as_deref()
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    if let Some(o) = s.as_object_mut() {
        let props = o.entry("properties").or_insert_with(|| json!({}));
        if let Some(p) = props.as_object_mut() {
            p.insert("apiVersion".into(), json!({"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."}));
            p.insert("kind".into(), json!({"type": "string", "description": "Kind is a string value representing the REST resource this object represents."}));
            p.insert("metadata".into(), json!({"allOf": [{"$ref": format!("#/components/schemas/{OBJECT_META}")}], "description": "Standard object's metadata."}));
        }
        o.insert("x-kubernetes-group-version-kind".into(), gvk(info));
    }
    s
}

/// `/openapi/v3` index.
pub fn index(reg: &Registry) -> Value {
    let mut paths = Map::new();
    let mut gvs: Vec<(String, String)> = vec![(String::new(), "v1".into())];
    for (g, vs) in reg.groups() {
        for v in vs {
            gvs.push((g.clone(), v));
        }
    }
    for (g, v) in gvs {
        let infos = reg.resources_of(&g, &v);
        let mut h = String::new();
        for i in &infos {
            h.push_str(&i.plural);
            if i.crd {
                h.push_str(&serde_json::to_string(&i.schema.as_deref()).unwrap_or_default());
                h.push_str(&format!(
                    "{:?}",
                    i.scale.as_ref().map(|s| &s.spec_replicas_path)
                ));
            }
        }
        let p = gv_path(&g, &v);
        let url = format!(
            "/openapi/v3/{p}?hash={}",
            hash8(&h).replace(['+', '/', '='], "0")
        );
        paths.insert(p, json!({"serverRelativeURL": url}));
    }
    json!({"paths": paths})
}

fn params(names: &[&str]) -> Value {
    Value::Array(
        names
            .iter()
            .map(|n| json!({"name": n, "in": "query", "description": n, "schema": {"type": "string", "uniqueItems": true}}))
            .collect(),
    )
}

/// Per-group-version document, or None when not served.
pub fn document(reg: &Registry, gv: &str) -> Option<Value> {
    let (group, version) = if let Some(v) = gv.strip_prefix("api/") {
        (String::new(), v.to_string())
    } else {
        let rest = gv.strip_prefix("apis/")?;
        let (g, v) = rest.split_once('/')?;
        (g.to_string(), v.to_string())
    };
    if !reg.has_group_version(&group, &version) {
        return None;
    }
    let defs = definitions();
    let mut schemas = Map::new();
    let mut seen = BTreeSet::new();
    seen.insert(OBJECT_META.to_string());
    if let Some(m) = defs.get(OBJECT_META) {
        collect_refs(m, defs, &mut seen);
    }
    let mut paths = Map::new();
    for info in reg.resources_of(&group, &version) {
        let def_name = if info.crd {
            let n = crd_definition_name(&info);
            schemas.insert(n.clone(), crd_schema(&info));
            n
        } else {
            let n = info.definition.clone().unwrap_or_default();
            if let Some(d) = defs.get(&n) {
                let mut d = d.clone();
                d["x-kubernetes-group-version-kind"] = gvk(&info);
                collect_refs(&d, defs, &mut seen);
                schemas.insert(n.clone(), d);
            }
            n
        };
        let base = format!("/{}", gv_path(&group, &version));
        let coll = if info.namespaced {
            format!("{base}/namespaces/{{namespace}}/{}", info.plural)
        } else {
            format!("{base}/{}", info.plural)
        };
        let item = format!("{coll}/{{name}}");
        let resp = json!({"200": {"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{def_name}")}}}}});
        let op = |verb: &str, action: &str, p: &[&str]| {
            json!({
                "operationId": format!("{verb}{}", info.kind),
                "x-kubernetes-action": action,
                "x-kubernetes-group-version-kind": {"group": info.group, "version": info.version, "kind": info.kind},
                "parameters": params(p),
                "responses": resp,
            })
        };
        paths.insert(
            coll.clone(),
            json!({
                "get": op("list", "list", &["labelSelector", "fieldSelector", "limit", "continue", "resourceVersion", "watch"]),
                "post": op("create", "post", &["dryRun", "fieldManager", "fieldValidation"]),
            }),
        );
        paths.insert(
            item.clone(),
            json!({
                "get": op("read", "get", &[]),
                "put": op("replace", "put", &["dryRun", "fieldManager", "fieldValidation"]),
                "patch": op("patch", "patch", &["dryRun", "fieldManager", "fieldValidation", "force"]),
                "delete": op("delete", "delete", &["dryRun", "gracePeriodSeconds", "propagationPolicy"]),
            }),
        );
        if info.status {
            paths.insert(
                format!("{item}/status"),
                json!({"get": op("read", "get", &[]), "put": op("replace", "put", &["dryRun", "fieldManager", "fieldValidation"]), "patch": op("patch", "patch", &["dryRun", "fieldManager", "fieldValidation", "force"])}),
            );
        }
    }
    for name in seen {
        if let Some(d) = defs.get(&name) {
            schemas.entry(name).or_insert_with(|| d.clone());
        }
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.33.0"},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}
