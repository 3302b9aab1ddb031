//! Pure filter and score functions of the simulated kube-scheduler (the subset of the upstream
//! default plugins the add-ons need): NodeUnschedulable, NodeName, NodeAffinity (nodeSelector and
//! required affinity), TaintToleration, NodeResourcesFit (incl. extended resources and
//! `ignoredByScheduler` resources) and NodeResourcesLeastAllocated scoring.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Node, NodeSelectorRequirement, NodeSelectorTerm, Pod, PodAffinityTerm, Taint, Toleration,
};

use crate::cluster::quantity::{self, Resources};

/// A node with the resources already requested on it.
#[derive(Clone, Debug)]
pub struct NodeInfo {
    /// The node object.
    pub node: Node,
    /// Sum of the requests of the non-terminated pods bound (or assumed) to the node.
    pub requested: Resources,
    /// Number of those pods.
    pub pods: usize,
    /// cpu and memory requested, counting pods without requests as upstream's non-zero
    /// defaults (100m, 200Mi) — what scoring uses.
    pub nonzero: (i128, i128),
    /// What inter-pod (anti-)affinity needs of those pods.
    pub residents: Vec<std::sync::Arc<Resident>>,
}

/// What a pod costs on a node, derived once per pod version (the scheduler caches it).
#[derive(Clone, Debug)]
pub struct PodCost {
    /// Effective requests.
    pub requests: Resources,
    /// cpu/memory with non-zero defaults.
    pub nonzero: (i128, i128),
    /// Inter-pod affinity view.
    pub resident: std::sync::Arc<Resident>,
}

impl PodCost {
    /// Derives the cost of `pod`.
    pub fn of(pod: &Pod) -> PodCost {
        let requests = quantity::pod_requests(pod);
        let anti = pod
            .spec
            .as_ref()
            .and_then(|s| s.affinity.as_ref())
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .and_then(|a| {
                a.required_during_scheduling_ignored_during_execution
                    .clone()
            })
            .unwrap_or_default();
        PodCost {
            nonzero: nonzero(&requests),
            requests,
            resident: std::sync::Arc::new(Resident {
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                labels: pod.metadata.labels.clone().unwrap_or_default(),
                anti_affinity: anti,
            }),
        }
    }
}

/// A pod on a node, as inter-pod (anti-)affinity sees it.
#[derive(Clone, Debug, Default)]
pub struct Resident {
    /// Namespace.
    pub namespace: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Its required anti-affinity terms (checked against incoming pods: symmetry).
    pub anti_affinity: Vec<PodAffinityTerm>,
}

/// Upstream `DefaultMilliCPURequest` (100m) in milli-units.
const DEFAULT_CPU: i128 = 100;
/// Upstream `DefaultMemoryRequest` (200Mi) in milli-units.
const DEFAULT_MEMORY: i128 = 200 * 1024 * 1024 * 1000;

fn nonzero(req: &Resources) -> (i128, i128) {
    let get = |k: &str, d: i128| req.get(k).copied().filter(|v| *v > 0).unwrap_or(d);
    (get("cpu", DEFAULT_CPU), get("memory", DEFAULT_MEMORY))
}

impl NodeInfo {
    /// A node with nothing on it.
    pub fn new(node: Node) -> Self {
        NodeInfo {
            node,
            requested: Resources::new(),
            pods: 0,
            nonzero: (0, 0),
            residents: Vec::new(),
        }
    }

    /// Accounts a pod on this node.
    pub fn add_pod(&mut self, pod: &Pod) {
        self.add_cost(&PodCost::of(pod));
    }

    /// Accounts a pod by its (cached) cost.
    pub fn add_cost(&mut self, c: &PodCost) {
        self.nonzero.0 += c.nonzero.0;
        self.nonzero.1 += c.nonzero.1;
        quantity::add(&mut self.requested, &c.requests);
        self.pods += 1;
        self.residents.push(c.resident.clone());
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        self.node.metadata.name.as_deref().unwrap_or_default()
    }

    fn allocatable(&self) -> Resources {
        let st = self.node.status.as_ref();
        let alloc = st
            .and_then(|s| s.allocatable.as_ref())
            .or_else(|| st.and_then(|s| s.capacity.as_ref()));
        quantity::to_resources(alloc)
    }
}

/// Whether a toleration tolerates a taint (upstream `Toleration.ToleratesTaint`).
pub fn tolerates(t: &Toleration, taint: &Taint) -> bool {
    if let Some(effect) = t.effect.as_deref()
        && !effect.is_empty()
        && effect != taint.effect
    {
        return false;
    }
    let key = t.key.as_deref().unwrap_or_default();
    if !key.is_empty() && key != taint.key {
        return false;
    }
    match t.operator.as_deref().unwrap_or("Equal") {
        "Exists" => true,
        "Equal" | "" => {
            t.value.as_deref().unwrap_or_default() == taint.value.as_deref().unwrap_or_default()
        }
        _ => false,
    }
}

/// The first NoSchedule/NoExecute taint of `node` not tolerated by `tolerations`.
pub fn untolerated_taint<'a>(taints: &'a [Taint], tolerations: &[Toleration]) -> Option<&'a Taint> {
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .find(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
}

fn requirement_matches(req: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = req.values.as_deref().unwrap_or_default();
    match req.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => !value.is_some_and(|v| values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if req.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Whether a node matches one NodeSelectorTerm (all expressions and fields; an empty term
/// matches nothing, as upstream).
pub fn term_matches(node: &Node, term: &NodeSelectorTerm) -> bool {
    let exprs = term.match_expressions.as_deref().unwrap_or_default();
    let fields = term.match_fields.as_deref().unwrap_or_default();
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    let labels = node.metadata.labels.as_ref();
    exprs
        .iter()
        .all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| {
            let v = match r.key.as_str() {
                "metadata.name" => node.metadata.name.as_deref(),
                _ => None,
            };
            requirement_matches(r, v)
        })
}

/// nodeSelector plus required node affinity (terms are ORed).
pub fn node_affinity_matches(pod: &Pod, node: &Node) -> bool {
    let Some(spec) = &pod.spec else { return true };
    if let Some(sel) = &spec.node_selector {
        let labels = node.metadata.labels.clone().unwrap_or_default();
        if !sel.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            return false;
        }
    }
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| {
            na.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    match required {
        Some(r) => r.node_selector_terms.iter().any(|t| term_matches(node, t)),
        None => true,
    }
}

/// Runs the filters of one node; `Err` carries the upstream-style reasons.
pub fn filter(pod: &Pod, info: &NodeInfo, ignored: &BTreeSet<String>) -> Result<(), Vec<String>> {
    let node = &info.node;
    let spec = pod.spec.clone().unwrap_or_default();
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let node_spec = node.spec.clone().unwrap_or_default();
    if let Some(name) = spec.node_name.as_deref()
        && name != info.name()
    {
        return Err(vec!["node(s) didn't match the requested node name".into()]);
    }
    if node_spec.unschedulable == Some(true) {
        let t = Taint {
            key: "node.kubernetes.io/unschedulable".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        if !tolerations.iter().any(|tol| tolerates(tol, &t)) {
            return Err(vec!["node(s) were unschedulable".into()]);
        }
    }
    if !node_affinity_matches(pod, node) {
        return Err(vec![
            "node(s) didn't match Pod's node affinity/selector".into(),
        ]);
    }
    if let Some(t) = untolerated_taint(
        node_spec.taints.as_deref().unwrap_or_default(),
        &tolerations,
    ) {
        return Err(vec![format!(
            "node(s) had untolerated taint {{{}: {}}}",
            t.key,
            t.value.as_deref().unwrap_or_default()
        )]);
    }
    let alloc = info.allocatable();
    let mut reasons = Vec::new();
    let max_pods = alloc.get("pods").copied().unwrap_or(110_000) / 1000;
    if (info.pods as i128) + 1 > max_pods {
        reasons.push("Too many pods".to_string());
    }
    for (name, want) in quantity::pod_requests(pod) {
        if want <= 0 || ignored.contains(&name) {
            continue;
        }
        let have = alloc.get(&name).copied().unwrap_or(0);
        let used = info.requested.get(&name).copied().unwrap_or(0);
        if used + want > have {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    if reasons.is_empty() {
        Ok(())
    } else {
        Err(reasons)
    }
}

/// NodeResourcesFit with the LeastAllocated strategy over cpu and memory: 0..=100.
pub fn score(pod: &Pod, info: &NodeInfo) -> i64 {
    let alloc = info.allocatable();
    // upstream scores with non-zero defaults for pods without requests
    let (pc, pm) = nonzero(&quantity::pod_requests(pod));
    let mut total = 0i128;
    let mut n = 0i128;
    for (name, used) in [
        ("cpu", info.nonzero.0 + pc),
        ("memory", info.nonzero.1 + pm),
    ] {
        let cap = alloc.get(name).copied().unwrap_or(0);
        if cap <= 0 {
            continue;
        }
        total += if used > cap {
            0
        } else {
            (cap - used) * 100 / cap
        };
        n += 1;
    }
    if n == 0 {
        0
    } else {
        i64::try_from(total / n).unwrap_or(0)
    }
}

fn pod_term_matches(
    term: &PodAffinityTerm,
    term_ns: &str,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let namespaces = term.namespaces.clone().unwrap_or_default();
    let ns_ok = if namespaces.is_empty() && term.namespace_selector.is_none() {
        ns == term_ns
    } else if term
        .namespace_selector
        .as_ref()
        .is_some_and(|s| *s == Default::default())
    {
        true // an empty namespaceSelector selects every namespace
    } else {
        namespaces.iter().any(|n| n == ns)
    };
    ns_ok
        && term
            .label_selector
            .as_ref()
            .is_some_and(|sel| crate::cluster::util::selector_matches(sel, labels))
}

fn topology<'a>(info: &'a NodeInfo, key: &str) -> Option<&'a String> {
    info.node.metadata.labels.as_ref()?.get(key)
}

/// InterPodAffinity (required terms only): the pod's affinity and anti-affinity, and the
/// anti-affinity of the pods already running, evaluated over topology domains.
pub fn inter_pod_affinity(
    pod: &Pod,
    candidate: &NodeInfo,
    all: &BTreeMap<String, NodeInfo>,
) -> Result<(), String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    let aff = pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.clone())
        .unwrap_or_default();
    // existing pods' anti-affinity against this pod
    for other in all.values() {
        for r in &other.residents {
            for t in &r.anti_affinity {
                if pod_term_matches(t, &r.namespace, &ns, &labels)
                    && let (Some(a), Some(b)) = (
                        topology(other, &t.topology_key),
                        topology(candidate, &t.topology_key),
                    )
                    && a == b
                {
                    return Err("node(s) didn't satisfy existing pods anti-affinity rules".into());
                }
            }
        }
    }
    let in_domain = |t: &PodAffinityTerm| {
        let Some(dom) = topology(candidate, &t.topology_key) else {
            return false;
        };
        all.values()
            .filter(|i| topology(i, &t.topology_key) == Some(dom))
            .any(|i| {
                i.residents
                    .iter()
                    .any(|r| pod_term_matches(t, &ns, &r.namespace, &r.labels))
            })
    };
    for t in aff
        .pod_anti_affinity
        .and_then(|a| a.required_during_scheduling_ignored_during_execution)
        .unwrap_or_default()
    {
        if in_domain(&t) {
            return Err("node(s) didn't match pod anti-affinity rules".into());
        }
    }
    for t in aff
        .pod_affinity
        .and_then(|a| a.required_during_scheduling_ignored_during_execution)
        .unwrap_or_default()
    {
        if in_domain(&t) {
            continue;
        }
        // the first pod of a group that selects itself may go anywhere with the topology key
        let anywhere = all.values().any(|i| {
            i.residents
                .iter()
                .any(|r| pod_term_matches(&t, &ns, &r.namespace, &r.labels))
        });
        if !anywhere
            && pod_term_matches(&t, &ns, &ns, &labels)
            && topology(candidate, &t.topology_key).is_some()
        {
            continue;
        }
        return Err("node(s) didn't match pod affinity rules".into());
    }
    Ok(())
}

/// Upstream's FitError message: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had …`.
pub fn unschedulable_message(nodes: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, n)| format!("{n} {r}")).collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{nodes} nodes are available.")
    } else {
        format!("0/{nodes} nodes are available: {}.", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(v: serde_json::Value) -> NodeInfo {
        let mut base = json!({
            "metadata": {"name": "n1", "labels": {"zone": "a", "gpu": "true", "rank": "5"}},
            "status": {"allocatable": {"cpu": "2", "memory": "4Gi", "pods": "3", "tencent.com/vcuda-core": "100"}}
        });
        json_patch::merge(&mut base, &v);
        NodeInfo::new(serde_json::from_value(base).expect("node"))
    }
    fn pod(spec: serde_json::Value) -> Pod {
        let mut base = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        json_patch::merge(&mut base, &json!({ "spec": spec }));
        serde_json::from_value(base).expect("pod")
    }
    fn req(r: serde_json::Value) -> serde_json::Value {
        json!({"containers": [{"name": "c", "resources": {"requests": r.clone(), "limits": r}}]})
    }

    #[test]
    #[allow(clippy::type_complexity)]
    fn filter_table() {
        let none = BTreeSet::new();
        let cases: Vec<(
            &str,
            serde_json::Value,
            serde_json::Value,
            Result<(), Vec<&str>>,
        )> = vec![
            ("fits", json!({}), json!({}), Ok(())),
            (
                "nodeSelector match",
                json!({}),
                json!({"nodeSelector": {"zone": "a"}}),
                Ok(()),
            ),
            (
                "nodeSelector mismatch",
                json!({}),
                json!({"nodeSelector": {"zone": "b"}}),
                Err(vec!["node(s) didn't match Pod's node affinity/selector"]),
            ),
            (
                "affinity In",
                json!({}),
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["b"]}]},
                    {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}, {"key": "rank", "operator": "Gt", "values": ["3"]}]}
                ]}}}}),
                Ok(()),
            ),
            (
                "affinity NotIn/DoesNotExist",
                json!({}),
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}
                ]}}}}),
                Err(vec!["node(s) didn't match Pod's node affinity/selector"]),
            ),
            (
                "matchFields metadata.name (DaemonSet pods)",
                json!({}),
                json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                    {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}
                ]}}}}),
                Err(vec!["node(s) didn't match Pod's node affinity/selector"]),
            ),
            (
                "unschedulable",
                json!({"spec": {"unschedulable": true}}),
                json!({}),
                Err(vec!["node(s) were unschedulable"]),
            ),
            (
                "unschedulable tolerated",
                json!({"spec": {"unschedulable": true}}),
                json!({"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}),
                Ok(()),
            ),
            (
                "NoSchedule taint",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
                json!({}),
                Err(vec!["node(s) had untolerated taint {k: v}"]),
            ),
            (
                "NoExecute taint tolerated by Equal",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]}}),
                json!({"tolerations": [{"key": "k", "operator": "Equal", "value": "v"}]}),
                Ok(()),
            ),
            (
                "wrong value not tolerated",
                json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoExecute"}]}}),
                json!({"tolerations": [{"key": "k", "value": "w"}]}),
                Err(vec!["node(s) had untolerated taint {k: v}"]),
            ),
            (
                "PreferNoSchedule ignored",
                json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
                json!({}),
                Ok(()),
            ),
            (
                "insufficient cpu",
                json!({}),
                req(json!({"cpu": "3"})),
                Err(vec!["Insufficient cpu"]),
            ),
            (
                "extended resource fits",
                json!({}),
                req(json!({"tencent.com/vcuda-core": "100"})),
                Ok(()),
            ),
            (
                "extended resource missing",
                json!({}),
                req(json!({"tke.cloud.tencent.com/eni-ip": "1"})),
                Err(vec!["Insufficient tke.cloud.tencent.com/eni-ip"]),
            ),
            (
                "two reasons",
                json!({}),
                req(json!({"cpu": "3", "memory": "5Gi"})),
                Err(vec!["Insufficient cpu", "Insufficient memory"]),
            ),
        ];
        for (name, n, p, want) in cases {
            let got = filter(&pod(p), &node(n), &none);
            let want = want.map_err(|v| v.into_iter().map(String::from).collect::<Vec<_>>());
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn ignored_resources_and_pod_count() {
        let p = pod(req(json!({"tke.cloud.tencent.com/eni-ip": "1"})));
        let ignored: BTreeSet<String> = ["tke.cloud.tencent.com/eni-ip".to_string()].into();
        assert_eq!(filter(&p, &node(json!({})), &ignored), Ok(()));
        let mut full = node(json!({}));
        for _ in 0..3 {
            full.add_pod(&pod(json!({})));
        }
        assert_eq!(
            filter(&pod(json!({})), &full, &BTreeSet::new()),
            Err(vec!["Too many pods".to_string()])
        );
    }

    #[test]
    fn inter_pod_affinity_table() {
        let mk_node = |name: &str, zone: &str| {
            NodeInfo::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}}})).expect("node"))
        };
        let mk_pod = |labels: serde_json::Value, affinity: serde_json::Value| -> Pod {
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels},
                "spec": {"containers": [{"name": "c"}], "affinity": affinity}}),
            )
            .expect("pod")
        };
        let term = |app: &str, key: &str| json!([{"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]);
        let mut all: BTreeMap<String, NodeInfo> =
            [mk_node("n1", "a"), mk_node("n2", "a"), mk_node("n3", "b")]
                .into_iter()
                .map(|n| (n.name().to_string(), n))
                .collect();
        let db = mk_pod(
            json!({"app": "db"}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("web", "kubernetes.io/hostname")}}),
        );
        all.get_mut("n1").expect("n1").add_pod(&db);
        let ok = |p: &Pod, all: &BTreeMap<String, NodeInfo>| -> Vec<String> {
            all.values()
                .filter(|n| inter_pod_affinity(p, n, all).is_ok())
                .map(|n| n.name().to_string())
                .collect()
        };
        let anti_host = mk_pod(
            json!({"app": "x"}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "kubernetes.io/hostname")}}),
        );
        assert_eq!(ok(&anti_host, &all), vec!["n2", "n3"]);
        let anti_zone = mk_pod(
            json!({"app": "x"}),
            json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "zone")}}),
        );
        assert_eq!(ok(&anti_zone, &all), vec!["n3"]);
        let aff_zone = mk_pod(
            json!({"app": "x"}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "zone")}}),
        );
        assert_eq!(ok(&aff_zone, &all), vec!["n1", "n2"]);
        // existing pods' anti-affinity (symmetry)
        let web = mk_pod(json!({"app": "web"}), json!({}));
        assert_eq!(ok(&web, &all), vec!["n2", "n3"]);
        assert_eq!(
            inter_pod_affinity(&web, &all["n1"], &all),
            Err("node(s) didn't satisfy existing pods anti-affinity rules".to_string())
        );
        // the first pod of a self-affine group may go anywhere
        let first = mk_pod(
            json!({"app": "cache"}),
            json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("cache", "zone")}}),
        );
        assert_eq!(ok(&first, &all), vec!["n1", "n2", "n3"]);
        // other namespaces don't count unless listed
        let other_ns: Pod = serde_json::from_value(json!({"metadata": {"name": "q", "namespace": "other", "labels": {"app": "x"}},
            "spec": {"containers": [{"name": "c"}], "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": term("db", "kubernetes.io/hostname")}}}}))
        .expect("pod");
        assert_eq!(ok(&other_ns, &all), vec!["n1", "n2", "n3"]);
    }

    #[test]
    fn least_allocated_prefers_empty_nodes() {
        let p = pod(req(json!({"cpu": "1", "memory": "1Gi"})));
        let empty = node(json!({}));
        let mut busy = node(json!({}));
        busy.add_pod(&p);
        assert!(score(&p, &empty) > score(&p, &busy));
        assert_eq!(score(&p, &empty), 62); // cpu 50, memory 75
        let mut reasons = BTreeMap::new();
        reasons.insert("Insufficient cpu".to_string(), 2);
        reasons.insert("node(s) were unschedulable".to_string(), 1);
        assert_eq!(
            unschedulable_message(3, &reasons),
            "0/3 nodes are available: 1 node(s) were unschedulable, 2 Insufficient cpu."
        );
    }
}
