//! `list`: selectors, resourceVersion semantics, pagination, and the answer as a list, a
//! table, metadata only or protobuf.

use std::borrow::Cow;
use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};

use super::Api;
use super::route::{Ctx, json_response, protobuf_ok};
use crate::errors::{ApiError, ApiResult};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::{store, table};

/// Where a page starts: the list's resourceVersion and the key after which it goes on.
type Start = (u64, Option<(String, String)>);

/// A `resourceVersion` parameter the current state `cur_rv` cannot answer.
fn check_list_rv(ctx: &Ctx, cur_rv: u64) -> ApiResult<()> {
    let rv_param = ctx.q("resourceVersion").unwrap_or_default();
    let rv_match = ctx.q("resourceVersionMatch").unwrap_or_default();
    if rv_param.is_empty() || rv_param == "0" {
        return Ok(());
    }
    let want: u64 = rv_param
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {rv_param}")))?;
    if rv_match == "Exact" && want != cur_rv {
        return Err(ApiError::gone(format!(
            "too old resource version: {want} ({cur_rv})"
        )));
    }
    if want > cur_rv {
        let mut e = ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {want}, current: {cur_rv}"),
        );
        e.details = Some(
            json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
        );
        return Err(e);
    }
    Ok(())
}

/// Cuts `matched` to `limit` items (0: no limit); the continue token and the remaining count.
fn paginate(
    matched: &mut Vec<Arc<Value>>,
    limit: usize,
    list_rv: u64,
) -> (Option<String>, Option<usize>) {
    if limit == 0 || matched.len() <= limit {
        return (None, None);
    }
    let rest = matched.len() - limit;
    matched.truncate(limit);
    let Some(last) = matched.last() else {
        return (None, None);
    };
    let (ns, name) = store::key_of(last);
    let token =
        serde_json::to_vec(&json!({"rv": list_rv, "ns": ns, "name": name})).unwrap_or_default();
    (
        Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token)),
        Some(rest),
    )
}

impl Api {
    pub(super) fn list(&self, ctx: &Ctx) -> ApiResult<Response> {
        let label = LabelSelector::parse(ctx.q("labelSelector").unwrap_or_default())?;
        let field = FieldSelector::parse(ctx.q("fieldSelector").unwrap_or_default())?;
        let ns = if self.info.namespaced && !self.ns.is_empty() {
            Some(self.ns.as_str())
        } else {
            None
        };
        let (items, cur_rv) = self.shared.store.list(&self.gr(), ns);
        check_list_rv(ctx, cur_rv)?;
        let limit: usize = ctx.q("limit").and_then(|l| l.parse().ok()).unwrap_or(0);
        let (list_rv, start) = self.continue_from(ctx, cur_rv)?;
        let mut matched: Vec<Arc<Value>> = items
            .into_iter()
            .filter(|o| start.as_ref().is_none_or(|s| store::key_of(o) > *s))
            .filter(|o| {
                if self.info.is_new_events() {
                    let p = self.present(o);
                    label.matches(&p) && field.matches(&p)
                } else {
                    label.matches(o) && field.matches(o)
                }
            })
            .collect();
        let (cont, remaining) = paginate(&mut matched, limit, list_rv);
        let rv = list_rv.to_string();
        if ctx.wants_table() {
            let cont = cont.as_deref().unwrap_or_default();
            let mut t = table::table(&self.info, &matched, &rv, cont);
            if let Some(r) = remaining {
                t["metadata"]["remainingItemCount"] = json!(r);
            }
            return Ok(json_response(StatusCode::OK, &t, &[]));
        }
        let mut meta = json!({"resourceVersion": rv});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
            meta["remainingItemCount"] = json!(remaining);
        }
        if ctx.wants_metadata() {
            let items: Vec<Value> = matched.iter().map(|o| table::partial_metadata(o)).collect();
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                &[],
            ));
        }
        if ctx.wants_protobuf(&self.info)
            && let Some(resp) = self.protobuf_list(&meta, &matched)
        {
            return Ok(resp);
        }
        Ok(self.json_list(&meta, &matched))
    }

    /// The page a `continue` token asks for (the list's resourceVersion and the last key
    /// seen), or the whole list at `cur_rv`.
    fn continue_from(&self, ctx: &Ctx, cur_rv: u64) -> ApiResult<Start> {
        let Some(c) = ctx.q("continue").filter(|c| !c.is_empty()) else {
            return Ok((cur_rv, None));
        };
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        let list_rv = raw.get("rv").and_then(Value::as_u64).unwrap_or(cur_rv);
        if !self.shared.store.check_not_compacted(&self.gr(), list_rv) {
            return Err(ApiError::gone(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        let text = |k: &str| {
            raw.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        Ok((list_rv, Some((text("ns"), text("name")))))
    }

    /// An item at the requested version (borrowed when stored at it).
    fn presented<'a>(&self, o: &'a Value, av: &str) -> Cow<'a, Value> {
        if o.get("apiVersion").and_then(Value::as_str) == Some(av) {
            Cow::Borrowed(o)
        } else {
            Cow::Owned(self.present(o))
        }
    }

    /// The list in protobuf; None (answer JSON, which the client accepts too) when an item
    /// cannot be encoded.
    fn protobuf_list(&self, meta: &Value, matched: &[Arc<Value>]) -> Option<Response> {
        let av = self.info.api_version();
        let items: Vec<Cow<'_, Value>> = matched.iter().map(|o| self.presented(o, &av)).collect();
        let encoded = crate::proto::encode_list(
            &av,
            &self.info.list_kind(),
            meta,
            items.iter().map(|o| &**o),
        );
        match encoded {
            Ok(b) => Some(protobuf_ok(b)),
            Err(e) => {
                tracing::warn!("protobuf encoding failed, answering JSON: {e}");
                None
            }
        }
    }

    /// The list in JSON, items serialized straight from storage (no clones for the common case).
    fn json_list(&self, meta: &Value, matched: &[Arc<Value>]) -> Response {
        let av = self.info.api_version();
        let mut buf = Vec::with_capacity(256 + matched.len() * 512);
        buf.extend_from_slice(b"{\"apiVersion\":");
        buf.extend_from_slice(&serde_json::to_vec(&av).unwrap_or_default());
        buf.extend_from_slice(b",\"kind\":");
        buf.extend_from_slice(&serde_json::to_vec(&self.info.list_kind()).unwrap_or_default());
        buf.extend_from_slice(b",\"metadata\":");
        buf.extend_from_slice(&serde_json::to_vec(meta).unwrap_or_default());
        buf.extend_from_slice(b",\"items\":[");
        for (i, o) in matched.iter().enumerate() {
            if i > 0 {
                buf.push(b',');
            }
            let _ = serde_json::to_writer(&mut buf, &*self.presented(o, &av));
        }
        buf.extend_from_slice(b"]}");
        (
            StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            buf,
        )
            .into_response()
    }
}
