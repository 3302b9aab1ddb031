//! Fault injection: failing writes, closing watches, compacting history.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::errors::ApiError;
use crate::registry::GroupResource;
use crate::store::Store;

#[derive(Clone, Debug)]
struct Rule {
    resource: String,
    remaining: u32,
    code: u16,
}

/// Fault-injection handle (also reachable over HTTP under `/_emulator/faults`).
pub struct Faults {
    rules: Mutex<Vec<Rule>>,
    closer: watch::Sender<u64>,
    store: Arc<Store>,
}

impl Faults {
    pub(crate) fn new(store: Arc<Store>) -> Self {
        let (closer, _) = watch::channel(0);
        Faults {
            rules: Mutex::new(Vec::new()),
            closer,
            store,
        }
    }

    /// Fail the next `count` writes (create/update/patch/delete, any subresource) of `resource`
    /// (`widgets`, or `widgets.example.com`) with HTTP `code` (500 → InternalError, 409 → Conflict,
    /// 429 → TooManyRequests, anything else → ServiceUnavailable-like).
    pub fn fail_writes(&self, resource: &str, count: u32, code: u16) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Rule {
                resource: resource.to_string(),
                remaining: count,
                code,
            });
    }

    /// Drop all pending write faults.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// End every open watch stream (clients re-watch from their last resourceVersion).
    pub fn close_watches(&self) {
        self.closer.send_modify(|v| *v += 1);
    }

    /// Compact all history and close watches: clients re-watching from an old resourceVersion get 410 Gone.
    pub fn compact(&self) {
        self.store.compact();
        self.close_watches();
    }

    pub(crate) fn watch_closer(&self) -> watch::Receiver<u64> {
        self.closer.subscribe()
    }

    pub(crate) fn take_write_fault(&self, gr: &GroupResource, name: &str) -> Option<ApiError> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let full = if gr.group.is_empty() {
            gr.resource.clone()
        } else {
            format!("{}.{}", gr.resource, gr.group)
        };
        let pos = rules
            .iter()
            .position(|r| r.remaining > 0 && (r.resource == gr.resource || r.resource == full))?;
        let rule = &mut rules[pos];
        rule.remaining -= 1;
        let code = rule.code;
        if rule.remaining == 0 {
            rules.remove(pos);
        }
        Some(match code {
            409 => ApiError::stale(&gr.group, &gr.resource, name),
            500 => ApiError::internal("injected fault"),
            429 => ApiError::new(429, "TooManyRequests", "injected fault: too many requests"),
            c => ApiError::new(c, "ServiceUnavailable", "injected fault"),
        })
    }

    /// Handle `/_emulator/faults/...` admin requests.
    pub(crate) fn handle_http(
        &self,
        method: &http::Method,
        rest: &str,
        body: &[u8],
    ) -> Result<Value, ApiError> {
        let body: Value = if body.is_empty() {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
        };
        match (method.as_str(), rest) {
            ("POST", "fail-writes") => {
                let resource = body
                    .get("resource")
                    .and_then(Value::as_str)
                    .ok_or_else(|| ApiError::bad_request("resource required"))?;
                let count = body.get("count").and_then(Value::as_u64).unwrap_or(1) as u32;
                let code = body.get("code").and_then(Value::as_u64).unwrap_or(500) as u16;
                self.fail_writes(resource, count, code);
                Ok(json!({"ok": true}))
            }
            ("POST", "close-watches") => {
                self.close_watches();
                Ok(json!({"ok": true}))
            }
            ("POST", "compact") => {
                self.compact();
                Ok(json!({"ok": true}))
            }
            ("DELETE", "") | ("POST", "clear") => {
                self.clear();
                Ok(json!({"ok": true}))
            }
            _ => Err(ApiError::not_found_path()),
        }
    }
}
