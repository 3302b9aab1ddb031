//! What a pod asks for (resource, annotations) and the CNI args galaxy-ipam writes back. Pure.

use addon_common::api::galaxy::{
    ANNOTATION_CNI_ARGS, ANNOTATION_ENI_IP_POOL, ANNOTATION_RELEASE_POLICY, RESOURCE_ENI_IP,
    ReleasePolicy,
};
use addon_common::k8s_openapi::api::core::v1::Pod;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    config::{FipPool, IpRange, Net},
    key::{AppKind, KeyObj, deployment_of_replicaset},
};

/// Whether a container of the pod requests `tke.cloud.tencent.com/eni-ip` (requests only, as
/// Galaxy's `WantENIIP`).
pub fn wants_eni_ip(pod: &Pod) -> bool {
    pod.spec.as_ref().is_some_and(|spec| {
        spec.containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .any(|c| {
                c.resources
                    .as_ref()
                    .and_then(|r| r.requests.as_ref())
                    .is_some_and(|r| r.contains_key(RESOURCE_ENI_IP))
            })
    })
}

fn annotation<'a>(pod: &'a Pod, name: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(name))
        .map(String::as_str)
}

/// The pod's pool (`tke.cloud.tencent.com/eni-ip-pool`), if any.
pub fn pool_of(pod: &Pod) -> Option<&str> {
    annotation(pod, ANNOTATION_ENI_IP_POOL).filter(|p| !p.is_empty())
}

/// The pod's release policy; a pool forces `never`.
pub fn policy_of(pod: &Pod) -> ReleasePolicy {
    if pool_of(pod).is_some() {
        return ReleasePolicy::Never;
    }
    ReleasePolicy::from_annotation(annotation(pod, ANNOTATION_RELEASE_POLICY))
}

/// The controller owner `(apiVersion, kind, name)` of the pod.
pub fn controller_of(pod: &Pod) -> Option<(String, String, String)> {
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| (o.api_version.clone(), o.kind.clone(), o.name.clone()))
}

/// The pod's allocation key.
pub fn key_of(pod: &Pod) -> KeyObj {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let (kind, app) = match controller_of(pod) {
        Some((_, kind, owner)) if kind == "ReplicaSet" => (
            AppKind::Deployment,
            deployment_of_replicaset(&owner).to_owned(),
        ),
        Some((_, kind, owner)) => (AppKind::from_owner_kind(&kind), owner),
        None => (AppKind::Bare, String::new()),
    };
    KeyObj::pod(kind, ns, &app, name, pool_of(pod))
}

/// Whether the pod has finished (Succeeded or Failed).
pub fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// The parsed `k8s.v1.cni.galaxy.io/args` annotation (`{}` when absent), or what is wrong
/// with it.
pub fn cni_args(pod: &Pod) -> Result<Map<String, Value>, String> {
    match annotation(pod, ANNOTATION_CNI_ARGS) {
        None => Ok(Map::new()),
        Some(text) if text.trim().is_empty() => Ok(Map::new()),
        Some(text) => match serde_json::from_str(text) {
            Ok(Value::Object(m)) => Ok(m),
            _ => Err(format!(
                "annotation {ANNOTATION_CNI_ARGS} is not a JSON object"
            )),
        },
    }
}

/// The requested ranges: one inner list per wanted IP (`request_ip_range`); `None` for one IP
/// from anywhere; or what is wrong with them.
pub fn requested_ranges(args: &Map<String, Value>) -> Result<Option<Vec<Vec<IpRange>>>, String> {
    let Some(v) = args.get("request_ip_range").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let outer = v
        .as_array()
        .ok_or("request_ip_range must be a list of lists")?;
    let mut out = Vec::new();
    for inner in outer {
        let inner = inner
            .as_array()
            .ok_or("request_ip_range must be a list of lists")?;
        let mut ranges = Vec::new();
        for r in inner {
            let s = r
                .as_str()
                .ok_or("request_ip_range entries must be strings")?;
            ranges.push(IpRange::parse(s)?);
        }
        if ranges.is_empty() {
            return Err("request_ip_range has an empty list".into());
        }
        out.push(ranges);
    }
    if out.is_empty() {
        return Ok(None);
    }
    Ok(Some(out))
}

/// The IPs recorded in the pod's `common.ipinfos` (recovery of annotation-only allocations).
pub fn annotated_ips(pod: &Pod) -> Vec<u32> {
    let Ok(args) = cni_args(pod) else {
        return Vec::new();
    };
    args.get("common")
        .and_then(|c| c.get("ipinfos"))
        .and_then(Value::as_array)
        .map(|infos| {
            infos
                .iter()
                .filter_map(|i| i.get("ip").and_then(Value::as_str))
                .filter_map(|ip| ip.split('/').next())
                .filter_map(crate::allocator::parse_ip)
                .collect()
        })
        .unwrap_or_default()
}

/// One `common.ipinfos` entry, in Galaxy's field order.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct IpInfo {
    /// The IP with the pool subnet's prefix length, e.g. `192.168.64.202/24`.
    pub ip: String,
    /// VLAN id.
    pub vlan: u16,
    /// Gateway.
    pub gateway: String,
    /// The deprecated routable subnet, when the pool has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routable_subnet: Option<Net>,
}

impl IpInfo {
    /// The ipinfo of `ip` in `pool`.
    pub fn new(ip: u32, pool: &FipPool) -> Self {
        Self {
            ip: format!("{}/{}", std::net::Ipv4Addr::from(ip), pool.subnet.len),
            vlan: pool.vlan,
            gateway: std::net::Ipv4Addr::from(pool.gateway).to_string(),
            routable_subnet: pool.routable_subnet,
        }
    }
}

/// The annotation value written at bind: the input args with `common.ipinfos` set, in Go's
/// field order (`request_ip_range`, `common`, then anything else the input had).
pub fn cni_args_with_ipinfos(input: &Map<String, Value>, infos: &[IpInfo]) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(r) = input.get("request_ip_range").filter(|v| !v.is_null()) {
        parts.push(format!("\"request_ip_range\":{r}"));
    }
    let mut common = format!(
        "\"common\":{{\"ipinfos\":{}",
        serde_json::to_string(infos).unwrap_or_else(|_| "[]".into())
    );
    if let Some(extra) = input.get("common").and_then(Value::as_object) {
        for (k, v) in extra.iter().filter(|(k, _)| *k != "ipinfos") {
            common.push_str(&format!(",{}:{v}", json!(k)));
        }
    }
    common.push('}');
    parts.push(common);
    for (k, v) in input {
        if k != "request_ip_range" && k != "common" {
            parts.push(format!("{}:{v}", json!(k)));
        }
    }
    format!("{{{}}}", parts.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PoolConfig;

    fn pod(v: Value) -> Pod {
        serde_json::from_value(v).expect("pod")
    }

    /// The seed's Deployment pod (template annotations and resources verbatim).
    fn seed_pod() -> Pod {
        pod(json!({
            "metadata": {"name": "nnn-7df5984746-58hjm", "namespace": "default",
                "annotations": {"k8s.v1.cni.cncf.io/networks": "galaxy-k8s-vlan",
                                "k8s.v1.cni.galaxy.io/release-policy": "immutable"},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "nnn-7df5984746", "uid": "rs", "controller": true}]},
            "spec": {"containers": [{"name": "nnn", "image": "nginx",
                "resources": {"limits": {"cpu": "500m", "memory": "1Gi", "tke.cloud.tencent.com/eni-ip": "1"},
                              "requests": {"cpu": "250m", "memory": "256Mi", "tke.cloud.tencent.com/eni-ip": "1"}}}]}
        }))
    }

    #[test]
    fn seed_pod_key_and_policy() {
        let p = seed_pod();
        assert!(wants_eni_ip(&p));
        assert_eq!(policy_of(&p), ReleasePolicy::Immutable);
        assert_eq!(key_of(&p).key(), "dp_default_nnn_nnn-7df5984746-58hjm");
        let plain = pod(
            json!({"metadata": {"name": "x", "namespace": "ns"}, "spec": {"containers": [{"name": "c",
            "resources": {"limits": {"tke.cloud.tencent.com/eni-ip": "1"}}}]}}),
        );
        assert!(
            !wants_eni_ip(&plain),
            "limits only: not wanted (WantENIIP reads requests)"
        );
        assert_eq!(key_of(&plain).key(), "NULL_ns_NULL_x");
    }

    #[test]
    fn pool_forces_never_and_prefixes_the_key() {
        let mut p = seed_pod();
        p.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_ENI_IP_POOL.into(), "p1".into());
        assert_eq!(policy_of(&p), ReleasePolicy::Never);
        assert_eq!(
            key_of(&p).key(),
            "pool__p1_dp_default_nnn_nnn-7df5984746-58hjm"
        );
    }

    #[test]
    fn seed_annotation_is_reproduced_verbatim() {
        let cfg = PoolConfig::parse(r#"[{"routableSubnet":"172.21.64.0/20","ips":["192.168.64.200~192.168.64.251"],"subnet":"192.168.64.0/24","gateway":"192.168.64.1"}]"#).expect("cfg");
        let ip = crate::allocator::parse_ip("192.168.64.202").expect("ip");
        let text = cni_args_with_ipinfos(&Map::new(), &[IpInfo::new(ip, &cfg.pools[0])]);
        assert_eq!(
            text,
            r#"{"common":{"ipinfos":[{"ip":"192.168.64.202/24","vlan":0,"gateway":"192.168.64.1","routable_subnet":"172.21.64.0/20"}]}}"#
        );
    }

    #[test]
    fn multi_ip_request_and_output_order() {
        let cfg = PoolConfig::parse(r#"[{"nodeSubnets":["10.1.0.0/16"],"ips":["10.0.0.2~10.0.0.250"],"subnet":"10.0.0.0/24","gateway":"10.0.0.1","vlan":2}]"#).expect("cfg");
        let mut p = seed_pod();
        p.metadata.annotations.get_or_insert_default().insert(
            ANNOTATION_CNI_ARGS.into(),
            r#"{"request_ip_range":[["10.0.0.200~10.0.0.238"],["10.0.0.2~10.0.0.30"]]}"#.into(),
        );
        let args = cni_args(&p).expect("args");
        let ranges = requested_ranges(&args).expect("ranges").expect("some");
        assert_eq!(ranges.len(), 2);
        assert_eq!(ranges[0][0].to_string(), "10.0.0.200~10.0.0.238");
        let infos: Vec<IpInfo> = [200u32, 2]
            .iter()
            .map(|n| IpInfo::new(0x0a00_0000 + n, &cfg.pools[0]))
            .collect();
        let text = cni_args_with_ipinfos(&args, &infos);
        assert_eq!(
            text,
            r#"{"request_ip_range":[["10.0.0.200~10.0.0.238"],["10.0.0.2~10.0.0.30"]],"common":{"ipinfos":[{"ip":"10.0.0.200/24","vlan":2,"gateway":"10.0.0.1"},{"ip":"10.0.0.2/24","vlan":2,"gateway":"10.0.0.1"}]}}"#
        );
        let mut q = p.clone();
        q.metadata
            .annotations
            .get_or_insert_default()
            .insert(ANNOTATION_CNI_ARGS.into(), text);
        assert_eq!(annotated_ips(&q), vec![0x0a00_00c8, 0x0a00_0002]);
        let bad: Map<String, Value> =
            serde_json::from_str(r#"{"request_ip_range":[["x"]]}"#).expect("m");
        assert!(requested_ranges(&bad).is_err());
    }
}
