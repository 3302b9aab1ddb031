//! LBCF (Load Balancer Controlling Framework) custom resources: `lbcf.tkestack.io/v1beta1`
//! LoadBalancerDriver, LoadBalancer, BackendGroup, BackendRecord and `lbcf.tkestack.io/v1`
//! Bind. Wire-compatible with `tkestack/lb-controlling-framework`
//! (`pkg/apis/lbcf.tkestack.io/{v1beta1,v1}/types.go`).
//!
//! Go fields that are not `omitempty` but nil-able (slices, maps, pointers) are written as
//! `null` by the original; here they are accepted as `null` on input and omitted when empty on
//! output (equivalent for every Go client). Non-nil-able Go fields (`int32`, `bool`, `string`
//! without `omitempty`) are always serialized, as the original does.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::schema::{GO_DURATION_PATTERN, null_to_default};
use crate::duration::parse_go_duration;

/// API group of every LBCF kind.
pub const GROUP: &str = "lbcf.tkestack.io";
/// Version of LoadBalancerDriver, LoadBalancer, BackendGroup and BackendRecord.
pub const VERSION_V1BETA1: &str = "v1beta1";
/// Version of Bind.
pub const VERSION_V1: &str = "v1";
/// `apiVersion` of the v1beta1 kinds.
pub const API_VERSION_V1BETA1: &str = "lbcf.tkestack.io/v1beta1";
/// `apiVersion` of Bind.
pub const API_VERSION_V1: &str = "lbcf.tkestack.io/v1";

/// Name prefix of drivers and load balancers shared cluster-wide from `kube-system`.
pub const SYSTEM_PREFIX: &str = "lbcf-";
/// Namespace of shared (`lbcf-`-prefixed) drivers and load balancers.
pub const SYSTEM_NAMESPACE: &str = "kube-system";

/// Driver label: `"true"` (case-insensitive) marks the driver as draining.
pub const LABEL_DRIVER_DRAINING: &str = "lbcf.tkestack.io/driver-draining";
/// BackendRecord label (v1beta1): driver name.
pub const LABEL_DRIVER_NAME: &str = "lbcf.tkestack.io/lb-driver";
/// BackendRecord/BackendGroup label (v1beta1): load balancer name.
pub const LABEL_LB_NAME: &str = "lbcf.tkestack.io/lb-name";
/// BackendGroup label prefix: `name.lb.lbcf.tkestack.io/<lbName>: "True"` per load balancer.
pub const LABEL_LB_NAME_PREFIX: &str = "name.lb.lbcf.tkestack.io/";
/// BackendRecord label (v1beta1): owning BackendGroup.
pub const LABEL_GROUP_NAME: &str = "lbcf.tkestack.io/backend-group";
/// BackendRecord label (v1beta1): backend Service of a service backend.
pub const LABEL_SERVICE_NAME: &str = "lbcf.tkestack.io/backend-service";
/// BackendRecord label (v1beta1): backend pod of a pod backend.
pub const LABEL_POD_NAME: &str = "lbcf.tkestack.io/backend-pod";
/// BackendRecord label (v1beta1) defined by the original but never set.
pub const LABEL_STATIC_ADDR: &str = "lbcf.tkestack.io/backend-static-addr";
/// LoadBalancer/BackendGroup label whose presence blocks deletion.
pub const LABEL_DO_NOT_DELETE: &str = "lbcf.tkestack.io/do-not-delete";
/// BackendRecord label (Bind): driver name.
pub const LABEL_BIND_DRIVER: &str = "lbcf.tkestack.io/driver";
/// BackendRecord label (Bind): load balancer name within the Bind.
pub const LABEL_BIND_LB: &str = "lbcf.tkestack.io/lb";
/// BackendRecord label (Bind): owning Bind.
pub const LABEL_BIND_NAME: &str = "lbcf.tkestack.io/bind";
/// BackendRecord label (Bind): backend pod.
pub const LABEL_BIND_POD: &str = "lbcf.tkestack.io/pod";
/// BackendGroup annotation: `optional` skips the "load balancer must exist" admission check.
pub const ANNOTATION_VALIDATION_POLICY: &str = "lbcf.tkestack.io/validation-policy";

/// Finalizer of LoadBalancer and Bind (sic: "load-loadbalancer", as the original).
pub const FINALIZER_DELETE_LB: &str = "lbcf.tkestack.io/delete-load-loadbalancer";
/// Finalizer of BackendRecord: blocks deletion until the backend is deregistered.
pub const FINALIZER_DEREGISTER_BACKEND: &str = "lbcf.tkestack.io/deregister-backend";
/// Finalizer defined by the original for BackendGroup but never used.
pub const FINALIZER_DEREGISTER_BACKEND_GROUP: &str = "lbcf.tkestack.io/deregister-backend-group";

/// v1beta1 condition reason (sic: the original's spelling, kept for adoption).
pub const REASON_OPERATION_IN_PROGRESS: &str = "OperationInProgres";
/// v1beta1 condition reason.
pub const REASON_OPERATION_FAILED: &str = "OperationFailed";
/// v1beta1 condition reason.
pub const REASON_INVALID_RESPONSE: &str = "InvalidResponse";

/// Default webhook timeout added by the mutating webhook.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);
/// Period of `ensurePolicy: Always` when none is given.
pub const DEFAULT_ENSURE_PERIOD: Duration = Duration::from_secs(60);
/// Smallest v1beta1 `ensurePolicy.minPeriod`.
pub const MIN_ENSURE_MIN_PERIOD: Duration = Duration::from_secs(30);
/// Smallest v1 `ensurePolicy.resyncPeriodInSeconds`.
pub const MIN_RESYNC_PERIOD_SECONDS: i32 = 10;
/// Default protocol of a port selector.
pub const DEFAULT_PROTOCOL: &str = "TCP";

/// Namespace where a referenced driver or load balancer named `name` lives, seen from an object
/// in `referrer_namespace`: `lbcf-`-prefixed names live in `kube-system`, others in the
/// referrer's namespace (Go `util.NamespaceOfSharedObj`).
pub fn namespace_of_shared_object<'a>(referrer_namespace: &'a str, name: &str) -> &'a str {
    if name.starts_with(SYSTEM_PREFIX) {
        SYSTEM_NAMESPACE
    } else {
        referrer_namespace
    }
}

// ------------------------------------------------------------------------------------------
// Shared pieces

/// A Go `time.Duration` in its string form (`"15s"`, `"1m30s"`), as LBCF v1beta1 writes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, Hash)]
#[serde(transparent)]
pub struct GoDuration(pub String);

impl GoDuration {
    /// The parsed duration, `None` when the string is not a valid non-negative Go duration.
    pub fn to_std(&self) -> Option<Duration> {
        parse_go_duration(&self.0).ok()
    }

    /// Formats a duration the way Go's `Duration.String()` does for whole seconds
    /// (`"10s"`, `"1m0s"`, `"1h0m0s"`); sub-second parts are written in milliseconds.
    pub fn from_std(duration: Duration) -> Self {
        let secs = duration.as_secs();
        let millis = duration.subsec_millis();
        if secs == 0 {
            return GoDuration(if millis == 0 {
                "0s".into()
            } else {
                format!("{millis}ms")
            });
        }
        let (h, m, s) = (secs / 3600, (secs % 3600) / 60, secs % 60);
        let sec = if millis == 0 {
            format!("{s}s")
        } else {
            format!("{s}.{millis:03}s")
        };
        GoDuration(if h > 0 {
            format!("{h}h{m}m{sec}")
        } else if m > 0 {
            format!("{m}m{sec}")
        } else {
            sec
        })
    }
}

impl fmt::Display for GoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl JsonSchema for GoDuration {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> std::borrow::Cow<'static, str> {
        "GoDuration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": GO_DURATION_PATTERN,
        })
    }
}

/// Status of a condition.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Unknown.
    Unknown,
}

/// When LBCF calls the driver's ensure webhook again.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum EnsurePolicyType {
    /// Only until it succeeds once.
    IfNotSucc,
    /// Periodically, also after success.
    Always,
}

/// Ensure policy of v1beta1 objects.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnsurePolicyConfig {
    /// IfNotSucc: call the ensure webhook until it succeeds once; Always: keep calling it
    /// periodically (every minPeriod, default 1m).
    pub policy: EnsurePolicyType,

    /// Period of the Always policy as a Go duration ("30s", "1m"); at least 30s, and only
    /// allowed with Always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_period: Option<GoDuration>,
}

impl EnsurePolicyConfig {
    /// Period between ensure calls under `Always` (minPeriod, default 1m); `None` under
    /// IfNotSucc.
    pub fn period(&self) -> Option<Duration> {
        match self.policy {
            EnsurePolicyType::IfNotSucc => None,
            EnsurePolicyType::Always => Some(
                self.min_period
                    .as_ref()
                    .and_then(GoDuration::to_std)
                    .unwrap_or(DEFAULT_ENSURE_PERIOD),
            ),
        }
    }
}

/// When the backends of a group are deregistered.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum DeregPolicy {
    /// As soon as the pod is not Ready (the default).
    IfNotReady,
    /// Only when the pod is not Running.
    IfNotRunning,
    /// Ask the driver's judgePodDeregister webhook (see deregisterWebhook).
    Webhook,
}

/// What to do when the deregister webhook fails.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum DeregFailurePolicy {
    /// Deregister nothing (the default).
    DoNothing,
    /// Fall back to IfNotReady.
    IfNotReady,
    /// Fall back to IfNotRunning.
    IfNotRunning,
}

/// The driver consulted by the Webhook deregister policy.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeregisterWebhookSpec {
    /// Name of the LoadBalancerDriver whose judgePodDeregister webhook decides which not-ready
    /// pods are deregistered.
    pub driver_name: String,

    /// What to do when the webhook fails: DoNothing (default), IfNotReady or IfNotRunning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_policy: Option<DeregFailurePolicy>,
}

/// Pods selected by label.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelectPodByLabel {
    /// Labels the pods must carry (all of them); must not be empty.
    #[serde(default, deserialize_with = "null_to_default")]
    pub selector: BTreeMap<String, String>,

    /// Names of pods excluded although they match.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub except: Vec<String>,
}

/// Port of a v1beta1 backend: a Service port (service backends) or a container port (pod
/// backends).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PortSelector {
    /// Deprecated: use port. Folded into port by the mutating webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port_number: Option<i32>,

    /// Port number (1-65535): the Service port for service backends, the container port for pod
    /// backends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Protocol, TCP (default) or UDP. v1beta1 admission requires upper case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([Tt][Cc][Pp]|[Uu][Dd][Pp])$"))]
    pub protocol: Option<String>,
}

impl PortSelector {
    /// `port`, else the deprecated `portNumber`, else 0 (Go `GetPort`).
    pub fn effective_port(&self) -> i32 {
        match (self.port, self.port_number) {
            (Some(p), _) if p > 0 => p,
            (_, Some(p)) => p,
            _ => 0,
        }
    }

    /// The protocol in upper case, TCP when unset.
    pub fn effective_protocol(&self) -> String {
        self.protocol
            .as_deref()
            .filter(|p| !p.is_empty())
            .unwrap_or(DEFAULT_PROTOCOL)
            .to_ascii_uppercase()
    }
}

// ------------------------------------------------------------------------------------------
// LoadBalancerDriver

/// Kind of driver.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum DriverType {
    /// An HTTP server implementing the LBCF webhook specification.
    Webhook,
}

/// A load balancer driver: the HTTP server LBCF calls to create load balancers and register
/// backends.
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lbcf.tkestack.io",
    version = "v1beta1",
    kind = "LoadBalancerDriver",
    plural = "loadbalancerdrivers",
    singular = "loadbalancerdriver",
    shortname = "driver",
    category = "lbcf",
    namespaced,
    status = "LoadBalancerDriverStatus",
    derive = "PartialEq",
    doc = "LoadBalancerDriver (LBCF) registers a webhook server that implements load-balancer operations. Drivers in kube-system must be named lbcf-* and are usable from every namespace; others must not be.",
    printcolumn(
        name = "Type",
        type_ = "string",
        json_path = ".spec.driverType",
        description = "Driver type"
    ),
    printcolumn(
        name = "URL",
        type_ = "string",
        json_path = ".spec.url",
        description = "Base URL of the driver's webhooks"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status",
        description = "Whether the driver was accepted"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerDriverSpec {
    /// Driver type; must be Webhook. Immutable.
    pub driver_type: DriverType,

    /// Base URL of the webhook server; each webhook is called at <url>/<webhook name>, e.g.
    /// http://lbcf-clb-driver.kube-system.svc/ensureBackend. Immutable.
    #[schemars(length(min = 1))]
    pub url: String,

    /// Whether the driver accepts calls with dryRun=true while LBCF runs in dry-run mode.
    /// Always serialized; default false.
    #[serde(default)]
    pub accept_dry_run_call: bool,

    /// Per-webhook settings (timeouts). Every known webhook is added with a 10s timeout by the
    /// mutating webhook when missing.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub webhooks: Vec<WebhookConfig>,
}

/// Settings of one driver webhook.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookConfig {
    /// Webhook name, e.g. createLoadBalancer, ensureBackendRegistered.
    pub name: String,

    /// Call timeout as a Go duration ("10s"); more than 0 and at most 1m. Default 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<GoDuration>,
}

/// Observed state of a driver.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerDriverStatus {
    /// Conditions of the driver (type Accepted).
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<LoadBalancerDriverCondition>,
}

/// Condition types of a driver.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum LoadBalancerDriverConditionType {
    /// The driver was validated and can be used.
    Accepted,
}

/// A driver condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerDriverCondition {
    /// Condition type: Accepted.
    #[serde(rename = "type")]
    pub type_: LoadBalancerDriverConditionType,

    /// True, False or Unknown.
    pub status: ConditionStatus,

    /// Last time the condition changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// One-word CamelCase reason of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Human-readable detail of the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// ------------------------------------------------------------------------------------------
// LoadBalancer

/// A load balancer managed through a driver.
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "lbcf.tkestack.io",
    version = "v1beta1",
    kind = "LoadBalancer",
    plural = "loadbalancers",
    singular = "loadbalancer",
    shortname = "lb",
    category = "lbcf",
    namespaced,
    status = "LoadBalancerStatus",
    derive = "PartialEq",
    doc = "LoadBalancer (LBCF) is a load balancer created or adopted through a LoadBalancerDriver.",
    printcolumn(
        name = "Driver",
        type_ = "string",
        json_path = ".spec.lbDriver",
        description = "Driver managing the load balancer"
    ),
    printcolumn(
        name = "Created",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Created\")].status",
        description = "Whether the load balancer was created"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"AttributesSynced\")].status",
        description = "Whether the attributes are synced",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerSpec {
    /// Name of the LoadBalancerDriver (lbcf-* names resolve in kube-system). Immutable.
    #[schemars(length(min = 1))]
    pub lb_driver: String,

    /// Identity of the load balancer, defined by the driver (e.g. loadBalancerID,
    /// listenerPort, listenerProtocol). Immutable.
    #[serde(default, deserialize_with = "null_to_default")]
    pub lb_spec: BTreeMap<String, String>,

    /// Mutable driver-defined attributes of the load balancer.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub attributes: BTreeMap<String, String>,

    /// Namespaces allowed to use this load balancer ("*" = all); only for lbcf-* load
    /// balancers in kube-system. Empty: only its own namespace.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub scope: Vec<String>,

    /// When to call ensureLoadBalancer again (default IfNotSucc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure_policy: Option<EnsurePolicyConfig>,
}

/// Observed state of a load balancer.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerStatus {
    /// Information returned by createLoadBalancer (a copy of lbSpec when the driver returns
    /// none); passed to every backend webhook.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub lb_info: BTreeMap<String, String>,

    /// Conditions (types Created, AttributesSynced).
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<LoadBalancerCondition>,
}

/// Condition types of a load balancer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum LoadBalancerConditionType {
    /// createLoadBalancer succeeded.
    Created,
    /// The attributes were applied by ensureLoadBalancer.
    AttributesSynced,
}

/// A load balancer condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancerCondition {
    /// Condition type: Created or AttributesSynced.
    #[serde(rename = "type")]
    pub type_: LoadBalancerConditionType,

    /// True, False or Unknown.
    pub status: ConditionStatus,

    /// Last time the condition changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Reason of the last transition: OperationInProgres (sic), OperationFailed or
    /// InvalidResponse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Human-readable detail, e.g. the driver's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

// ------------------------------------------------------------------------------------------
// BackendGroup

/// A group of backends (pods, NodePort Service or static addresses) registered to load
/// balancers.
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lbcf.tkestack.io",
    version = "v1beta1",
    kind = "BackendGroup",
    plural = "backendgroups",
    singular = "backendgroup",
    shortname = "bg",
    category = "lbcf",
    namespaced,
    status = "BackendGroupStatus",
    derive = "PartialEq",
    doc = "BackendGroup (LBCF) registers pods, a NodePort Service or static addresses as backends of load balancers.",
    printcolumn(
        name = "LoadBalancers",
        type_ = "string",
        json_path = ".spec.loadBalancers",
        description = "Load balancers the backends are registered to"
    ),
    printcolumn(
        name = "Backends",
        type_ = "integer",
        json_path = ".status.backends",
        description = "Expected backend records"
    ),
    printcolumn(
        name = "Registered",
        type_ = "integer",
        json_path = ".status.registeredBackends",
        description = "Registered backend records"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackendGroupSpec {
    /// Deprecated: use loadBalancers. Folded into loadBalancers by the mutating webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_name: Option<String>,

    /// Names of the LoadBalancers (same namespace, or lbcf-* in kube-system) the backends are
    /// registered to.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub load_balancers: Vec<String>,

    /// When backends are deregistered: IfNotReady (default), IfNotRunning or Webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_policy: Option<DeregPolicy>,

    /// The driver consulted when deregisterPolicy is Webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_webhook: Option<DeregisterWebhookSpec>,

    /// Backends from a NodePort Service: one per selected node. Exactly one of service, pods
    /// and static must be set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceBackend>,

    /// Backends from pods: one per Ready pod and port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pods: Option<PodBackend>,

    /// Static backend addresses such as "1.1.1.1:8080", passed to the driver as they are.
    #[serde(
        rename = "static",
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub static_addrs: Vec<String>,

    /// Driver-defined parameters of every backend (e.g. weight).
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub parameters: BTreeMap<String, String>,

    /// When to call ensureBackendRegistered again (default IfNotSucc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure_policy: Option<EnsurePolicyConfig>,
}

impl BackendGroupSpec {
    /// `loadBalancers`, else the deprecated `lbName` (Go `GetLoadBalancers`).
    pub fn load_balancer_names(&self) -> Vec<&str> {
        if !self.load_balancers.is_empty() {
            self.load_balancers.iter().map(String::as_str).collect()
        } else {
            self.lb_name.as_deref().into_iter().collect()
        }
    }

    /// The deregister policy, IfNotReady when unset.
    pub fn effective_deregister_policy(&self) -> DeregPolicy {
        self.deregister_policy.unwrap_or(DeregPolicy::IfNotReady)
    }
}

/// Backends taken from a NodePort Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackend {
    /// Name of the Service (type NodePort) in the BackendGroup's namespace.
    pub name: String,

    /// The Service port (port and protocol) whose nodePort is registered.
    #[serde(default)]
    pub port: PortSelector,

    /// Only nodes with all these labels are registered; all nodes when empty.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub node_selector: BTreeMap<String, String>,
}

/// Backends taken from pods.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodBackend {
    /// Deprecated: use ports. Folded into ports by the mutating webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<PortSelector>,

    /// Container ports registered for every selected pod.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub ports: Vec<PortSelector>,

    /// Select pods by label. Mutually exclusive with byName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_label: Option<SelectPodByLabel>,

    /// Select pods by name. Mutually exclusive with byLabel.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub by_name: Vec<String>,
}

impl PodBackend {
    /// `ports`, else the deprecated `port` (Go `GetPortSelectors`).
    pub fn port_selectors(&self) -> Vec<&PortSelector> {
        if !self.ports.is_empty() {
            self.ports.iter().collect()
        } else {
            self.port.iter().collect()
        }
    }
}

/// Observed state of a backend group.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendGroupStatus {
    /// Number of backend records the group should have. Always serialized.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub backends: i32,

    /// Number of backend records whose Registered condition is True. Always serialized.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub registered_backends: i32,
}

// ------------------------------------------------------------------------------------------
// BackendRecord

/// One backend on one load balancer (and port); created and deleted by LBCF, not by users.
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lbcf.tkestack.io",
    version = "v1beta1",
    kind = "BackendRecord",
    plural = "backendrecords",
    singular = "backendrecord",
    shortname = "br",
    category = "lbcf",
    namespaced,
    status = "BackendRecordStatus",
    derive = "PartialEq",
    doc = "BackendRecord (LBCF) is one backend registered to one load balancer, managed by LBCF; deleting it deregisters the backend.",
    printcolumn(
        name = "LoadBalancer",
        type_ = "string",
        json_path = ".spec.lbName",
        description = "Load balancer of the backend"
    ),
    printcolumn(
        name = "Address",
        type_ = "string",
        json_path = ".status.backendAddr",
        description = "Backend address generated by the driver"
    ),
    printcolumn(
        name = "Registered",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Registered\")].status",
        description = "Whether the backend is registered"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BackendRecordSpec {
    /// Name of the load balancer (LoadBalancer, or load balancer of the owning Bind).
    pub lb_name: String,

    /// Name of the driver.
    pub lb_driver: String,

    /// Copy of the load balancer's status.lbInfo.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub lb_info: BTreeMap<String, String>,

    /// Copy of the load balancer's attributes.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub lb_attributes: BTreeMap<String, String>,

    /// Copy of the group's parameters.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub parameters: BTreeMap<String, String>,

    /// Set for a pod backend. Exactly one of podBackend, serviceBackend, staticAddr is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_backend: Option<PodBackendRecord>,

    /// Set for a Service (NodePort) backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_backend: Option<ServiceBackendRecord>,

    /// Set for a static backend: the address, used as backendAddr as it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub static_addr: Option<String>,

    /// Copy of the group's ensure policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure_policy: Option<EnsurePolicyConfig>,
}

/// The pod of a pod backend record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodBackendRecord {
    /// Pod name.
    pub name: String,

    /// Container port and protocol.
    #[serde(default)]
    pub port: PortSelector,
}

/// The node port of a Service backend record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBackendRecord {
    /// Service name.
    pub name: String,

    /// Service port and protocol.
    #[serde(default)]
    pub port: PortSelector,

    /// The Service port's nodePort. Always serialized.
    #[serde(default)]
    #[schemars(range(min = 0, max = 65535))]
    pub node_port: i32,

    /// The node whose address is registered. Always serialized.
    #[serde(default, deserialize_with = "null_to_default")]
    pub node_name: String,
}

/// Observed state of a backend record.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRecordStatus {
    /// Backend address returned by generateBackendAddr (static address for static backends).
    /// Always serialized.
    #[serde(default, deserialize_with = "null_to_default")]
    pub backend_addr: String,

    /// Information returned by the last successful ensureBackendRegistered.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub injected_info: BTreeMap<String, String>,

    /// Conditions (type Registered).
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<BackendRecordCondition>,
}

/// Condition types of a backend record.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum BackendRecordConditionType {
    /// The backend is registered to the load balancer.
    Registered,
}

/// A backend record condition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendRecordCondition {
    /// Condition type: Registered.
    #[serde(rename = "type")]
    pub type_: BackendRecordConditionType,

    /// True, False or Unknown.
    pub status: ConditionStatus,

    /// Last time the condition changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Reason of the last transition: OperationInProgres (sic), OperationFailed or
    /// InvalidResponse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Human-readable detail. Always serialized (not omitempty in the original).
    #[serde(default, deserialize_with = "null_to_default")]
    pub message: String,
}

// ------------------------------------------------------------------------------------------
// Bind (v1)

/// Load balancers and the pods registered to them, in one object (LBCF 1.4+).
#[allow(clippy::duplicated_attributes)] // repeated keys of kube(printcolumn(...))
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "lbcf.tkestack.io",
    version = "v1",
    kind = "Bind",
    plural = "binds",
    singular = "bind",
    category = "lbcf",
    namespaced,
    status = "BindStatus",
    derive = "PartialEq",
    doc = "Bind (LBCF v1) declares load balancers and the pods registered to them in one object.",
    printcolumn(
        name = "LoadBalancers",
        type_ = "string",
        json_path = ".spec.loadBalancers[*].name",
        description = "Names of the load balancers"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BindSpec {
    /// The load balancers (at least one); names are DNS labels unique within the Bind.
    #[serde(deserialize_with = "null_to_default")]
    #[schemars(length(min = 1))]
    pub load_balancers: Vec<TargetLoadBalancer>,

    /// The pods registered to every load balancer.
    pub pods: BindPodBackend,

    /// Driver-defined parameters of every backend (e.g. weight).
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub parameters: BTreeMap<String, String>,

    /// When backends are deregistered: IfNotReady (default), IfNotRunning or Webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_policy: Option<DeregPolicy>,

    /// The driver consulted when deregisterPolicy is Webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deregister_webhook: Option<DeregisterWebhookSpec>,

    /// When to call the ensure webhooks again (default IfNotSucc).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ensure_policy: Option<BindEnsurePolicyConfig>,
}

/// One load balancer of a Bind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetLoadBalancer {
    /// Name of the load balancer within the Bind (DNS label).
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,

    /// Name of the LoadBalancerDriver (lbcf-* names resolve in kube-system).
    #[schemars(length(min = 1))]
    pub driver: String,

    /// Identity of the load balancer, defined by the driver (like a LoadBalancer's lbSpec).
    #[serde(default, deserialize_with = "null_to_default")]
    pub spec: BTreeMap<String, String>,

    /// Mutable driver-defined attributes; changing them calls ensureLoadBalancer.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub attributes: BTreeMap<String, String>,
}

/// The pods of a Bind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindPodBackend {
    /// Container ports registered for every selected pod; at least one.
    #[serde(default, deserialize_with = "null_to_default")]
    pub ports: Vec<BindPortSelector>,

    /// Select pods by label. Mutually exclusive with byName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by_label: Option<SelectPodByLabel>,

    /// Select pods by name. Mutually exclusive with byLabel.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub by_name: Vec<String>,
}

/// A container port of a Bind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindPortSelector {
    /// Container port number (1-65535).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// Protocol, TCP (default) or UDP, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([Tt][Cc][Pp]|[Uu][Dd][Pp])$"))]
    pub protocol: Option<String>,
}

/// Ensure policy of a Bind.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindEnsurePolicyConfig {
    /// IfNotSucc: call the ensure webhooks until they succeed once; Always: keep calling them
    /// every resyncPeriodInSeconds.
    pub policy: EnsurePolicyType,

    /// Period of the Always policy in seconds (at least 10; default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10))]
    pub resync_period_in_seconds: Option<i32>,
}

impl BindEnsurePolicyConfig {
    /// The equivalent v1beta1 policy written into the Bind's BackendRecords.
    pub fn to_v1beta1(&self) -> EnsurePolicyConfig {
        EnsurePolicyConfig {
            policy: self.policy,
            min_period: self
                .resync_period_in_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(|s| GoDuration::from_std(Duration::from_secs(s))),
        }
    }
}

/// Observed state of a Bind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BindStatus {
    /// State of each load balancer (also of removed ones until they are deleted).
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub load_balancer_statuses: Vec<TargetLoadBalancerStatus>,
}

/// State of one load balancer of a Bind.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetLoadBalancerStatus {
    /// Name of the load balancer within the Bind.
    pub name: String,

    /// Driver of the load balancer.
    pub driver: String,

    /// Information returned by createLoadBalancer.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub lb_info: BTreeMap<String, String>,

    /// The attributes last applied successfully.
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub last_synced_attributes: BTreeMap<String, String>,

    /// Set (RFC 3339) when the load balancer was removed from the spec or the Bind is deleted
    /// and deleteLoadBalancer is pending.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_timestamp: Option<String>,

    /// Time of the next retry when a condition is not True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Time>,

    /// Conditions (types Created, Ready).
    #[serde(
        default,
        deserialize_with = "null_to_default",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub conditions: Vec<TargetLoadBalancerCondition>,
}

/// Condition types of a Bind load balancer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum BindConditionType {
    /// createLoadBalancer succeeded.
    Created,
    /// The load balancer is ensured with the current attributes.
    Ready,
}

/// Condition reasons of a Bind load balancer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[schemars(description = "")]
pub enum BindConditionReason {
    /// createLoadBalancer is running.
    Creating,
    /// createLoadBalancer failed.
    CreateFailed,
    /// ensureLoadBalancer is running.
    Ensuring,
    /// ensureLoadBalancer failed.
    EnsureFailed,
    /// The driver could not be called.
    WebhookError,
    /// The driver's answer was invalid.
    InvalidResponse,
}

/// A condition of a Bind load balancer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetLoadBalancerCondition {
    /// Condition type: Created or Ready.
    #[serde(rename = "type")]
    pub type_: BindConditionType,

    /// True, False or Unknown.
    pub status: ConditionStatus,

    /// Last time the condition changed status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,

    /// Reason of the last transition: Creating, CreateFailed, Ensuring, EnsureFailed,
    /// WebhookError or InvalidResponse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<BindConditionReason>,

    /// Human-readable detail, e.g. the driver's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
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
    fn seed_examples_deserialize_and_roundtrip() {
        let (lb, original): (LoadBalancer, _) = load_fixture("lbcf-lb-existing.yaml");
        assert_eq!(lb.spec.lb_driver, "lbcf-clb-driver");
        assert_eq!(lb.spec.lb_spec["loadBalancerID"], "lb-7wf394rv");
        assert_eq!(
            lb.spec.ensure_policy.as_ref().map(|p| p.policy),
            Some(EnsurePolicyType::Always)
        );
        assert_eq!(
            lb.spec
                .ensure_policy
                .as_ref()
                .and_then(EnsurePolicyConfig::period),
            Some(DEFAULT_ENSURE_PERIOD)
        );
        roundtrip_exact(&lb, &original, &[]);

        let (lb, original): (LoadBalancer, _) = load_fixture("lbcf-lb-new.yaml");
        assert_eq!(lb.spec.lb_spec["listenerProtocol"], "HTTP");
        roundtrip_exact(&lb, &original, &[]);

        let (bg, original): (BackendGroup, _) = load_fixture("lbcf-backendgroup.yaml");
        assert_eq!(bg.spec.load_balancer_names(), ["test-clb-load-balancer"]);
        let service = bg.spec.service.as_ref().expect("service");
        assert_eq!(service.port.effective_port(), 80);
        assert_eq!(service.port.effective_protocol(), "TCP");
        assert_eq!(bg.spec.parameters["weight"], "66");
        assert_eq!(
            bg.spec.effective_deregister_policy(),
            DeregPolicy::IfNotReady
        );
        roundtrip_exact(&bg, &original, &[]);

        let (driver, original): (LoadBalancerDriver, _) = load_fixture("lbcf-driver.yaml");
        assert_eq!(driver.spec.driver_type, DriverType::Webhook);
        assert_eq!(driver.spec.url, "http://lbcf-clb-driver.kube-system.svc");
        // acceptDryRunCall is a plain Go bool: always written.
        roundtrip_exact(&driver, &original, &["/spec/acceptDryRunCall"]);
    }

    #[test]
    fn go_nulls_are_accepted() {
        let bg: BackendGroup = serde_json::from_value(json!({
            "apiVersion": "lbcf.tkestack.io/v1beta1", "kind": "BackendGroup",
            "metadata": {"name": "bg", "namespace": "default"},
            "spec": {"lbName": null, "loadBalancers": ["a", "b"], "deregisterPolicy": null,
                     "deregisterWebhook": null,
                     "pods": {"port": null, "ports": [{"port": 80, "protocol": "TCP"}],
                              "byLabel": {"selector": {"app": "web"}, "except": null}},
                     "parameters": null},
            "status": {"backends": 2, "registeredBackends": 1}
        }))
        .expect("bg");
        assert_eq!(bg.spec.load_balancer_names(), ["a", "b"]);
        let pods = bg.spec.pods.as_ref().expect("pods");
        assert_eq!(pods.port_selectors()[0].effective_port(), 80);

        let br: BackendRecord = serde_json::from_value(json!({
            "apiVersion": "lbcf.tkestack.io/v1beta1", "kind": "BackendRecord",
            "metadata": {"name": "0123abcd", "namespace": "default"},
            "spec": {"lbName": "a", "lbDriver": "lbcf-clb-driver", "lbInfo": {"id": "lb-1"},
                     "lbAttributes": null, "parameters": null,
                     "podBackend": {"name": "web-0", "port": {"port": 80, "protocol": "TCP"}},
                     "ensurePolicy": {"policy": "Always", "minPeriod": "1m30s"}},
            "status": {"backendAddr": "10.0.0.1:80", "injectedInfo": null,
                       "conditions": [{"type": "Registered", "status": "True",
                                       "lastTransitionTime": null, "message": ""}]}
        }))
        .expect("br");
        assert_eq!(
            br.spec
                .ensure_policy
                .as_ref()
                .and_then(EnsurePolicyConfig::period),
            Some(Duration::from_secs(90))
        );
        let status = br.status.as_ref().expect("status");
        assert_eq!(
            status.conditions[0].type_,
            BackendRecordConditionType::Registered
        );
        let out = serde_json::to_value(&br).expect("json");
        assert_eq!(out["status"]["conditions"][0]["message"], "");
        assert!(out["spec"].get("lbAttributes").is_none());
    }

    #[test]
    fn bind_roundtrip_and_policy_conversion() {
        let value = json!({
            "apiVersion": "lbcf.tkestack.io/v1", "kind": "Bind",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "loadBalancers": [{"name": "clb", "driver": "lbcf-clb-driver",
                                   "spec": {"loadBalancerID": "lb-1"}, "attributes": {"a": "b"}}],
                "pods": {"ports": [{"port": 80, "protocol": "tcp"}],
                         "byLabel": {"selector": {"app": "web"}}},
                "parameters": {"weight": "10"},
                "deregisterPolicy": "IfNotRunning",
                "ensurePolicy": {"policy": "Always", "resyncPeriodInSeconds": 90}
            },
            "status": {"loadBalancerStatuses": [{
                "name": "clb", "driver": "lbcf-clb-driver", "lbInfo": {"id": "lb-1"},
                "lastSyncedAttributes": {"a": "b"}, "retryAfter": "2024-01-01T00:00:10Z",
                "conditions": [{"type": "Created", "status": "True", "reason": "Creating",
                                "lastTransitionTime": "2024-01-01T00:00:00Z"}]}]}
        });
        let bind: Bind = serde_json::from_value(value.clone()).expect("bind");
        assert_eq!(serde_json::to_value(&bind).expect("json"), value);
        let v1beta1 = bind
            .spec
            .ensure_policy
            .as_ref()
            .map(BindEnsurePolicyConfig::to_v1beta1)
            .expect("policy");
        assert_eq!(v1beta1.min_period, Some(GoDuration("1m30s".into())));
        assert_eq!(v1beta1.period(), Some(Duration::from_secs(90)));
    }

    #[test]
    fn go_duration_format() {
        assert_eq!(GoDuration::from_std(Duration::from_secs(10)).0, "10s");
        assert_eq!(GoDuration::from_std(Duration::from_secs(60)).0, "1m0s");
        assert_eq!(GoDuration::from_std(Duration::from_secs(3600)).0, "1h0m0s");
        assert_eq!(
            GoDuration::from_std(Duration::from_millis(1500)).0,
            "1.500s"
        );
        assert_eq!(GoDuration::from_std(Duration::ZERO).0, "0s");
        for d in [0, 1, 59, 61, 3599, 3601, 86400] {
            let g = GoDuration::from_std(Duration::from_secs(d));
            assert_eq!(g.to_std(), Some(Duration::from_secs(d)), "{g}");
        }
    }

    #[test]
    fn shared_object_namespace_rule() {
        assert_eq!(
            namespace_of_shared_object("team-a", "lbcf-clb"),
            "kube-system"
        );
        assert_eq!(namespace_of_shared_object("team-a", "my-lb"), "team-a");
    }

    #[test]
    fn crd_golden() {
        let cases = [
            (
                LoadBalancerDriver::crd(),
                "loadbalancerdrivers",
                "loadbalancerdriver",
                Some("driver"),
                "v1beta1",
            ),
            (
                LoadBalancer::crd(),
                "loadbalancers",
                "loadbalancer",
                Some("lb"),
                "v1beta1",
            ),
            (
                BackendGroup::crd(),
                "backendgroups",
                "backendgroup",
                Some("bg"),
                "v1beta1",
            ),
            (
                BackendRecord::crd(),
                "backendrecords",
                "backendrecord",
                Some("br"),
                "v1beta1",
            ),
            (Bind::crd(), "binds", "bind", None, "v1"),
        ];
        for (crd, plural, singular, short, version) in cases {
            assert_eq!(crd.spec.group, GROUP);
            assert_eq!(
                crd.metadata.name.as_deref(),
                Some(format!("{plural}.{GROUP}").as_str())
            );
            assert_eq!(crd.spec.scope, "Namespaced");
            assert_eq!(crd.spec.names.plural, plural);
            assert_eq!(crd.spec.names.singular.as_deref(), Some(singular));
            assert_eq!(
                crd.spec.names.short_names,
                short.map(|s| vec![s.to_string()])
            );
            assert_eq!(crd.spec.names.categories, Some(vec!["lbcf".to_string()]));
            let v = &crd.spec.versions[0];
            assert_eq!(v.name, version);
            assert!(
                v.subresources
                    .as_ref()
                    .and_then(|s| s.status.as_ref())
                    .is_some()
            );
            assert!(
                v.additional_printer_columns
                    .as_ref()
                    .is_some_and(|c| c.len() >= 2)
            );
            let json = crd_json(&crd);
            assert_structural(&json);
            assert_described(&json, &[]);
        }

        let json = crd_json(&LoadBalancerDriver::crd());
        assert_eq!(
            schema_at(&json, "spec.driverType")["enum"],
            json!(["Webhook"])
        );
        assert_eq!(
            schema_at(&json, "spec")["required"],
            json!(["driverType", "url"])
        );
        let timeout = &schema_at(&json, "spec.webhooks")["items"]["properties"]["timeout"];
        assert_eq!(timeout["pattern"], GO_DURATION_PATTERN);
        assert_eq!(
            schema_at(&json, "status.conditions")["items"]["properties"]["type"]["enum"],
            json!(["Accepted"])
        );

        let json = crd_json(&LoadBalancer::crd());
        assert_eq!(
            schema_at(&json, "spec.ensurePolicy.policy")["enum"],
            json!(["IfNotSucc", "Always"])
        );
        assert_eq!(
            schema_at(&json, "spec.ensurePolicy.minPeriod")["pattern"],
            GO_DURATION_PATTERN
        );
        assert_eq!(
            schema_at(&json, "spec.lbSpec")["additionalProperties"]["type"],
            "string"
        );

        let json = crd_json(&BackendGroup::crd());
        assert_eq!(
            schema_at(&json, "spec.deregisterPolicy")["enum"],
            json!(["IfNotReady", "IfNotRunning", "Webhook"])
        );
        assert_eq!(
            schema_at(&json, "spec.deregisterWebhook.failurePolicy")["enum"],
            json!(["DoNothing", "IfNotReady", "IfNotRunning"])
        );
        let port = schema_at(&json, "spec.service.port.port");
        assert_eq!(
            (port["minimum"].as_f64(), port["maximum"].as_f64()),
            (Some(1.0), Some(65535.0))
        );
        assert!(schema_at(&json, "spec.static")["items"]["type"] == "string");
        assert_eq!(
            schema_at(&json, "status.backends")["minimum"].as_f64(),
            Some(0.0)
        );
        assert!(
            schema_at(&json, "status")
                .get("properties")
                .and_then(|p| p.get("registeredBackends"))
                .is_some()
        );

        let json = crd_json(&Bind::crd());
        assert_eq!(
            schema_at(&json, "spec")["required"],
            json!(["loadBalancers", "pods"])
        );
        assert_eq!(schema_at(&json, "spec.loadBalancers")["minItems"], 1);
        assert_eq!(
            schema_at(&json, "spec.ensurePolicy.resyncPeriodInSeconds")["minimum"].as_f64(),
            Some(10.0)
        );
        assert_eq!(
            schema_at(&json, "spec.pods.ports")["items"]["required"],
            json!(["port"])
        );
        let cond = &schema_at(&json, "status.loadBalancerStatuses")["items"]["properties"]["conditions"]
            ["items"]["properties"];
        assert_eq!(cond["type"]["enum"], json!(["Created", "Ready"]));
        assert_eq!(
            cond["reason"]["enum"],
            json!([
                "Creating",
                "CreateFailed",
                "Ensuring",
                "EnsureFailed",
                "WebhookError",
                "InvalidResponse"
            ])
        );
    }
}
