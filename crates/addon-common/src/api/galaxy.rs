//! `galaxy.k8s.io/v1alpha1` FloatingIP (cluster-scoped, one object per allocated or reserved
//! IP, named by the IP) and Pool (namespaced, fields at the top level). Wire-compatible with
//! `tkestack/galaxy` (`pkg/ipam/apis/galaxy/v1alpha1/types.go`).

use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// API group of FloatingIP and Pool.
pub const GROUP: &str = "galaxy.k8s.io";
/// API version of FloatingIP and Pool.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of FloatingIP and Pool objects.
pub const API_VERSION: &str = "galaxy.k8s.io/v1alpha1";

/// Extended resource a pod requests to get a floating IP.
pub const RESOURCE_ENI_IP: &str = "tke.cloud.tencent.com/eni-ip";
/// Pod annotation: the CNI args; input `request_ip_range`, output `common.ipinfos` written at
/// bind time.
pub const ANNOTATION_CNI_ARGS: &str = "k8s.v1.cni.galaxy.io/args";
/// Pod annotation: release policy, "" (default), "immutable" or "never".
pub const ANNOTATION_RELEASE_POLICY: &str = "k8s.v1.cni.galaxy.io/release-policy";
/// Pod annotation: shared IP pool of the pod (forces the never policy).
pub const ANNOTATION_ENI_IP_POOL: &str = "tke.cloud.tencent.com/eni-ip-pool";
/// Pod annotation read by the galaxy node daemon to pick the CNI networks.
pub const ANNOTATION_CNI_NETWORKS: &str = "k8s.v1.cni.cncf.io/networks";
/// FloatingIP label: its presence (any value) reserves the IP.
pub const LABEL_RESERVED: &str = "reserved";
/// Namespace Pool objects are read from.
pub const POOL_NAMESPACE: &str = "kube-system";
/// Key prefix of IPs reserved for nodes (documented reserve key, with policy 2).
pub const RESERVED_FOR_NODE_KEY: &str = "pool__reserved-for-node_";

/// When an allocated IP is released (the pod annotation `k8s.v1.cni.galaxy.io/release-policy`,
/// stored as an integer in FloatingIP `spec.policy`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ReleasePolicy {
    /// 0: released when the pod is deleted or finishes (annotation absent or "").
    #[default]
    Default = 0,
    /// 1: kept for the workload while it still wants that many replicas ("immutable").
    Immutable = 1,
    /// 2: never released, even when the workload is deleted ("never").
    Never = 2,
}

impl ReleasePolicy {
    /// The integer stored in FloatingIP `spec.policy`.
    pub fn as_int(self) -> u8 {
        self as u8
    }

    /// The policy of a stored integer.
    pub fn from_int(value: i64) -> Option<Self> {
        match value {
            0 => Some(ReleasePolicy::Default),
            1 => Some(ReleasePolicy::Immutable),
            2 => Some(ReleasePolicy::Never),
            _ => None,
        }
    }

    /// The policy of a pod annotation value: "immutable", "never", anything else default.
    pub fn from_annotation(value: Option<&str>) -> Self {
        match value {
            Some("immutable") => ReleasePolicy::Immutable,
            Some("never") => ReleasePolicy::Never,
            _ => ReleasePolicy::Default,
        }
    }

    /// The annotation value of this policy ("" for the default).
    pub fn annotation_value(self) -> &'static str {
        match self {
            ReleasePolicy::Default => "",
            ReleasePolicy::Immutable => "immutable",
            ReleasePolicy::Never => "never",
        }
    }
}

impl fmt::Display for ReleasePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReleasePolicy::Default => f.write_str("default"),
            other => f.write_str(other.annotation_value()),
        }
    }
}

impl Serialize for ReleasePolicy {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_u8(self.as_int())
    }
}

impl<'de> Deserialize<'de> for ReleasePolicy {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        ReleasePolicy::from_int(value).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid release policy {value}, expected 0, 1 or 2"
            ))
        })
    }
}

impl JsonSchema for ReleasePolicy {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ReleasePolicy".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "integer",
            "enum": [0, 1, 2],
            "minimum": 0,
            "maximum": 2,
        })
    }
}

/// One allocated or reserved floating IP. The object's name is the IP (e.g. 192.168.64.202).
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "galaxy.k8s.io",
    version = "v1alpha1",
    kind = "FloatingIP",
    plural = "floatingips",
    singular = "floatingip",
    shortname = "fip",
    derive = "PartialEq",
    doc = "FloatingIP (Galaxy IPAM) records the allocation of one floating IP; the object name is the IP.",
    printcolumn(
        name = "Key",
        type_ = "string",
        json_path = ".spec.key",
        description = "Owner key: pool__<pool>_, dp_/sts_/tapp_/<kind>_<ns>_<app>_<pod>, or empty when free"
    ),
    printcolumn(
        name = "Policy",
        type_ = "integer",
        json_path = ".spec.policy",
        description = "Release policy: 0 default, 1 immutable, 2 never"
    ),
    printcolumn(
        name = "Node",
        type_ = "string",
        json_path = ".spec.attribute",
        description = "Attribute JSON (node name and pod UID)",
        priority = 1
    ),
    printcolumn(
        name = "Updated",
        type_ = "date",
        json_path = ".spec.updateTime",
        description = "Last allocation change",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct FloatingIPSpec {
    /// Owner key of the IP: `dp_<ns>_<deployment>_<pod>`, `sts_<ns>_<sts>_<pod>`,
    /// `<kind>_<ns>_<app>_<pod>` (e.g. tapp_), `NULL_<ns>_NULL_<pod>` for bare pods, prefixed
    /// with `pool__<pool>_` for pool IPs; a key ending after the app name (e.g.
    /// `dp_<ns>_<app>_`) reserves the IP for the app.
    pub key: String,

    /// JSON object {"NodeName": "<node>", "Uid": "<pod UID>"} of the current holder; "" when not
    /// bound.
    pub attribute: String,

    /// Release policy: 0 release with the pod, 1 immutable (kept while the workload wants it),
    /// 2 never released.
    pub policy: ReleasePolicy,

    /// Deprecated (removed from Galaxy in v1.0.7): the node subnet of the holder. Kept so that
    /// objects written by older Galaxy versions are not pruned; never read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subnet: Option<String>,

    /// Time of the last allocation, release or update of this IP (RFC 3339).
    pub update_time: Time,
}

/// The holder of a floating IP, stored as JSON in FloatingIP `spec.attribute`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct FloatingIPAttribute {
    /// Node of the pod holding the IP.
    #[serde(rename = "NodeName", alias = "nodeName", alias = "nodename", default)]
    pub node_name: String,
    /// UID of the pod holding the IP.
    #[serde(rename = "Uid", alias = "uid", alias = "UID", default)]
    pub uid: String,
}

impl FloatingIPAttribute {
    /// Parses an attribute string; "" is an empty attribute.
    pub fn parse(attribute: &str) -> Result<Self, serde_json::Error> {
        if attribute.trim().is_empty() {
            return Ok(FloatingIPAttribute::default());
        }
        serde_json::from_str(attribute)
    }

    /// The attribute string as Galaxy writes it: `{"NodeName":"…","Uid":"…"}`.
    pub fn to_attribute_string(&self) -> String {
        format!(
            "{{\"NodeName\":{},\"Uid\":{}}}",
            serde_json::Value::from(self.node_name.as_str()),
            serde_json::Value::from(self.uid.as_str())
        )
    }
}

impl FloatingIPSpec {
    /// The parsed `attribute`.
    pub fn parsed_attribute(&self) -> Result<FloatingIPAttribute, serde_json::Error> {
        FloatingIPAttribute::parse(&self.attribute)
    }
}

impl FloatingIP {
    /// Whether the object carries the `reserved` label (reserved by hand).
    pub fn is_reserved(&self) -> bool {
        self.metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_RESERVED))
    }

    /// The IP this object stands for (its name).
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        self.metadata.name.as_deref().and_then(|n| n.parse().ok())
    }
}

/// Settings of a shared floating-IP pool (pods annotated tke.cloud.tencent.com/eni-ip-pool);
/// read from kube-system. The fields sit at the top level of the object: there is no spec.
#[derive(
    CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema,
)]
#[kube(
    group = "galaxy.k8s.io",
    version = "v1alpha1",
    kind = "Pool",
    plural = "pools",
    singular = "pool",
    namespaced,
    no_spec,
    derive = "PartialEq",
    derive = "Default",
    doc = "Pool (Galaxy IPAM) sizes a shared floating-IP pool; pools are read from kube-system.",
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".size",
        description = "Number of IPs in the pool"
    ),
    printcolumn(
        name = "PreAllocateIP",
        type_ = "boolean",
        json_path = ".preAllocateIP",
        description = "Whether IPs are allocated when the pool is created or resized"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct PoolFields {
    /// Number of IPs the pool holds. Always serialized.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub size: i64,

    /// Allocate the pool's IPs when the pool is created or resized instead of on first use.
    /// Always serialized; default false.
    #[serde(rename = "preAllocateIP", default)]
    pub pre_allocate_ip: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::test_support::{
        assert_described, assert_structural, crd_json, load_fixture, roundtrip_exact, schema_at,
    };
    use kube::core::CustomResourceExt;
    use serde_json::json;

    #[test]
    fn seed_floatingip_deserializes_and_roundtrips() {
        let (fip, original): (FloatingIP, _) = load_fixture("galaxy-floatingip.yaml");
        assert_eq!(fip.metadata.name.as_deref(), Some("192.168.64.202"));
        assert_eq!(fip.ip(), "192.168.64.202".parse().ok());
        assert_eq!(fip.spec.key, "dp_default_nnn_nnn-7df5984746-58hjm");
        assert_eq!(fip.spec.policy, ReleasePolicy::Immutable);
        assert_eq!(fip.spec.subnet.as_deref(), Some("172.21.64.0/20"));
        assert!(!fip.is_reserved());
        let attr = fip.spec.parsed_attribute().expect("attribute");
        assert_eq!(attr.node_name, "172.21.64.15");
        assert_eq!(attr.uid, "");
        roundtrip_exact(&fip, &original, &[]);
    }

    #[test]
    fn attribute_json() {
        let attr = FloatingIPAttribute {
            node_name: "node-1".into(),
            uid: "u-1".into(),
        };
        let text = attr.to_attribute_string();
        assert_eq!(text, r#"{"NodeName":"node-1","Uid":"u-1"}"#);
        assert_eq!(FloatingIPAttribute::parse(&text).expect("parse"), attr);
        assert_eq!(
            FloatingIPAttribute::parse(r#"{"nodeName":"n","uid":"u"}"#).expect("lower"),
            FloatingIPAttribute {
                node_name: "n".into(),
                uid: "u".into()
            }
        );
        assert_eq!(
            FloatingIPAttribute::parse("").expect("empty"),
            FloatingIPAttribute::default()
        );
        assert!(FloatingIPAttribute::parse("not json").is_err());
    }

    #[test]
    fn release_policy_wire_form() {
        for (p, n, a) in [
            (ReleasePolicy::Default, 0, ""),
            (ReleasePolicy::Immutable, 1, "immutable"),
            (ReleasePolicy::Never, 2, "never"),
        ] {
            assert_eq!(serde_json::to_value(p).expect("json"), json!(n));
            assert_eq!(
                serde_json::from_value::<ReleasePolicy>(json!(n)).expect("int"),
                p
            );
            assert_eq!(ReleasePolicy::from_annotation(Some(a)), p);
            assert_eq!(p.annotation_value(), a);
        }
        assert_eq!(ReleasePolicy::from_annotation(None), ReleasePolicy::Default);
        assert!(serde_json::from_value::<ReleasePolicy>(json!(3)).is_err());
        assert!(serde_json::from_value::<ReleasePolicy>(json!("1")).is_err());
    }

    #[test]
    fn pool_fields_are_top_level() {
        let pool: Pool = serde_json::from_value(json!({
            "apiVersion": "galaxy.k8s.io/v1alpha1", "kind": "Pool",
            "metadata": {"name": "p1", "namespace": "kube-system"},
            "size": 4, "preAllocateIP": true
        }))
        .expect("pool");
        assert_eq!(
            pool.spec,
            PoolFields {
                size: 4,
                pre_allocate_ip: true
            }
        );
        let value = serde_json::to_value(Pool::new("p2", PoolFields::default())).expect("json");
        assert_eq!(
            value,
            json!({"apiVersion": "galaxy.k8s.io/v1alpha1", "kind": "Pool",
                   "metadata": {"name": "p2"}, "size": 0, "preAllocateIP": false})
        );
    }

    #[test]
    fn crd_golden() {
        let crd = FloatingIP::crd();
        assert_eq!(
            crd.metadata.name.as_deref(),
            Some("floatingips.galaxy.k8s.io")
        );
        assert_eq!(crd.spec.scope, "Cluster");
        assert_eq!(crd.spec.names.kind, "FloatingIP");
        assert_eq!(crd.spec.names.plural, "floatingips");
        assert_eq!(crd.spec.names.singular.as_deref(), Some("floatingip"));
        assert_eq!(crd.spec.names.short_names, Some(vec!["fip".to_string()]));
        let version = &crd.spec.versions[0];
        assert_eq!(version.name, VERSION);
        assert!(version.subresources.is_none(), "FloatingIP has no status");
        let columns: Vec<_> = version
            .additional_printer_columns
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(columns, ["Key", "Policy", "Node", "Updated", "Age"]);
        let json = crd_json(&crd);
        assert_structural(&json);
        assert_described(&json, &[]);
        assert_eq!(
            schema_at(&json, "spec")["required"],
            json!(["attribute", "key", "policy", "updateTime"])
        );
        let policy = schema_at(&json, "spec.policy");
        assert_eq!(policy["type"], "integer");
        assert_eq!(policy["enum"], json!([0, 1, 2]));
        assert_eq!(
            (policy["minimum"].as_f64(), policy["maximum"].as_f64()),
            (Some(0.0), Some(2.0))
        );
        assert_eq!(schema_at(&json, "spec.updateTime")["format"], "date-time");
        assert!(
            schema_at(&json, "")
                .get("properties")
                .and_then(|p| p.get("status"))
                .is_none()
        );

        let crd = Pool::crd();
        assert_eq!(crd.metadata.name.as_deref(), Some("pools.galaxy.k8s.io"));
        assert_eq!(crd.spec.scope, "Namespaced");
        assert_eq!(crd.spec.names.kind, "Pool");
        assert_eq!(crd.spec.names.plural, "pools");
        assert!(crd.spec.names.short_names.is_none());
        let json = crd_json(&crd);
        assert_structural(&json);
        assert_described(&json, &[]);
        let root = schema_at(&json, "");
        assert!(root["properties"].get("spec").is_none(), "Pool has no spec");
        assert_eq!(root["properties"]["size"]["type"], "integer");
        assert_eq!(root["properties"]["size"]["minimum"].as_f64(), Some(0.0));
        assert_eq!(root["properties"]["preAllocateIP"]["type"], "boolean");
    }
}
