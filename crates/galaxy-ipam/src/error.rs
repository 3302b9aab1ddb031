//! The crate's one error type: one variant per failing operation, naming what failed.
//!
//! The texts of the variants a scheduling request can end in (filter, bind, preempt) travel
//! to kube-scheduler in the extender's answers and from there into the pod's
//! `FailedScheduling` Events: they keep Galaxy's wording (`FloatingIPPlugin:NoFIPLeft`, ...).

use addon_common::kube;
use std::net::SocketAddr;

use crate::{
    config::{IpRange, Net},
    plugin::{REASON_NO_FIP_CONFIG_NODE, REASON_NO_FIP_LEFT, REASON_UNKNOWN_NODE},
};

/// Errors of galaxy-ipam.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // --- configuration -------------------------------------------------------------------
    /// The `--config` file is not JSON.
    #[error("invalid floating IP configuration: config file is not JSON: {source}")]
    ConfigFileNotJson {
        #[source]
        source: serde_json::Error,
    },

    /// A setting of the `--config` file has the wrong shape.
    #[error("invalid floating IP configuration: {reason}")]
    InvalidSetting {
        /// The setting (`schedule_plugin`, `resyncInterval`, ...).
        setting: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The pools (`floatingips`) are not JSON.
    #[error("invalid floating IP configuration: floatingips is not a JSON array: {source}")]
    PoolsNotJson {
        #[source]
        source: serde_json::Error,
    },

    /// The pools (`floatingips`) are not a JSON array.
    #[error("invalid floating IP configuration: floatingips must be a JSON array")]
    PoolsNotArray,

    /// One pool of the configuration does not validate.
    #[error("invalid floating IP configuration: pool #{index}: {reason}")]
    InvalidPool {
        /// Its position in `floatingips`.
        index: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// Two pools share IPs.
    #[error(
        "invalid floating IP configuration: pools #{first} and #{second} overlap: {first_range} and {second_range}"
    )]
    OverlappingPools {
        first: usize,
        second: usize,
        first_range: IpRange,
        second_range: IpRange,
    },

    /// A new configuration was refused because it would drop allocated IPs.
    #[error(
        "configuration refused: it would drop {} allocated IP(s) ({}); keeping the previous configuration",
        .ips.len(),
        summarize(.ips)
    )]
    ConfigDropsAllocated {
        /// The allocated IPs outside the new pools.
        ips: Vec<String>,
    },

    /// Reading the pool ConfigMap failed.
    #[error("cannot read the ConfigMap {namespace}/{name}: {source}")]
    ReadConfigMap {
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },

    /// An allocation key does not parse.
    #[error("invalid key {key:?}")]
    InvalidKey { key: String },

    // --- scheduling requests ---------------------------------------------------------------
    /// An extender request (ExtenderArgs, ExtenderBindingArgs, ...) is not JSON.
    #[error("bad request: {request} is not JSON: {source}")]
    RequestNotJson {
        /// The request type.
        request: &'static str,
        #[source]
        source: serde_json::Error,
    },

    /// An extender request is malformed.
    #[error("bad request: {reason}")]
    MalformedRequest {
        /// The request type.
        request: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// The pod's `k8s.v1.cni.galaxy.io/args` annotation is malformed.
    #[error("bad request: {reason}")]
    InvalidCniArgs {
        /// `namespace/name` of the pod.
        pod: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A bind for a pod that does not request an eni-ip.
    #[error(
        "bad request: pod {pod} does not request {}",
        addon_common::api::galaxy::RESOURCE_ENI_IP
    )]
    NoEniIpRequested {
        /// `namespace/name` of the pod.
        pod: String,
    },

    /// The pod's release policy does not fit its workload (policy admission).
    #[error("{reason}")]
    PolicyRejected {
        /// The pod's allocation key.
        key: String,
        /// The admission's verdict (Galaxy's wording).
        reason: String,
    },

    /// The replicas of a workload of a kind never seen in an owner reference cannot be read.
    #[error("unknown workload kind {kind:?}: its replicas cannot be read yet")]
    UnknownWorkloadKind {
        /// The lowercased kind of the key.
        kind: String,
    },

    /// The node is unknown or has no InternalIP.
    #[error("{REASON_UNKNOWN_NODE}: node {node}")]
    UnknownNode { node: String },

    /// The node's IP is in no configured node subnet.
    #[error("{REASON_NO_FIP_CONFIG_NODE}: node {node}")]
    NodeOutsidePools { node: String },

    /// No IP is left for the key on the node's subnet.
    #[error("{REASON_NO_FIP_LEFT}: no IP left for {key} on node {node} (subnet {subnet})")]
    NoIpLeft {
        key: String,
        node: String,
        subnet: Net,
    },

    /// The IP the key holds is not usable on the node chosen by the scheduler.
    #[error("{REASON_NO_FIP_LEFT}: IP {ip} of {key} cannot be used on node {node}")]
    HeldIpNotOnNode {
        ip: String,
        key: String,
        node: String,
    },

    /// The IP changed hands between the decision and the record.
    #[error("IP {ip} changed hands while binding; retry")]
    IpChangedHands { ip: String },

    /// Every IP tried was taken by a FloatingIP created meanwhile.
    #[error("too many FloatingIP conflicts; retry")]
    TooManyConflicts {
        /// The key that was allocating.
        key: String,
    },

    /// The FloatingIP vanished and was re-created by someone else before it could be rewritten.
    #[error("FloatingIP {ip} was re-created by someone else")]
    FloatingIpRecreated { ip: String },

    /// The pod to bind is not the one the scheduler decided for (it was re-created).
    #[error("pod {pod} has UID {actual}, not {expected}")]
    PodUidMismatch {
        pod: String,
        actual: String,
        expected: String,
    },

    /// This replica does not lead; the scheduler must retry (it will reach the leader).
    #[error("galaxy-ipam is not the leader or not ready yet; retry")]
    NotLeader,

    // --- REST API --------------------------------------------------------------------------
    /// Release of an IP that is not allocated.
    #[error("bad request: {ip} is not allocated")]
    NotAllocated { ip: String },

    /// Release of an IP held by another key than the one named.
    #[error("{ip} is held by {holder}, not {expected}")]
    HeldByOther {
        ip: String,
        holder: String,
        expected: String,
    },

    /// Release of an IP whose pod still runs, or that is reserved.
    #[error("{ip} is not releasable: its pod is still running or the IP is reserved")]
    NotReleasable { ip: String },

    // --- API calls -------------------------------------------------------------------------
    /// Listing the FloatingIPs (recovery) failed.
    #[error("cannot list FloatingIPs: {source}")]
    ListFloatingIps {
        #[source]
        source: kube::Error,
    },

    /// Listing the pods (recovery) failed.
    #[error("cannot list pods: {source}")]
    ListPods {
        #[source]
        source: kube::Error,
    },

    /// Creating an IP's FloatingIP failed.
    #[error("cannot create the FloatingIP {ip}: {source}")]
    CreateFloatingIp {
        ip: String,
        #[source]
        source: kube::Error,
    },

    /// Reading an IP's FloatingIP failed.
    #[error("cannot read the FloatingIP {ip}: {source}")]
    ReadFloatingIp {
        ip: String,
        #[source]
        source: kube::Error,
    },

    /// Patching an IP's FloatingIP failed.
    #[error("cannot update the FloatingIP {ip}: {source}")]
    UpdateFloatingIp {
        ip: String,
        #[source]
        source: kube::Error,
    },

    /// Deleting an IP's FloatingIP failed.
    #[error("cannot delete the FloatingIP {ip}: {source}")]
    DeleteFloatingIp {
        ip: String,
        #[source]
        source: kube::Error,
    },

    /// Reading a node (for its InternalIP) failed.
    #[error("cannot read the node {node}: {source}")]
    ReadNode {
        node: String,
        #[source]
        source: kube::Error,
    },

    /// Reading the pod to bind failed.
    #[error("cannot read the pod {pod}: {source}")]
    ReadPod {
        pod: String,
        #[source]
        source: kube::Error,
    },

    /// Creating the pod's Binding failed.
    #[error("cannot bind the pod {pod} to {node}: {source}")]
    BindPod {
        pod: String,
        node: String,
        #[source]
        source: kube::Error,
    },

    /// Reading the workload (or Pool) whose replicas bound a key's IPs failed.
    #[error("cannot read the {kind} {name}: {source}")]
    ReadWorkload {
        /// Its kind (`Deployment`, `Pool`, ...).
        kind: String,
        /// `namespace/name` (or the Pool's name).
        name: String,
        #[source]
        source: kube::Error,
    },

    /// Discovery of a workload kind (for its scale subresource) failed.
    #[error("cannot find {kind} in {api_version} through discovery: {source}")]
    Discovery {
        api_version: String,
        kind: String,
        #[source]
        source: kube::Error,
    },

    // --- process ---------------------------------------------------------------------------
    /// Registering the metrics failed.
    #[error("cannot register the metrics: {source}")]
    RegisterMetrics {
        #[source]
        source: prometheus::Error,
    },

    /// A server's socket could not be bound.
    #[error("{server} bind {address}: {source}")]
    Bind {
        /// `extender` or `api`.
        server: String,
        address: SocketAddr,
        #[source]
        source: std::io::Error,
    },

    /// A bound socket's address could not be read.
    #[error("{server} address: {source}")]
    LocalAddress {
        server: String,
        #[source]
        source: std::io::Error,
    },
}

fn summarize(ips: &[String]) -> String {
    let mut out = ips.iter().take(10).cloned().collect::<Vec<_>>().join(", ");
    if ips.len() > 10 {
        out.push_str(&format!(", … {} more", ips.len() - 10));
    }
    out
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A short, stable, low-cardinality label for metrics (`galaxy_ipam_errors_total{error}`,
    /// and the bind's `galaxy_ipam_extender_requests_total{result}`); the list is in
    /// docs/galaxy-ipam.md's metrics section.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::ConfigFileNotJson { .. } => "config_file_not_json",
            Error::InvalidSetting { .. } => "invalid_setting",
            Error::PoolsNotJson { .. } => "pools_not_json",
            Error::PoolsNotArray => "pools_not_array",
            Error::InvalidPool { .. } => "invalid_pool",
            Error::OverlappingPools { .. } => "overlapping_pools",
            Error::ConfigDropsAllocated { .. } => "config_drops_allocated",
            Error::ReadConfigMap { .. } => "read_configmap",
            Error::InvalidKey { .. } => "invalid_key",
            Error::RequestNotJson { .. } => "request_not_json",
            Error::MalformedRequest { .. } => "malformed_request",
            Error::InvalidCniArgs { .. } => "invalid_cni_args",
            Error::NoEniIpRequested { .. } => "no_eni_ip_requested",
            Error::PolicyRejected { .. } => "policy_rejected",
            Error::UnknownWorkloadKind { .. } => "unknown_workload_kind",
            Error::UnknownNode { .. } => "unknown_node",
            Error::NodeOutsidePools { .. } => "node_outside_pools",
            Error::NoIpLeft { .. } => "no_ip_left",
            Error::HeldIpNotOnNode { .. } => "held_ip_not_on_node",
            Error::IpChangedHands { .. } => "ip_changed_hands",
            Error::TooManyConflicts { .. } => "too_many_conflicts",
            Error::FloatingIpRecreated { .. } => "floatingip_recreated",
            Error::PodUidMismatch { .. } => "pod_uid_mismatch",
            Error::NotLeader => "not_leader",
            Error::NotAllocated { .. } => "not_allocated",
            Error::HeldByOther { .. } => "held_by_other",
            Error::NotReleasable { .. } => "not_releasable",
            Error::ListFloatingIps { .. } => "list_floatingips",
            Error::ListPods { .. } => "list_pods",
            Error::CreateFloatingIp { .. } => "create_floatingip",
            Error::ReadFloatingIp { .. } => "read_floatingip",
            Error::UpdateFloatingIp { .. } => "update_floatingip",
            Error::DeleteFloatingIp { .. } => "delete_floatingip",
            Error::ReadNode { .. } => "read_node",
            Error::ReadPod { .. } => "read_pod",
            Error::BindPod { .. } => "bind_pod",
            Error::ReadWorkload { .. } => "read_workload",
            Error::Discovery { .. } => "discovery",
            Error::RegisterMetrics { .. } => "register_metrics",
            Error::Bind { .. } => "bind_socket",
            Error::LocalAddress { .. } => "local_address",
        }
    }

    /// True for an error the scheduler's filter answers by failing every node with the
    /// error's text (the pod cannot get an IP as requested), rather than with an error.
    pub fn fails_every_node(&self) -> bool {
        matches!(
            self,
            Error::PolicyRejected { .. }
                | Error::UnknownWorkloadKind { .. }
                | Error::InvalidCniArgs { .. }
        )
    }
}

/// The HTTP status code of a Kubernetes API error response.
pub fn api_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_messages_clear() {
        let e = Error::ConfigDropsAllocated {
            ips: vec!["10.0.0.2".into(), "10.0.0.3".into()],
        };
        assert_eq!(e.metric_label(), "config_drops_allocated");
        assert!(
            e.to_string()
                .contains("2 allocated IP(s) (10.0.0.2, 10.0.0.3)"),
            "{e}"
        );
        let many: Vec<String> = (0..12).map(|i| format!("10.0.0.{i}")).collect();
        assert!(
            Error::ConfigDropsAllocated { ips: many }
                .to_string()
                .contains("… 2 more")
        );
        assert_eq!(Error::NotLeader.metric_label(), "not_leader");
    }

    /// The texts kube-scheduler receives (and shows in FailedScheduling Events) are Galaxy's.
    #[test]
    fn scheduler_visible_texts_keep_galaxys_wording() {
        let node = || "n1".to_string();
        assert_eq!(
            Error::UnknownNode { node: node() }.to_string(),
            "FloatingIPPlugin:UnknowNode: node n1"
        );
        assert_eq!(
            Error::NodeOutsidePools { node: node() }.to_string(),
            "FloatingIPPlugin:NoFIPConfigNode: node n1"
        );
        let subnet = Net::parse("10.0.0.0/24").expect("net");
        assert_eq!(
            Error::NoIpLeft {
                key: "k".into(),
                node: node(),
                subnet
            }
            .to_string(),
            "FloatingIPPlugin:NoFIPLeft: no IP left for k on node n1 (subnet 10.0.0.0/24)"
        );
        assert_eq!(
            Error::MalformedRequest {
                request: "ExtenderArgs",
                reason: "ExtenderArgs has no pod".into()
            }
            .to_string(),
            "bad request: ExtenderArgs has no pod"
        );
    }
}
