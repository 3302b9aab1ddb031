//! Simulated nodes: their shape ([`NodeSpec`]), addresses and pod CIDRs, the Node object a
//! kubelet registers, its Lease in `kube-node-lease`, and the node-lifecycle controller's
//! reaction to a node that stops reporting (conditions Unknown, unreachable taints).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, Taint};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::cluster::util;

/// Taint the node-lifecycle controller puts on unreachable nodes.
pub const UNREACHABLE_TAINT: &str = "node.kubernetes.io/unreachable";

/// Shape of a simulated node.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Capacity (= allocatable): `cpu`, `memory`, `pods`, extended resources.
    pub capacity: BTreeMap<String, String>,
    /// Extra labels (the kubelet adds `kubernetes.io/hostname`, `kubernetes.io/os`, `kubernetes.io/arch`).
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// Taints.
    pub taints: Vec<Taint>,
    /// InternalIP (default: taken from the cluster's node address range).
    pub address: Option<Ipv4Addr>,
    /// Pod CIDR (`10.244.1.0/24`; a `127.x.y.0/24` range gives pod IPs loopback servers can
    /// listen on). Default: taken from the cluster's pod range.
    pub pod_cidr: Option<String>,
    /// Port reported as the kubelet endpoint (`status.daemonEndpoints`), for a future
    /// pods/log and pods/exec proxy.
    pub kubelet_port: u16,
}

impl NodeSpec {
    /// A node with the default shape: 8 CPUs, 32Gi memory, 110 pods.
    pub fn new(name: impl Into<String>) -> Self {
        let capacity = [
            ("cpu", "8"),
            ("memory", "32Gi"),
            ("pods", "110"),
            ("ephemeral-storage", "100Gi"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        NodeSpec {
            name: name.into(),
            capacity,
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            taints: Vec::new(),
            address: None,
            pod_cidr: None,
            kubelet_port: 10250,
        }
    }

    /// Builder: sets a capacity entry.
    pub fn with_capacity(mut self, resource: &str, amount: &str) -> Self {
        self.capacity.insert(resource.into(), amount.into());
        self
    }

    /// Builder: adds a label.
    pub fn with_label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }

    /// Builder: adds a taint.
    pub fn with_taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        self.taints.push(Taint {
            key: key.into(),
            value: (!value.is_empty()).then(|| value.into()),
            effect: effect.into(),
            time_added: None,
        });
        self
    }
}

/// A node's capacity and allocatable as its kubelet reports them (quantities as strings).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeResources {
    /// `status.capacity`.
    pub capacity: BTreeMap<String, String>,
    /// `status.allocatable`.
    pub allocatable: BTreeMap<String, String>,
}

impl NodeResources {
    /// The resources a node of shape `spec` starts with (allocatable = capacity).
    pub fn of(spec: &NodeSpec) -> Self {
        NodeResources {
            capacity: spec.capacity.clone(),
            allocatable: spec.capacity.clone(),
        }
    }

    /// Takes the extended resources from what the Node object's status says now (written
    /// through `nodes/status` by a device plugin manager or an operator); the kubelet's own
    /// resources (cpu, memory, pods, ...) stay as they are.
    pub fn adopt_extended(&mut self, status: Option<&k8s_openapi::api::core::v1::NodeStatus>) {
        let observed = |m: Option<&BTreeMap<String, Quantity>>| -> BTreeMap<String, String> {
            m.into_iter()
                .flatten()
                .filter(|(k, _)| is_extended(k))
                .map(|(k, v)| (k.clone(), v.0.clone()))
                .collect()
        };
        let cap = observed(status.and_then(|s| s.capacity.as_ref()));
        let alloc = observed(status.and_then(|s| s.allocatable.as_ref()));
        for (mine, seen) in [(&mut self.capacity, cap), (&mut self.allocatable, alloc)] {
            mine.retain(|k, _| !is_extended(k));
            mine.extend(seen);
        }
    }

    /// The merge patch of `nodes/status` that makes `status` report the kubelet's own
    /// resources as in `self` (None when it already does). Extended resources are left alone.
    pub fn native_patch(
        &self,
        status: Option<&k8s_openapi::api::core::v1::NodeStatus>,
    ) -> Option<Value> {
        let diff = |mine: &BTreeMap<String, String>, seen: Option<&BTreeMap<String, Quantity>>| {
            let mut patch = serde_json::Map::new();
            for (k, v) in mine.iter().filter(|(k, _)| !is_extended(k)) {
                if seen.and_then(|s| s.get(k)).map(|q| q.0.as_str()) != Some(v.as_str()) {
                    patch.insert(k.clone(), json!(v));
                }
            }
            for k in seen.into_iter().flatten().map(|(k, _)| k) {
                if !is_extended(k) && !mine.contains_key(k) {
                    patch.insert(k.clone(), Value::Null);
                }
            }
            patch
        };
        let cap = diff(&self.capacity, status.and_then(|s| s.capacity.as_ref()));
        let alloc = diff(
            &self.allocatable,
            status.and_then(|s| s.allocatable.as_ref()),
        );
        (!cap.is_empty() || !alloc.is_empty())
            .then(|| json!({"status": {"capacity": cap, "allocatable": alloc}}))
    }
}

/// An extended resource (`example.com/foo`: a domain-prefixed name outside `kubernetes.io`),
/// owned by whoever advertises it (a device plugin), not by the kubelet.
pub fn is_extended(name: &str) -> bool {
    name.contains('/') && !name.contains("kubernetes.io/")
}

/// An IPv4 CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Network address.
    pub base: u32,
    /// Prefix length.
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (ip, len) = s
            .split_once('/')
            .ok_or_else(|| format!("invalid CIDR {s:?}: missing /prefix"))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| format!("invalid CIDR {s:?}: bad address"))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| format!("invalid CIDR {s:?}: bad prefix"))?;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ok(Cidr {
            base: u32::from(ip) & mask,
            prefix,
        })
    }

    /// Number of addresses.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The `i`-th address (None when outside).
    pub fn nth(&self, i: u64) -> Option<Ipv4Addr> {
        (i < self.size())
            .then(|| Ipv4Addr::from(self.base.wrapping_add(u32::try_from(i).unwrap_or(0))))
    }

    /// The `i`-th /`sub` subnet.
    pub fn subnet(&self, sub: u8, i: u64) -> Option<Cidr> {
        if sub < self.prefix || sub > 32 {
            return None;
        }
        let count = 1u64 << (sub - self.prefix);
        (i < count).then(|| Cidr {
            base: self
                .base
                .wrapping_add(u32::try_from(i << (32 - u32::from(sub))).unwrap_or(0)),
            prefix: sub,
        })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.prefix)
    }
}

/// Pod IPs of one node: the lowest free address from the third one on (`.0` is the network,
/// `.1` the node's bridge).
#[derive(Clone, Debug)]
pub struct IpPool {
    cidr: Cidr,
    used: BTreeMap<u32, String>,
}

impl IpPool {
    /// A pool over `cidr`.
    pub fn new(cidr: Cidr) -> Self {
        IpPool {
            cidr,
            used: BTreeMap::new(),
        }
    }

    /// Allocates (or returns the existing) address of `owner`.
    pub fn allocate(&mut self, owner: &str) -> Option<Ipv4Addr> {
        if let Some((ip, _)) = self.used.iter().find(|(_, o)| *o == owner) {
            return Some(Ipv4Addr::from(*ip));
        }
        for i in 2..self.cidr.size().saturating_sub(1) {
            let ip = self.cidr.nth(i)?;
            let k = u32::from(ip);
            if let std::collections::btree_map::Entry::Vacant(e) = self.used.entry(k) {
                e.insert(owner.to_string());
                return Some(ip);
            }
        }
        None
    }

    /// Marks an address as used by `owner` (recovery) if it belongs to this pool.
    pub fn reserve(&mut self, ip: &str, owner: &str) -> bool {
        let Ok(ip) = ip.parse::<Ipv4Addr>() else {
            return false;
        };
        let k = u32::from(ip);
        let inside = k.wrapping_sub(self.cidr.base)
            < u32::try_from(self.cidr.size()).unwrap_or(u32::MAX)
            || self.cidr.prefix == 0;
        if inside && !self.used.contains_key(&k) {
            self.used.insert(k, owner.to_string());
            return true;
        }
        false
    }

    /// Frees the address of `owner`.
    pub fn release(&mut self, owner: &str) {
        self.used.retain(|_, o| o != owner);
    }
}

/// The Node object a kubelet registers.
pub fn node_object(spec: &NodeSpec, address: Ipv4Addr, pod_cidr: &Cidr) -> Node {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", spec.name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", "amd64"),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", "amd64"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(spec.labels.clone());
    let cap: BTreeMap<String, Quantity> = spec
        .capacity
        .iter()
        .map(|(k, v)| (k.clone(), Quantity(v.clone())))
        .collect();
    let mut annotations = spec.annotations.clone();
    annotations.insert("node.alpha.kubernetes.io/ttl".into(), "0".into());
    let v = json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": spec.name, "labels": labels, "annotations": annotations},
        "spec": {"podCIDR": pod_cidr.to_string(), "podCIDRs": [pod_cidr.to_string()], "taints": if spec.taints.is_empty() { Value::Null } else { json!(spec.taints) }},
        "status": node_status(spec, address, &cap, true),
    });
    serde_json::from_value(v).unwrap_or_default()
}

fn node_status(
    spec: &NodeSpec,
    address: Ipv4Addr,
    cap: &BTreeMap<String, Quantity>,
    ready: bool,
) -> Value {
    let now = util::now();
    json!({
        "capacity": cap,
        "allocatable": cap,
        "phase": "Running",
        "conditions": node_conditions(ready, &now),
        "addresses": [{"type": "InternalIP", "address": address.to_string()}, {"type": "Hostname", "address": spec.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": spec.kubelet_port}},
        "nodeInfo": {
            "machineID": util::safe_hash(spec.name.as_bytes()), "systemUUID": util::safe_hash(format!("uuid-{}", spec.name).as_bytes()),
            "bootID": util::safe_hash(format!("boot-{}", spec.name).as_bytes()), "kernelVersion": "6.1.0-sim",
            "osImage": "Simulated Linux", "containerRuntimeVersion": "containerd://1.7.0-sim", "kubeletVersion": "v1.33.0-sim",
            "kubeProxyVersion": "v1.33.0-sim", "operatingSystem": "linux", "architecture": "amd64"
        }
    })
}

/// Node conditions: Ready (True when `ready`, else every condition Unknown as the
/// node-lifecycle controller writes them when the kubelet stops posting status).
pub fn node_conditions(
    ready: bool,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) -> Value {
    let pressure = |ty: &str, reason_ok: &str, msg_ok: &str| {
        if ready {
            json!({"type": ty, "status": "False", "reason": reason_ok, "message": msg_ok, "lastHeartbeatTime": now, "lastTransitionTime": now})
        } else {
            json!({"type": ty, "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": now, "lastTransitionTime": now})
        }
    };
    json!([
        pressure(
            "MemoryPressure",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available"
        ),
        pressure(
            "DiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure"
        ),
        pressure(
            "PIDPressure",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available"
        ),
        if ready {
            json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status", "lastHeartbeatTime": now, "lastTransitionTime": now})
        } else {
            json!({"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown", "message": "Kubelet stopped posting node status.", "lastHeartbeatTime": now, "lastTransitionTime": now})
        },
    ])
}

/// Creates (or refreshes) the Node object and its status.
pub async fn register(client: &Client, node: &Node) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    match api.create(&PostParams::default(), node).await {
        Ok(_) => {}
        Err(e) if util::is_code(&e, 409) => {
            let patch = json!({"metadata": {"labels": node.metadata.labels, "annotations": node.metadata.annotations}, "spec": node.spec});
            api.patch(
                &node.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await?;
        }
        Err(e) => return Err(e),
    }
    api.patch_status(
        &node.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": node.status})),
    )
    .await?;
    Ok(())
}

/// Creates or renews the node's Lease in `kube-node-lease`.
pub async fn renew_lease(
    client: &Client,
    node: &str,
    node_uid: Option<&str>,
    duration_secs: i32,
) -> Result<(), kube::Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let now = MicroTime(Timestamp::now());
    let patch = json!({"spec": {"renewTime": now}});
    match api
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_code(&e, 404) => {
            let owner = node_uid
                .map(|uid| json!([{"apiVersion": "v1", "kind": "Node", "name": node, "uid": uid}]));
            let lease: Lease = serde_json::from_value(json!({
                "metadata": {"name": node, "namespace": "kube-node-lease", "ownerReferences": owner},
                "spec": {"holderIdentity": node, "leaseDurationSeconds": duration_secs, "renewTime": now}
            }))
            .unwrap_or_default();
            api.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// What the node-lifecycle controller does when a node goes unreachable (`ready == false`) or
/// comes back: node conditions, `node.kubernetes.io/unreachable` NoSchedule/NoExecute taints,
/// and the Ready condition of the node's pods set to False.
pub async fn set_reachable(client: &Client, name: &str, ready: bool) -> Result<(), kube::Error> {
    let api: Api<Node> = Api::all(client.clone());
    let node = api.get(name).await?;
    let now = util::now();
    let mut taints: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    taints.retain(|t| t.key != UNREACHABLE_TAINT);
    if !ready {
        for effect in ["NoSchedule", "NoExecute"] {
            taints.push(Taint {
                key: UNREACHABLE_TAINT.into(),
                value: None,
                effect: effect.into(),
                time_added: Some(now.clone()),
            });
        }
    }
    api.patch(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"spec": {"taints": taints}})),
    )
    .await?;
    api.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(&json!({"status": {"conditions": node_conditions(ready, &now)}})),
    )
    .await?;
    if !ready {
        let pods: Api<Pod> = Api::all(client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={name}"));
        for pod in pods.list(&lp).await?.items {
            let mut conds = pod
                .status
                .as_ref()
                .and_then(|s| s.conditions.clone())
                .unwrap_or_default();
            let mut changed = false;
            for c in conds
                .iter_mut()
                .filter(|c| c.type_ == "Ready" && c.status != "False")
            {
                c.status = "False".into();
                c.reason = Some("NodeNotReady".into());
                c.message = Some("Node is not ready".into());
                c.last_transition_time = Some(now.clone());
                changed = true;
            }
            if changed {
                let p =
                    Api::<Pod>::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
                let patch = json!({"metadata": {"resourceVersion": pod.resource_version()}, "status": {"conditions": conds}});
                if let Err(e) = p
                    .patch_status(
                        &pod.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await
                {
                    tracing::debug!(pod = %pod.name_any(), error = %e, "marking pod not ready");
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_and_pools() {
        let c = Cidr::parse("10.0.0.7/24").expect("cidr");
        assert_eq!(c.to_string(), "10.0.0.0/24");
        assert_eq!(c.nth(5), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(c.nth(256), None);
        let big = Cidr::parse("10.244.0.0/16").expect("cidr");
        assert_eq!(
            big.subnet(24, 3).map(|s| s.to_string()).as_deref(),
            Some("10.244.3.0/24")
        );
        assert!(Cidr::parse("10.0.0.0").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        let mut pool = IpPool::new(Cidr::parse("127.1.0.0/30").expect("cidr"));
        assert_eq!(pool.allocate("a"), Some(Ipv4Addr::new(127, 1, 0, 2)));
        assert_eq!(pool.allocate("a"), Some(Ipv4Addr::new(127, 1, 0, 2)));
        assert_eq!(pool.allocate("b"), None, "/30 has one usable pod address");
        pool.release("a");
        assert_eq!(pool.allocate("b"), Some(Ipv4Addr::new(127, 1, 0, 2)));
        let mut pool = IpPool::new(Cidr::parse("10.1.0.0/24").expect("cidr"));
        assert!(pool.reserve("10.1.0.2", "x"));
        assert!(!pool.reserve("10.2.0.2", "y"));
        assert_eq!(pool.allocate("y"), Some(Ipv4Addr::new(10, 1, 0, 3)));
    }

    #[test]
    fn node_object_shape() {
        let spec = NodeSpec::new("n1")
            .with_capacity("tencent.com/vcuda-core", "400")
            .with_label("gpu", "true")
            .with_taint("dedicated", "gpu", "NoSchedule");
        let n = node_object(
            &spec,
            Ipv4Addr::new(192, 168, 0, 2),
            &Cidr::parse("10.244.0.0/24").expect("cidr"),
        );
        let l = n.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get("kubernetes.io/hostname").map(String::as_str),
            Some("n1")
        );
        assert_eq!(l.get("gpu").map(String::as_str), Some("true"));
        let st = n.status.clone().unwrap_or_default();
        assert_eq!(
            st.allocatable
                .unwrap_or_default()
                .get("tencent.com/vcuda-core"),
            Some(&Quantity("400".into()))
        );
        assert_eq!(st.addresses.unwrap_or_default()[0].address, "192.168.0.2");
        assert_eq!(
            n.spec.unwrap_or_default().taints.unwrap_or_default().len(),
            1
        );
    }
}
