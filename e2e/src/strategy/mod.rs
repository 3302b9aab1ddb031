//! Per-resource rules of the API server, in the spirit of kube-apiserver's
//! `registry/<resource>/strategy.go`: each resource's registry entry
//! ([`ResourceInfo::strategy`](crate::registry::ResourceInfo)) holds a [`Strategy`] that the
//! verbs ask what is special about the resource: its defaults, what a create resets, what an
//! update or a subresource write may change, what a delete does. Resources without special
//! rules use [`Plain`]; each special resource has its own small module here.
//!
//! To give a resource special rules: write a type implementing [`Strategy`] (override only the
//! hooks that differ from the defaults) in a module of its own and return it from
//! [`for_builtin`] for its group/resource.

mod crds;
mod namespaces;
mod nodes;
mod pods;
mod reviews;
mod secrets;
mod serviceaccounts;
mod services;
mod volumes;
mod workloads;

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use crate::errors::ApiResult;
use crate::registry::{ExtraSubresource, GroupResource, Registry, ResourceInfo};
use crate::store::{Store, meta_mut};

/// A verb-like subresource answered by its own handler (a POST to `<resource>/<name>/<sub>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// `pods/binding`: assign the pod to a node.
    Bind,
    /// `pods/eviction`: delete the pod through the eviction API.
    Evict,
    /// `serviceaccounts/token`: a TokenRequest.
    Token,
}

/// What deleting an object does before finalizers and the propagation policy are considered.
#[derive(Debug)]
pub enum DeleteStep {
    /// Finalizers and the propagation policy decide (the default).
    Standard,
    /// The object stays as it is (its deletion is already under way).
    Keep,
    /// Store this object (marked for deletion) and keep it; then run `cleanup`.
    Mark {
        /// The object with its deletion metadata set.
        obj: Value,
        /// Work the storage does afterwards.
        cleanup: Cleanup,
    },
}

/// Work the storage does after a [`DeleteStep::Mark`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Nothing: another actor (a kubelet) finishes the deletion.
    None,
    /// Delete everything in the namespace, then finalize the namespace.
    NamespaceContents,
}

/// The rules of one resource. Every hook has the behaviour of a resource without special rules.
pub trait Strategy: Send + Sync + std::fmt::Debug {
    /// Defaults of a built-in kind (not called for custom resources).
    fn defaults(&self, _obj: &mut Value) {}

    /// What a create resets (the status, when it is a subresource) and sets (the server's initial
    /// status); called when the resource has a status subresource.
    fn initial_status(&self, obj: &mut Value) {
        drop_status(obj);
    }

    /// Prepares a create (after metadata defaulting, before admission).
    fn prepare_create(&self, info: &ResourceInfo, obj: &mut Value) -> ApiResult<()> {
        if info.status {
            self.initial_status(obj);
        }
        if !info.crd {
            self.defaults(obj);
        }
        Ok(())
    }

    /// Prepares a write of the main resource: `new` keeps what the main resource may not change
    /// (the status, when it is a subresource).
    fn prepare_update(&self, info: &ResourceInfo, cur: &Value, new: &mut Value) -> ApiResult<()> {
        if info.status {
            keep_status(cur, new);
        }
        if !info.crd {
            self.defaults(new);
        }
        Ok(())
    }

    /// Update validation of a built-in kind's main resource: the immutable field changed, as
    /// `(field, message)`.
    fn validate_update(&self, _cur: &Value, _new: &Value) -> Option<(String, String)> {
        None
    }

    /// Whether `sub` is served (for get, update and patch).
    fn allows_subresource(&self, info: &ResourceInfo, sub: &str) -> bool {
        match sub {
            "status" => info.status,
            "scale" => info.scale.is_some(),
            _ => false,
        }
    }

    /// The object a write through subresource `sub` stores: `cur` with what `sub` may change
    /// taken from `new`.
    fn subresource_update(&self, sub: &str, cur: &Value, new: Value) -> Value {
        match sub {
            "status" => status_only(cur, new),
            _ => new,
        }
    }

    /// A POST subresource with its own handler.
    fn action(&self, _sub: &str) -> Option<Action> {
        None
    }

    /// Subresources listed in discovery besides status and scale.
    fn extra_subresources(&self) -> Vec<ExtraSubresource> {
        vec![]
    }

    /// Names that need not be DNS subdomains (events, nodes, leases, RBAC objects).
    fn lenient_names(&self) -> bool {
        false
    }

    /// What deleting `obj` (`deleting`: already marked) does; `grace` from the DeleteOptions.
    fn delete(&self, _obj: &Value, _deleting: bool, _grace: Option<i64>) -> DeleteStep {
        DeleteStep::Standard
    }

    /// Whether an object marked for deletion with no finalizers left must still stay.
    fn removal_blocked(&self, _obj: &Value) -> bool {
        false
    }

    /// A completed delete answers with the object (true) or with a Status (false).
    fn delete_returns_object(&self) -> bool {
        false
    }

    /// The status of a review (a create-only resource answered, never stored) of `body` by
    /// `user`; `token` is the server's bearer token, if it has one.
    fn review_status(&self, _body: &Value, _user: &str, _token: Option<&str>) -> Value {
        Value::Null
    }

    /// After a create or update was stored.
    fn after_write(&self, _registry: &Registry, _obj: &Value) {}

    /// After the object was removed from storage.
    fn after_delete(&self, _registry: &Registry, _store: &Store, _obj: &Value) {}
}

/// A resource without special rules (custom resources and most built-ins).
#[derive(Debug, Default)]
pub struct Plain {
    /// [`Strategy::lenient_names`].
    pub lenient_names: bool,
}

impl Strategy for Plain {
    fn lenient_names(&self) -> bool {
        self.lenient_names
    }
}

/// Options of the built-in strategies that come from the server's configuration.
#[derive(Clone, Copy, Debug, Default)]
pub struct Options {
    /// Pods bound to a node are deleted gracefully (see `Config::graceful_pod_deletion`).
    pub graceful_pod_deletion: bool,
}

/// The strategy of a built-in resource. Each call makes new instances: a server's allocators
/// (Service ClusterIPs and NodePorts) are its own.
pub fn for_builtin(group: &str, plural: &str, opts: Options) -> Arc<dyn Strategy> {
    match (group, plural) {
        ("", "pods") => Arc::new(pods::Pods {
            graceful_deletion: opts.graceful_pod_deletion,
        }),
        ("", "namespaces") => Arc::new(namespaces::Namespaces),
        ("", "nodes") => Arc::new(nodes::Nodes),
        ("", "services") => Arc::new(services::Services::default()),
        ("", "serviceaccounts") => Arc::new(serviceaccounts::ServiceAccounts),
        ("", "secrets") => Arc::new(secrets::Secrets),
        ("", "persistentvolumeclaims") => Arc::new(volumes::Claims),
        ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets")
        | ("batch", "jobs") => Arc::new(workloads::Workload::new(plural)),
        ("apiextensions.k8s.io", "customresourcedefinitions") => Arc::new(crds::Crds),
        ("authentication.k8s.io", "tokenreviews") => Arc::new(reviews::Review::Token),
        ("authentication.k8s.io", "selfsubjectreviews") => Arc::new(reviews::Review::SelfSubject),
        ("authorization.k8s.io", "selfsubjectrulesreviews") => Arc::new(reviews::Review::Rules),
        ("authorization.k8s.io", _) => Arc::new(reviews::Review::Access),
        ("", "events") | ("coordination.k8s.io", "leases") | ("rbac.authorization.k8s.io", _) => {
            Arc::new(Plain {
                lenient_names: true,
            })
        }
        _ => Arc::new(Plain::default()),
    }
}

/// The strategy of custom resources.
pub fn custom() -> Arc<dyn Strategy> {
    Arc::new(Plain::default())
}

/// Strategies the storage consults on deletes, by storage key.
pub type ByResource = HashMap<GroupResource, Arc<dyn Strategy>>;

/// Removes `status`.
pub fn drop_status(obj: &mut Value) {
    if let Some(m) = obj.as_object_mut() {
        m.remove("status");
    }
}

/// `new` gets the status of `cur` (or none when `cur` has none).
pub fn keep_status(cur: &Value, new: &mut Value) {
    match cur.get("status") {
        Some(s) => new["status"] = s.clone(),
        None => drop_status(new),
    }
}

/// A status write: `cur` with the status (and managedFields) of `new`.
pub fn status_only(cur: &Value, new: Value) -> Value {
    let status = new.get("status").cloned();
    let mf = new.pointer("/metadata/managedFields").cloned();
    let mut out = cur.clone();
    match status {
        Some(s) => out["status"] = s,
        None => drop_status(&mut out),
    }
    if let Some(mf) = mf {
        meta_mut(&mut out).insert("managedFields".into(), mf);
    }
    out
}
