//! The kube-scheduler extender wire format (`k8s.io/kube-scheduler/extender/v1`), decoded the
//! way Go decodes it: top-level keys match case-insensitively (`PodName`/`podName`,
//! `Nodes`/`nodes`, `NodeNames`/`nodenames`). Node objects are kept as raw JSON so a filter
//! answer echoes them byte for byte. Pure.

use std::collections::BTreeMap;

use addon_common::k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{Error, Result, config::get_ci};

/// The nodes of an ExtenderArgs, in the form they were sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Nodes {
    /// `nodes`: a NodeList (its envelope without items, and the items).
    Objects {
        envelope: Map<String, Value>,
        items: Vec<Value>,
    },
    /// `nodenames` (nodeCacheCapable extenders).
    Names(Vec<String>),
}

impl Nodes {
    /// The node names, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            Nodes::Objects { items, .. } => items.iter().map(node_name).collect(),
            Nodes::Names(names) => names.clone(),
        }
    }

    /// The InternalIP of a node object of the `nodes` form.
    pub fn internal_ip(&self, name: &str) -> Option<Option<String>> {
        match self {
            Nodes::Objects { items, .. } => items
                .iter()
                .find(|n| node_name(n) == name)
                .map(node_internal_ip),
            Nodes::Names(_) => None,
        }
    }

    /// Keeps only the nodes in `keep` (by name), in the received form.
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) -> Nodes {
        match self {
            Nodes::Objects { envelope, items } => Nodes::Objects {
                envelope: envelope.clone(),
                items: items
                    .iter()
                    .filter(|n| keep(&node_name(n)))
                    .cloned()
                    .collect(),
            },
            Nodes::Names(names) => {
                Nodes::Names(names.iter().filter(|n| keep(n)).cloned().collect())
            }
        }
    }
}

fn node_name(node: &Value) -> String {
    node.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The InternalIP of a Node JSON object.
pub fn node_internal_ip(node: &Value) -> Option<String> {
    node.pointer("/status/addresses")?
        .as_array()?
        .iter()
        .find(|a| a.get("type").and_then(Value::as_str) == Some("InternalIP"))
        .and_then(|a| a.get("address").and_then(Value::as_str))
        .map(str::to_owned)
}

/// ExtenderArgs: the pod and the candidate nodes.
#[derive(Clone, Debug)]
pub struct ExtenderArgs {
    /// The pod being scheduled.
    pub pod: Pod,
    /// The candidates.
    pub nodes: Nodes,
}

fn malformed(request: &'static str, reason: String) -> Error {
    Error::MalformedRequest { request, reason }
}

fn object(request: &'static str, value: &Value, what: &str) -> Result<Map<String, Value>> {
    value
        .as_object()
        .cloned()
        .ok_or_else(|| malformed(request, format!("{what} must be a JSON object")))
}

fn decode_json(request: &'static str, body: &[u8]) -> Result<Value> {
    serde_json::from_slice(body).map_err(|source| Error::RequestNotJson { request, source })
}

impl ExtenderArgs {
    /// Decodes ExtenderArgs (`pod`, and `nodes` or `nodenames`; `nodes` wins when both are set
    /// and non-null, as in kube-scheduler which only sends one).
    pub fn decode(body: &[u8]) -> Result<Self> {
        const REQUEST: &str = "ExtenderArgs";
        let value = decode_json(REQUEST, body)?;
        let obj = object(REQUEST, &value, REQUEST)?;
        let pod = get_ci(&obj, "pod")
            .filter(|v| !v.is_null())
            .ok_or_else(|| malformed(REQUEST, "ExtenderArgs has no pod".into()))?;
        let pod: Pod = serde_json::from_value(pod.clone())
            .map_err(|e| malformed(REQUEST, format!("ExtenderArgs.pod: {e}")))?;
        let nodes = match get_ci(&obj, "nodes").filter(|v| !v.is_null()) {
            Some(list) => {
                let mut envelope = object(REQUEST, list, "nodes")?;
                let items = match envelope.remove("items") {
                    Some(Value::Array(items)) => items,
                    None | Some(Value::Null) => Vec::new(),
                    Some(_) => return Err(malformed(REQUEST, "nodes.items must be a list".into())),
                };
                Nodes::Objects { envelope, items }
            }
            None => match get_ci(&obj, "nodenames").filter(|v| !v.is_null()) {
                Some(names) => {
                    Nodes::Names(serde_json::from_value(names.clone()).map_err(|e| {
                        malformed(REQUEST, format!("nodenames must be a list of strings: {e}"))
                    })?)
                }
                None => Nodes::Names(Vec::new()),
            },
        };
        Ok(Self { pod, nodes })
    }
}

/// ExtenderFilterResult, in the form the nodes were received.
pub fn filter_result(passed: &Nodes, failed: &BTreeMap<String, String>, error: &str) -> Value {
    let mut out = Map::new();
    match passed {
        Nodes::Objects { envelope, items } => {
            let mut list = envelope.clone();
            list.insert("items".into(), Value::Array(items.clone()));
            out.insert("nodes".into(), Value::Object(list));
        }
        Nodes::Names(names) => {
            out.insert("nodenames".into(), json!(names));
        }
    }
    out.insert("failedNodes".into(), json!(failed));
    out.insert("error".into(), json!(error));
    Value::Object(out)
}

/// An error-only ExtenderFilterResult.
pub fn filter_error(error: &str) -> Value {
    json!({"nodes": null, "failedNodes": {}, "error": error})
}

/// ExtenderBindingArgs (no json tags upstream: `PodName`, `PodNamespace`, `PodUID`, `Node`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct BindingArgs {
    /// Pod name.
    pub pod_name: String,
    /// Pod namespace.
    pub pod_namespace: String,
    /// Pod UID.
    pub pod_uid: String,
    /// Target node.
    pub node: String,
}

impl BindingArgs {
    /// Decodes the args, keys case-insensitive.
    pub fn decode(body: &[u8]) -> Result<Self> {
        const REQUEST: &str = "ExtenderBindingArgs";
        let value = decode_json(REQUEST, body)?;
        let obj = object(REQUEST, &value, REQUEST)?;
        let field = |k: &str| -> Result<String> {
            match get_ci(&obj, k) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(malformed(
                    REQUEST,
                    format!("{k} must be a string, got {other}"),
                )),
            }
        };
        let args = Self {
            pod_name: field("PodName")?,
            pod_namespace: field("PodNamespace")?,
            pod_uid: field("PodUID")?,
            node: field("Node")?,
        };
        if args.pod_name.is_empty() || args.node.is_empty() {
            return Err(malformed(
                REQUEST,
                "ExtenderBindingArgs needs PodName and Node".into(),
            ));
        }
        Ok(args)
    }
}

/// ExtenderBindingResult as Galaxy writes it: `{"Error": "..."}`.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct BindingResult {
    /// Empty on success.
    #[serde(rename = "Error")]
    pub error: String,
}

/// ExtenderPreemptionArgs, reduced to what galaxy needs: the pod and the candidate nodes with
/// their victims (as meta victims: pod UIDs).
#[derive(Clone, Debug)]
pub struct PreemptionArgs {
    /// The preemptor.
    pub pod: Pod,
    /// node → `{"pods":[{"uid"}], "numPDBViolations"}`.
    pub meta_victims: Map<String, Value>,
}

impl PreemptionArgs {
    /// Decodes the args: `nodeNameToMetaVictims` if present, else `nodeNameToVictims`
    /// converted to meta victims.
    pub fn decode(body: &[u8]) -> Result<Self> {
        const REQUEST: &str = "ExtenderPreemptionArgs";
        let value = decode_json(REQUEST, body)?;
        let obj = object(REQUEST, &value, REQUEST)?;
        let pod = get_ci(&obj, "pod")
            .filter(|v| !v.is_null())
            .ok_or_else(|| malformed(REQUEST, "ExtenderPreemptionArgs has no pod".into()))?;
        let pod: Pod = serde_json::from_value(pod.clone())
            .map_err(|e| malformed(REQUEST, format!("ExtenderPreemptionArgs.pod: {e}")))?;
        let meta_victims = match get_ci(&obj, "nodeNameToMetaVictims").filter(|v| !v.is_null()) {
            Some(m) => object(REQUEST, m, "nodeNameToMetaVictims")?,
            None => {
                let victims = get_ci(&obj, "nodeNameToVictims")
                    .filter(|v| !v.is_null())
                    .map(|v| object(REQUEST, v, "nodeNameToVictims"))
                    .transpose()?
                    .unwrap_or_default();
                victims
                    .into_iter()
                    .map(|(node, v)| {
                        let pods: Vec<Value> = v
                            .get("pods")
                            .and_then(Value::as_array)
                            .map(|ps| {
                                ps.iter()
                                    .map(|p| json!({"uid": p.pointer("/metadata/uid").cloned().unwrap_or(json!(""))}))
                                    .collect()
                            })
                            .unwrap_or_default();
                        let pdb = v.get("numPDBViolations").cloned().unwrap_or(json!(0));
                        (node, json!({"pods": pods, "numPDBViolations": pdb}))
                    })
                    .collect()
            }
        };
        Ok(Self { pod, meta_victims })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ip: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"a": "b"}},
               "status": {"addresses": [{"type": "Hostname", "address": name}, {"type": "InternalIP", "address": ip}]}})
    }

    const POD: &str =
        r#"{"metadata":{"name":"p","namespace":"default"},"spec":{"containers":[{"name":"c"}]}}"#;

    #[test]
    fn filter_args_in_both_forms_and_any_case() {
        let body = format!(
            r#"{{"Pod":{POD},"Nodes":{{"kind":"NodeList","apiVersion":"v1","metadata":{{}},"items":[{},{}]}}}}"#,
            node("n1", "10.1.0.5"),
            node("n2", "10.2.0.5")
        );
        let args = ExtenderArgs::decode(body.as_bytes()).expect("nodes form");
        assert_eq!(args.nodes.names(), ["n1", "n2"]);
        assert_eq!(args.nodes.internal_ip("n2"), Some(Some("10.2.0.5".into())));
        let body = format!(r#"{{"pod":{POD},"nodes":null,"NodeNames":["a","b"]}}"#);
        let args = ExtenderArgs::decode(body.as_bytes()).expect("nodenames form");
        assert_eq!(args.nodes, Nodes::Names(vec!["a".into(), "b".into()]));
        assert!(ExtenderArgs::decode(b"{}").is_err());
        assert!(ExtenderArgs::decode(b"[").is_err());
    }

    /// Golden answers: the form received is the form answered; node objects are echoed as
    /// received.
    #[test]
    fn filter_result_golden() {
        let n1 = node("n1", "10.1.0.5");
        let nodes = Nodes::Objects {
            envelope: serde_json::from_value(
                json!({"kind": "NodeList", "apiVersion": "v1", "metadata": {}}),
            )
            .expect("map"),
            items: vec![n1.clone(), node("n2", "10.2.0.5")],
        };
        let failed = BTreeMap::from([("n2".to_string(), "FloatingIPPlugin:NoFIPLeft".to_string())]);
        let out = filter_result(&nodes.retain(&|n| n == "n1"), &failed, "");
        assert_eq!(
            out,
            json!({"nodes": {"kind": "NodeList", "apiVersion": "v1", "metadata": {}, "items": [n1]},
                   "failedNodes": {"n2": "FloatingIPPlugin:NoFIPLeft"}, "error": ""})
        );
        let names = Nodes::Names(vec!["n1".into(), "n2".into()]);
        let out = filter_result(&names.retain(&|n| n == "n1"), &failed, "");
        assert_eq!(
            serde_json::to_string(&out).expect("json"),
            r#"{"error":"","failedNodes":{"n2":"FloatingIPPlugin:NoFIPLeft"},"nodenames":["n1"]}"#
        );
    }

    #[test]
    fn binding_args_case_insensitive() {
        for body in [
            r#"{"PodName":"p","PodNamespace":"ns","PodUID":"u","Node":"n"}"#,
            r#"{"podName":"p","podNamespace":"ns","podUID":"u","node":"n"}"#,
            r#"{"podname":"p","PODNAMESPACE":"ns","poduid":"u","NODE":"n"}"#,
        ] {
            let a = BindingArgs::decode(body.as_bytes()).expect(body);
            assert_eq!(
                a,
                BindingArgs {
                    pod_name: "p".into(),
                    pod_namespace: "ns".into(),
                    pod_uid: "u".into(),
                    node: "n".into()
                }
            );
        }
        assert!(BindingArgs::decode(br#"{"PodName":"p"}"#).is_err());
        assert_eq!(
            serde_json::to_string(&BindingResult {
                error: String::new()
            })
            .expect("json"),
            r#"{"Error":""}"#
        );
    }

    #[test]
    fn preemption_args_victims_become_meta_victims() {
        let body = format!(
            r#"{{"Pod":{POD},"NodeNameToVictims":{{"n1":{{"pods":[{{"metadata":{{"name":"v","uid":"u1"}}}}],"numPDBViolations":1}}}}}}"#
        );
        let a = PreemptionArgs::decode(body.as_bytes()).expect("victims");
        assert_eq!(
            Value::Object(a.meta_victims),
            json!({"n1": {"pods": [{"uid": "u1"}], "numPDBViolations": 1}})
        );
        let body = format!(
            r#"{{"pod":{POD},"nodeNameToMetaVictims":{{"n2":{{"pods":[{{"uid":"u2"}}],"numPDBViolations":0}}}}}}"#
        );
        let a = PreemptionArgs::decode(body.as_bytes()).expect("meta");
        assert!(a.meta_victims.contains_key("n2"));
    }
}
