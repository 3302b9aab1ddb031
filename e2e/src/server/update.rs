//! `update` and the write path shared by update, patch and subresource writes.

use std::sync::Arc;

use axum::response::Response;
use http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::route::{Ctx, parse_body};
use crate::admission::Operation;
use crate::errors::{ApiError, ApiResult, Cause};
use crate::patch;
use crate::store::{self, is_deleting, meta_mut, meta_str, rv_of};

/// `a == b` ignoring the top-level `keys` (no copies: this runs on every write).
pub(super) fn eq_without(a: &Value, b: &Value, keys: &[&str]) -> bool {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let kept = |m: &serde_json::Map<String, Value>| {
                m.keys().filter(|k| !keys.contains(&k.as_str())).count()
            };
            kept(x) == kept(y)
                && x.iter()
                    .filter(|(k, _)| !keys.contains(&k.as_str()))
                    .all(|(k, v)| y.get(k) == Some(v))
        }
        _ => a == b,
    }
}

/// `a == b` ignoring `metadata.resourceVersion` and `metadata.managedFields` (a write that
/// changes nothing else is a no-op). A missing or non-object `metadata` counts as empty.
pub(super) fn same_but_rv_and_managed_fields(a: &Value, b: &Value) -> bool {
    const SERVER_OWNED: &[&str] = &["resourceVersion", "managedFields"];
    if !(a.is_object() && b.is_object()) {
        return a == b;
    }
    let empty = Value::Object(serde_json::Map::new());
    let meta = |v: &Value| v.get("metadata").filter(|m| m.is_object()).is_some();
    let (ma, mb) = (
        if meta(a) { &a["metadata"] } else { &empty },
        if meta(b) { &b["metadata"] } else { &empty },
    );
    eq_without(a, b, &["metadata"]) && eq_without(ma, mb, SERVER_OWNED)
}

pub(super) fn without(v: &Value, keys: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        o => o.clone(),
    }
}

/// `new` gets the immutable and server-owned metadata of `cur` (uid, creation and deletion
/// times, generation, namespace, name; managedFields unless it brings its own) and no
/// resourceVersion.
fn keep_server_metadata(cur: &Value, new: &mut Value) {
    let empty = json!({});
    let cm = cur.get("metadata").unwrap_or(&empty);
    let m = meta_mut(new);
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
        "namespace",
        "name",
    ] {
        match cm.get(k) {
            Some(v) => {
                m.insert(k.into(), v.clone());
            }
            None => {
                m.remove(k);
            }
        }
    }
    if !m.contains_key("managedFields")
        && let Some(mf) = cm.get("managedFields")
    {
        m.insert("managedFields".into(), mf.clone());
    }
    m.remove("resourceVersion");
}

impl Api {
    /// Shared tail of update/patch/status/scale writes.
    pub(super) async fn finish_update(
        &self,
        ctx: &mut Ctx,
        sub: Option<&str>,
        cur: &Arc<Value>,
        mut new: Value,
        expected_rv: u64,
    ) -> ApiResult<Arc<Value>> {
        let presented;
        let cur = if self.info.is_new_events() {
            presented = Arc::new(self.present(cur));
            &presented
        } else {
            cur
        };
        let name = meta_str(cur, "name").unwrap_or_default().to_string();
        keep_server_metadata(cur, &mut new);
        new["apiVersion"] = cur
            .get("apiVersion")
            .cloned()
            .unwrap_or(json!(self.info.api_version()));
        new["kind"] = json!(self.info.kind);
        match sub {
            Some(sub) => new = self.info.strategy.subresource_update(sub, cur, new),
            None => self
                .info
                .strategy
                .prepare_update(&self.info, cur, &mut new)?,
        }
        // immutable fields of built-ins (main resource writes only)
        if sub.is_none()
            && !self.info.crd
            && let Some((field, msg)) = self.info.strategy.validate_update(cur, &new)
        {
            return Err(self
                .info
                .invalid(&name, vec![Cause::new("FieldValueInvalid", &field, msg)]));
        }
        self.no_new_finalizers_while_deleting(cur, &new, &name)?;
        let mut req = self.admission_request(
            Operation::Update,
            sub,
            ctx,
            &name,
            Some(new),
            Some((**cur).clone()),
        );
        self.run_hooks(&mut req).await?;
        let mut new = req.object.take().unwrap_or(Value::Null);
        self.schema_process(ctx, &mut new, Some(&**cur))?;
        self.validate_meta(&new)?;
        self.bump_generation(cur, &mut new);
        req.object = Some(new);
        self.run_validating_hooks(&req).await?;
        let mut new = req.object.take().unwrap_or(Value::Null);
        let fm = ctx.field_manager();
        // no-op writes do not bump resourceVersion
        if same_but_rv_and_managed_fields(cur, &new) {
            return Ok(cur.clone());
        }
        if !fm.is_empty() && !ctx.content_type.contains("apply-patch") {
            patch::record_update(&mut new, &fm, &self.info.api_version(), json!({}));
        }
        self.fault(&name)?;
        if ctx.dry_run() {
            meta_mut(&mut new).insert("resourceVersion".into(), json!(expected_rv.to_string()));
            return Ok(Arc::new(new));
        }
        let out = self
            .shared
            .store
            .update(&self.gr(), self.to_storage(new), Some(expected_rv))?;
        if self
            .shared
            .store
            .get(&self.gr(), &self.key(&name))
            .is_some()
        {
            self.after_write(&out);
        } else {
            self.after_delete(&out);
        }
        Ok(out)
    }

    /// No finalizer may be added to an object that is being deleted.
    fn no_new_finalizers_while_deleting(
        &self,
        cur: &Value,
        new: &Value,
        name: &str,
    ) -> ApiResult<()> {
        if is_deleting(cur) {
            let old = store::finalizers(cur);
            let added: Vec<String> = store::finalizers(new)
                .into_iter()
                .filter(|f| !old.contains(f))
                .collect();
            if !added.is_empty() {
                return Err(self.info.invalid(
                name,
                vec![Cause::new(
                    "FieldValueForbidden",
                    "metadata.finalizers",
                    format!("Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"),
                )],
            ));
            }
        }
        Ok(())
    }

    /// `metadata.generation` goes up on changes outside metadata (and status, when it is a
    /// subresource).
    fn bump_generation(&self, cur: &Value, new: &mut Value) {
        if self.info.tracks_generation {
            let skip: &[&str] = if self.info.status {
                &["metadata", "status"]
            } else {
                &["metadata"]
            };
            let generation = cur
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let generation = if !eq_without(cur, new, skip) {
                generation + 1
            } else {
                generation
            };
            meta_mut(new).insert("generation".into(), json!(generation));
        }
    }

    pub(super) async fn update(
        &self,
        ctx: &mut Ctx,
        name: &str,
        sub: Option<&str>,
    ) -> ApiResult<Response> {
        let mut body = parse_body(ctx)?;
        if sub == Some("scale") {
            return self.write_scale(ctx, name, Some(body), None).await;
        }
        self.check_type(&mut body)?;
        let body_name = meta_str(&body, "name").unwrap_or_default();
        if body_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let cur = self.get_obj(name)?;
        let body_rv = meta_str(&body, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        let expected = if body_rv.is_empty() {
            if self.info.crd {
                return Err(self.info.invalid(
                    name,
                    vec![Cause::new(
                        "FieldValueInvalid",
                        "metadata.resourceVersion",
                        "Invalid value: 0x0: must be specified for an update",
                    )],
                ));
            }
            rv_of(&cur)
        } else {
            let rv: u64 = body_rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {body_rv}")))?;
            if rv != rv_of(&cur) {
                return Err(ApiError::stale(&self.info.group, &self.info.plural, name));
            }
            rv
        };
        let out = self.finish_update(ctx, sub, &cur, body, expected).await?;
        Ok(self.object_response(ctx, StatusCode::OK, &out, &ctx.warnings))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_comparisons_ignore_only_what_they_say() {
        let a = json!({"metadata": {"name": "a", "resourceVersion": "1", "managedFields": [1],
                                    "generation": 1},
                       "spec": {"replicas": 1}, "status": {"ready": 0}});
        // resourceVersion and managedFields do not make a change...
        let mut b = a.clone();
        b["metadata"]["resourceVersion"] = json!("2");
        b["metadata"]["managedFields"] = json!([2]);
        assert!(same_but_rv_and_managed_fields(&a, &b));
        meta_mut(&mut b).remove("resourceVersion");
        assert!(same_but_rv_and_managed_fields(&a, &b));
        // ...anything else does, in metadata or outside it.
        let mut c = b.clone();
        c["metadata"]["labels"] = json!({"x": "y"});
        assert!(!same_but_rv_and_managed_fields(&a, &c));
        let mut d = b.clone();
        d["spec"]["replicas"] = json!(2);
        assert!(!same_but_rv_and_managed_fields(&a, &d));
        let mut e = b.clone();
        e.as_object_mut().map(|m| m.remove("status"));
        assert!(!same_but_rv_and_managed_fields(&a, &e));
        // generation: spec changes count, metadata and status do not
        let skip = &["metadata", "status"];
        assert!(eq_without(&a, &c, skip));
        assert!(!eq_without(&a, &d, skip));
        assert!(eq_without(&a, &e, skip), "a removed status is skipped");
        let mut f = a.clone();
        f["extra"] = json!(1);
        assert!(!eq_without(&a, &f, skip), "an added field counts");
        assert!(!eq_without(&f, &a, skip), "a removed field counts");
    }
}
