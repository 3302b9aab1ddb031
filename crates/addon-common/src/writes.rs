//! Writes whose response is read for its `resourceVersion` only.
//!
//! `Api<K>::create`/`patch` decode the whole object the API server returns (for a pod: its
//! spec, status and managed fields, a few hundred allocations). A controller that only needs
//! to know which version its write produced (to recognise it in its cache) pays for all of
//! that on every write. [`Writer`] sends the same requests as `Api<K>` and decodes only
//! `metadata.resourceVersion` from the response: the rest of the body is skipped while
//! parsing, without allocating. It also asks for the response as a PartialObjectMetadata
//! (`Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1`, as client-go's
//! metadata client does), so the API server sends the object's metadata only; a server that
//! cannot transform falls back to the full object (`application/json` is accepted too), which
//! decodes the same.

use std::fmt::Debug;
use std::marker::PhantomData;

use http::HeaderValue;
use http::header::{ACCEPT, CONTENT_TYPE};
use kube::api::{Patch, PatchParams, PostParams};
use kube::core::Request;
use kube::{Client, Resource};
use serde::{Deserialize, Serialize};

/// The `Accept` header of every write: metadata only, else the whole object.
pub const METADATA_ONLY: &str =
    "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1,application/json";

fn metadata_only(mut request: http::Request<Vec<u8>>) -> http::Request<Vec<u8>> {
    request
        .headers_mut()
        .insert(ACCEPT, HeaderValue::from_static(METADATA_ONLY));
    request
}

/// What a write's response is decoded into.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// The object's metadata, reduced to its resourceVersion.
    #[serde(default)]
    pub metadata: WrittenMeta,
}

/// `metadata` of a write's response.
#[derive(Deserialize, Debug, Clone, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WrittenMeta {
    /// The version the write produced.
    #[serde(default)]
    pub resource_version: Option<String>,
}

impl Written {
    /// The version the write produced.
    pub fn resource_version(&self) -> Option<&str> {
        self.metadata.resource_version.as_deref()
    }
}

/// Creates and patches objects of kind `K` in one namespace, decoding each
/// response into [`Written`]. Errors are those of `Api<K>` (`kube::Error::Api` carries the
/// server's Status).
pub struct Writer<K> {
    client: Client,
    request: Request,
    kind: PhantomData<fn() -> K>,
}

// Not derived: a derive would require `K: Clone`.
impl<K> Clone for Writer<K> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            request: self.request.clone(),
            kind: PhantomData,
        }
    }
}

impl<K> Writer<K>
where
    K: Resource<DynamicType = ()>,
{
    /// Objects of `K` in `namespace`.
    pub fn namespaced(client: Client, namespace: &str) -> Self {
        Self {
            client,
            request: Request::new(K::url_path(&(), Some(namespace))),
            kind: PhantomData,
        }
    }

    /// POSTs `object` (any serializable form of a `K`: the typed object or JSON).
    pub async fn create<B: Serialize>(&self, pp: &PostParams, object: &B) -> kube::Result<Written> {
        let body = serde_json::to_vec(object).map_err(kube::Error::SerdeError)?;
        let request = self
            .request
            .create(pp, body)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Written>(metadata_only(request)).await
    }

    /// PATCHes the object `name`.
    pub async fn patch<P: Serialize + Debug>(
        &self,
        name: &str,
        pp: &PatchParams,
        patch: &Patch<P>,
    ) -> kube::Result<Written> {
        let request = self
            .request
            .patch(name, pp, patch)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Written>(metadata_only(request)).await
    }

    /// PATCHes the subresource `subresource` (`status`, `resize`, ...) of the object `name`.
    pub async fn patch_subresource<P: Serialize + Debug>(
        &self,
        subresource: &str,
        name: &str,
        pp: &PatchParams,
        patch: &Patch<P>,
    ) -> kube::Result<Written> {
        let request = self
            .request
            .patch_subresource(subresource, name, pp, patch)
            .map_err(kube::Error::BuildRequest)?;
        self.client.request::<Written>(metadata_only(request)).await
    }

    /// PATCHes the object `name` (or its `subresource`) with a JSON patch (RFC 6902) given as
    /// any serializable list of operations, e.g. a `serde_json::Value` array. `Patch::Json`
    /// wants a typed `json_patch::Patch`; a caller holding the operations as JSON would
    /// convert them only for them to be serialized again.
    pub async fn json_patch<O: Serialize>(
        &self,
        subresource: Option<&str>,
        name: &str,
        pp: &PatchParams,
        operations: &O,
    ) -> kube::Result<Written> {
        // The request `Patch::Merge` builds (URL, query, body), with the JSON patch media type.
        let patch = Patch::Merge(operations);
        let mut request = match subresource {
            Some(sub) => self.request.patch_subresource(sub, name, pp, &patch),
            None => self.request.patch(name, pp, &patch),
        }
        .map_err(kube::Error::BuildRequest)?;
        request
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(JSON_PATCH));
        self.client.request::<Written>(metadata_only(request)).await
    }
}

/// The media type of a JSON patch.
pub const JSON_PATCH: &str = "application/json-patch+json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_resource_version_is_kept() {
        let body = r#"{"kind":"Pod","apiVersion":"v1","metadata":{"name":"p","namespace":"d",
            "uid":"u","resourceVersion":"42","labels":{"a":"b"},
            "managedFields":[{"manager":"m","operation":"Update"}]},
            "spec":{"containers":[{"name":"c","image":"nginx"}]},"status":{"phase":"Pending"}}"#;
        let w: Written = serde_json::from_str(body).expect("decodes");
        assert_eq!(w.resource_version(), Some("42"));
        let none: Written = serde_json::from_str(r#"{"kind":"Status"}"#).expect("decodes");
        assert_eq!(none.resource_version(), None);
    }
}
