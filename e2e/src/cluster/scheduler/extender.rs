//! HTTP scheduler extenders as kube-scheduler calls them: the `extenders` entries of a
//! `KubeSchedulerConfiguration` (kubescheduler.config.k8s.io/v1) and the upstream wire types of
//! `k8s.io/kube-scheduler/extender/v1` (ExtenderArgs, ExtenderFilterResult, HostPriorityList,
//! ExtenderBindingArgs, ExtenderBindingResult).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::cluster::http::{self, HttpError};
use crate::cluster::quantity;

/// kube-scheduler's `DefaultExtenderTimeout`.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);
/// `MaxNodeScore / MaxExtenderPriority` (100 / 10): extender priorities are scaled by this.
pub const EXTENDER_SCORE_SCALE: i64 = 10;

/// One entry of `extenders` (kubescheduler.config.k8s.io/v1 `Extender`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtenderConfig {
    /// `urlPrefix`: the verbs are appended as `<urlPrefix>/<verb>`.
    pub url_prefix: String,
    /// `filterVerb`.
    #[serde(default)]
    pub filter_verb: String,
    /// `preemptVerb` (accepted, not called: the simulated scheduler does not preempt).
    #[serde(default)]
    pub preempt_verb: String,
    /// `prioritizeVerb`.
    #[serde(default)]
    pub prioritize_verb: String,
    /// `weight` of the priorities.
    #[serde(default)]
    pub weight: i64,
    /// `bindVerb`: when set, this extender binds the pods it is interested in.
    #[serde(default)]
    pub bind_verb: String,
    /// `enableHTTPS`.
    #[serde(default, rename = "enableHTTPS")]
    pub enable_https: bool,
    /// `tlsConfig`.
    #[serde(default)]
    pub tls_config: Option<ExtenderTlsConfig>,
    /// `httpTimeout` as a Go duration (`30s`, `1m`, `500ms`).
    #[serde(default)]
    pub http_timeout: Option<String>,
    /// `nodeCacheCapable`: send and receive node names only.
    #[serde(default)]
    pub node_cache_capable: bool,
    /// `managedResources`.
    #[serde(default)]
    pub managed_resources: Vec<ManagedResource>,
    /// `ignorable`: errors of this extender don't fail scheduling.
    #[serde(default)]
    pub ignorable: bool,
}

/// `tlsConfig` of an extender.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExtenderTlsConfig {
    /// `insecure` (not supported: verification always happens).
    #[serde(default)]
    pub insecure: bool,
    /// `serverName`.
    #[serde(default)]
    pub server_name: String,
    /// `caFile`.
    #[serde(default)]
    pub ca_file: String,
    /// `caData` (base64 PEM, as a Go `[]byte`).
    #[serde(default)]
    pub ca_data: String,
    /// `certFile` (client certificates are not supported).
    #[serde(default)]
    pub cert_file: String,
    /// `keyFile`.
    #[serde(default)]
    pub key_file: String,
}

/// `managedResources` entry.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedResource {
    /// Extended resource name.
    pub name: String,
    /// When true the scheduler's own resource fit ignores this resource.
    #[serde(default)]
    pub ignored_by_scheduler: bool,
}

/// Parses a Go `time.Duration` string (`1h2m3.5s`, `300ms`) that is not negative
/// (`addon_common::duration`, Go's `time.ParseDuration` rules).
pub fn parse_go_duration(s: &str) -> Option<Duration> {
    addon_common::duration::parse_go_duration(s).ok()
}

/// Validation as kube-scheduler's `validateExtenders`.
pub fn validate(extenders: &[ExtenderConfig]) -> Result<(), String> {
    let mut binders = 0;
    for (i, e) in extenders.iter().enumerate() {
        if e.url_prefix.is_empty() {
            return Err(format!("extenders[{i}].urlPrefix: Required value"));
        }
        if !e.prioritize_verb.is_empty() && e.weight <= 0 {
            return Err(format!(
                "extenders[{i}].weight: Invalid value: {}: must have a positive weight applied to it",
                e.weight
            ));
        }
        if !e.bind_verb.is_empty() {
            binders += 1;
        }
        if let Some(t) = &e.http_timeout
            && parse_go_duration(t).is_none()
        {
            return Err(format!("extenders[{i}].httpTimeout: Invalid value: {t:?}"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (j, r) in e.managed_resources.iter().enumerate() {
            if !seen.insert(&r.name) {
                return Err(format!(
                    "extenders[{i}].managedResources[{j}].name: Invalid value: {:?}: duplicate extender managed resource name",
                    r.name
                ));
            }
        }
    }
    if binders > 1 {
        return Err(format!(
            "extenders: Invalid value: found {binders} extenders implementing bind: only one extender can implement bind"
        ));
    }
    Ok(())
}

/// Upstream `HostPriority`.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct HostPriority {
    /// Node name.
    pub host: String,
    /// Score (0..=10 by convention).
    pub score: i64,
}

/// What a filter call returned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FilterOutcome {
    /// Feasible node names, in the extender's order.
    pub nodes: Vec<String>,
    /// `failedNodes`: node → reason.
    pub failed: BTreeMap<String, String>,
    /// `failedAndUnresolvableNodes`: node → reason.
    pub failed_unresolvable: BTreeMap<String, String>,
}

/// A configured extender ready to be called. Its calls share keep-alive connections, as
/// kube-scheduler's `HTTPExtender` client does.
#[derive(Clone)]
pub struct Extender {
    /// Its configuration.
    pub config: ExtenderConfig,
    tls: Option<Arc<rustls::ClientConfig>>,
    timeout: Duration,
    pool: Arc<http::Pool>,
}

impl std::fmt::Debug for Extender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extender")
            .field("urlPrefix", &self.config.url_prefix)
            .finish()
    }
}

/// The `ExtenderArgs` JSON for a pod and candidate nodes.
pub fn extender_args(pod: &Pod, nodes: &[Node], node_cache_capable: bool) -> Value {
    if node_cache_capable {
        let names: Vec<&str> = nodes
            .iter()
            .filter_map(|n| n.metadata.name.as_deref())
            .collect();
        json!({"pod": pod, "nodenames": names})
    } else {
        json!({"pod": pod, "nodes": {"metadata": {}, "items": nodes}})
    }
}

/// Case-insensitive field lookup (Go's encoding/json matches keys case-insensitively).
fn get_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = v.as_object()?;
    obj.get(key)
        .or_else(|| {
            obj.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| v)
        })
        .filter(|v| !v.is_null())
}

fn string_map(v: Option<&Value>) -> BTreeMap<String, String> {
    v.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes an `ExtenderFilterResult` as upstream's `HTTPExtender.Filter` interprets it.
pub fn decode_filter_result(
    result: &Value,
    sent: &[Node],
    node_cache_capable: bool,
    url: &str,
) -> Result<FilterOutcome, String> {
    if let Some(e) = get_ci(result, "error").and_then(Value::as_str)
        && !e.is_empty()
    {
        return Err(e.to_string());
    }
    let known: std::collections::BTreeSet<&str> = sent
        .iter()
        .filter_map(|n| n.metadata.name.as_deref())
        .collect();
    let names: Vec<String> =
        if let (true, Some(names)) = (node_cache_capable, get_ci(result, "nodenames")) {
            names
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        } else if let Some(nodes) = get_ci(result, "nodes") {
            get_ci(nodes, "items")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|n| {
                            n.get("metadata")
                                .and_then(|m| m.get("name"))
                                .and_then(Value::as_str)
                                .map(String::from)
                        })
                        .collect()
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
    for n in &names {
        if !known.contains(n.as_str()) {
            return Err(format!(
                "extender {url:?} claims a filtered node {n:?} which is not found in the input node list"
            ));
        }
    }
    Ok(FilterOutcome {
        nodes: names,
        failed: string_map(get_ci(result, "failedNodes")),
        failed_unresolvable: string_map(get_ci(result, "failedAndUnresolvableNodes")),
    })
}

impl Extender {
    /// Builds an extender from its configuration (reads `tlsConfig.caFile`).
    pub fn new(config: ExtenderConfig) -> Result<Self, String> {
        let timeout = config
            .http_timeout
            .as_deref()
            .and_then(parse_go_duration)
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_HTTP_TIMEOUT);
        let mut tls = None;
        let https = config.enable_https || config.url_prefix.starts_with("https://");
        if https {
            let t = config.tls_config.clone().unwrap_or_default();
            let pem = if !t.ca_data.is_empty() {
                base64::engine::general_purpose::STANDARD
                    .decode(t.ca_data.trim())
                    .map_err(|e| format!("tlsConfig.caData: {e}"))?
            } else if !t.ca_file.is_empty() {
                std::fs::read(&t.ca_file)
                    .map_err(|e| format!("tlsConfig.caFile {}: {e}", t.ca_file))?
            } else {
                return Err("enableHTTPS needs tlsConfig.caData or tlsConfig.caFile".into());
            };
            tls = Some(http::tls_config(&pem).map_err(|e| e.to_string())?);
        }
        Ok(Extender {
            config,
            tls,
            timeout,
            pool: Arc::default(),
        })
    }

    /// Idle keep-alive connections to this extender.
    pub fn idle_connections(&self) -> usize {
        self.pool.idle_connections()
    }

    /// The HTTP timeout in effect.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Upstream `IsInterested`: no managed resources, or the pod requests/limits one of them.
    pub fn is_interested(&self, pod: &Pod) -> bool {
        if self.config.managed_resources.is_empty() {
            return true;
        }
        let names = quantity::pod_resource_names(pod);
        self.config
            .managed_resources
            .iter()
            .any(|r| names.contains(&r.name))
    }

    /// Has a filter verb.
    pub fn is_filter(&self) -> bool {
        !self.config.filter_verb.is_empty()
    }

    /// Has a prioritize verb.
    pub fn is_prioritizer(&self) -> bool {
        !self.config.prioritize_verb.is_empty()
    }

    /// Has a bind verb.
    pub fn is_binder(&self) -> bool {
        !self.config.bind_verb.is_empty()
    }

    fn url(&self, verb: &str) -> String {
        let mut prefix = self.config.url_prefix.trim_end_matches('/').to_string();
        if self.config.enable_https && prefix.starts_with("http://") {
            prefix = prefix.replacen("http://", "https://", 1);
        } else if !prefix.contains("://") {
            prefix = format!(
                "{}://{prefix}",
                if self.config.enable_https {
                    "https"
                } else {
                    "http"
                }
            );
        }
        format!("{prefix}/{verb}")
    }

    async fn send(&self, verb: &str, body: &Value) -> Result<Value, String> {
        let url = self.url(verb);
        let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
        let (code, resp) = self
            .pool
            .post_json(&url, bytes, self.tls.clone(), self.timeout)
            .await
            .map_err(|e: HttpError| format!("Post {url:?}: {e}"))?;
        if code != 200 {
            return Err(format!(
                "failed {verb} with extender at URL {url}, code {code}"
            ));
        }
        serde_json::from_slice(&resp).map_err(|e| format!("extender {url}: decoding response: {e}"))
    }

    /// Calls the filter verb.
    pub async fn filter(&self, pod: &Pod, nodes: &[Node]) -> Result<FilterOutcome, String> {
        let args = extender_args(pod, nodes, self.config.node_cache_capable);
        let result = self.send(&self.config.filter_verb, &args).await?;
        decode_filter_result(
            &result,
            nodes,
            self.config.node_cache_capable,
            &self.config.url_prefix,
        )
    }

    /// Calls the prioritize verb; returns host → weighted score (`score × weight`).
    pub async fn prioritize(
        &self,
        pod: &Pod,
        nodes: &[Node],
    ) -> Result<BTreeMap<String, i64>, String> {
        let args = extender_args(pod, nodes, self.config.node_cache_capable);
        let result = self.send(&self.config.prioritize_verb, &args).await?;
        let list: Vec<Value> =
            serde_json::from_value(result).map_err(|e| format!("HostPriorityList: {e}"))?;
        let mut out = BTreeMap::new();
        for hp in list {
            let host = get_ci(&hp, "host")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let score = get_ci(&hp, "score").and_then(Value::as_i64).unwrap_or(0);
            out.insert(host, score * self.config.weight.max(1));
        }
        Ok(out)
    }

    /// Calls the bind verb with `ExtenderBindingArgs`.
    pub async fn bind(&self, pod: &Pod, node: &str) -> Result<(), String> {
        let args = json!({
            "podName": pod.metadata.name,
            "podNamespace": pod.metadata.namespace,
            "podUID": pod.metadata.uid,
            "node": node,
        });
        let result = self.send(&self.config.bind_verb, &args).await?;
        match get_ci(&result, "error").and_then(Value::as_str) {
            Some(e) if !e.is_empty() => Err(e.to_string()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("node")
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("s"), None);
    }

    #[test]
    fn args_follow_node_cache_capable() {
        let pod: Pod =
            serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}}))
                .expect("pod");
        let nodes = vec![node("a"), node("b")];
        let a = extender_args(&pod, &nodes, true);
        assert_eq!(a["nodenames"], json!(["a", "b"]));
        assert!(a.get("nodes").is_none());
        assert_eq!(a["pod"]["metadata"]["name"], "p");
        let b = extender_args(&pod, &nodes, false);
        assert!(b.get("nodenames").is_none());
        assert_eq!(b["nodes"]["items"][1]["metadata"]["name"], "b");
    }

    #[test]
    fn filter_results() {
        let nodes = vec![node("a"), node("b"), node("c")];
        let r = json!({"nodenames": ["a"], "failedNodes": {"b": "no ip"}, "failedAndUnresolvableNodes": {"c": "gone"}});
        let out = decode_filter_result(&r, &nodes, true, "x").expect("ok");
        assert_eq!(out.nodes, vec!["a"]);
        assert_eq!(out.failed["b"], "no ip");
        assert_eq!(out.failed_unresolvable["c"], "gone");
        // not node-cache-capable: the NodeList is authoritative, keys case-insensitive
        let r = json!({"Nodes": {"Items": [{"metadata": {"name": "c"}}]}, "nodenames": ["a"]});
        assert_eq!(
            decode_filter_result(&r, &nodes, false, "x")
                .expect("ok")
                .nodes,
            vec!["c"]
        );
        // error string
        assert_eq!(
            decode_filter_result(&json!({"error": "boom"}), &nodes, true, "x"),
            Err("boom".into())
        );
        // unknown node
        assert!(decode_filter_result(&json!({"nodenames": ["z"]}), &nodes, true, "x").is_err());
        // nothing: no feasible node
        assert_eq!(
            decode_filter_result(&json!({}), &nodes, true, "x")
                .expect("ok")
                .nodes,
            Vec::<String>::new()
        );
    }

    #[test]
    fn interest_and_validation() {
        let cfg = ExtenderConfig {
            url_prefix: "http://127.0.0.1:1".into(),
            managed_resources: vec![ManagedResource {
                name: "tke.cloud.tencent.com/eni-ip".into(),
                ignored_by_scheduler: true,
            }],
            ..Default::default()
        };
        let e = Extender::new(cfg.clone()).expect("extender");
        let plain: Pod = serde_json::from_value(
            json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}),
        )
        .expect("pod");
        let eni: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"tke.cloud.tencent.com/eni-ip": "1"}}}]}})).expect("pod");
        assert!(!e.is_interested(&plain));
        assert!(e.is_interested(&eni));
        assert_eq!(e.url("filter"), "http://127.0.0.1:1/filter");
        assert!(
            validate(&[ExtenderConfig {
                prioritize_verb: "p".into(),
                ..cfg.clone()
            }])
            .is_err()
        );
        let binder = ExtenderConfig {
            bind_verb: "bind".into(),
            ..cfg.clone()
        };
        assert!(validate(&[binder.clone(), binder.clone()]).is_err());
        assert!(validate(&[binder, cfg]).is_ok());
        assert!(
            Extender::new(ExtenderConfig {
                url_prefix: "https://x".into(),
                ..Default::default()
            })
            .is_err()
        );
    }
}
