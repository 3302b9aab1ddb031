//! Admission extension point: hooks called on create/update/patch/delete (issue 4 plugs the
//! webhook dispatcher in here).

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::errors::ApiResult;
use crate::registry::ResourceInfo;

/// Admission operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE (update, patch, apply on an existing object, status/scale writes)
    Update,
    /// DELETE
    Delete,
    /// CONNECT (pods/binding, pods/eviction)
    Connect,
}

impl Operation {
    /// `admission.k8s.io/v1` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Create => "CREATE",
            Operation::Update => "UPDATE",
            Operation::Delete => "DELETE",
            Operation::Connect => "CONNECT",
        }
    }
}

/// What a hook sees.
#[derive(Clone, Debug)]
pub struct AdmissionRequest {
    /// Operation.
    pub operation: Operation,
    /// Resource (group/version/plural/kind).
    pub resource: Arc<ResourceInfo>,
    /// Subresource (`status`, `scale`, `binding`, ...).
    pub subresource: Option<String>,
    /// Namespace ("" for cluster-scoped).
    pub namespace: String,
    /// Object name (may be empty on create with generateName).
    pub name: String,
    /// New object (create/update); hooks may mutate it in `mutate`.
    pub object: Option<Value>,
    /// Previous object (update/delete).
    pub old_object: Option<Value>,
    /// dryRun=All.
    pub dry_run: bool,
    /// Authenticated user name.
    pub user: String,
}

/// An admission plugin. Mutating hooks run before schema validation, validating hooks after.
pub trait AdmissionHook: Send + Sync + 'static {
    /// Mutating phase. The default does nothing.
    fn mutate<'a>(&'a self, req: &'a mut AdmissionRequest) -> BoxFuture<'a, ApiResult<()>> {
        let _ = req;
        Box::pin(async { Ok(()) })
    }

    /// Validating phase. The default admits.
    fn validate<'a>(&'a self, req: &'a AdmissionRequest) -> BoxFuture<'a, ApiResult<()>> {
        let _ = req;
        Box::pin(async { Ok(()) })
    }
}
