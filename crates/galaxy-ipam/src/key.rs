//! Allocation keys, byte-compatible with Galaxy's `schedulerplugin/util/utils.go`:
//!
//! | owner | key |
//! |---|---|
//! | Deployment (via ReplicaSet) | `dp_<ns>_<deployment>_<pod>` |
//! | StatefulSet | `sts_<ns>_<sts>_<pod>` |
//! | any other kind | `<lowercase kind>_<ns>_<owner>_<pod>`, e.g. `tapp_ns_app_app-1` |
//! | bare pod | `NULL_<ns>_NULL_<pod>` |
//! | with a pool annotation | `pool__<pool>_` + the key |
//!
//! A key without the pod part (`dp_<ns>_<app>_`, `pool__<pool>_`) reserves the IP for the app
//! or pool. Names never contain `_` (DNS-1123), which is what makes the keys parseable.

use std::fmt;

/// Key prefix of Deployment pods.
pub const DEPLOYMENT_PREFIX: &str = "dp_";
/// Key prefix of StatefulSet pods.
pub const STATEFULSET_PREFIX: &str = "sts_";
/// Key prefix of TApp pods.
pub const TAPP_PREFIX: &str = "tapp_";
/// Key prefix of bare pods (the app name is `NULL` too).
pub const NULL_PREFIX: &str = "NULL_";
/// The app name of bare pods.
pub const NULL_APP: &str = "NULL";
/// Prefix of pool keys: `pool__<pool>_`.
pub const POOL_PREFIX: &str = "pool__";

/// What owns a pod, as far as keys and release policies care.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum AppKind {
    /// A ReplicaSet owned pod (its Deployment is the RS name up to the last `-`).
    Deployment,
    /// A StatefulSet pod.
    StatefulSet,
    /// A TApp pod (`apps.tkestack.io`).
    TApp,
    /// Another controller kind (lowercased), e.g. a CRD workload with a scale subresource.
    Other(String),
    /// A pod without a controller owner.
    Bare,
}

impl AppKind {
    /// The key prefix of this kind, with its trailing `_`.
    pub fn prefix(&self) -> String {
        match self {
            AppKind::Deployment => DEPLOYMENT_PREFIX.into(),
            AppKind::StatefulSet => STATEFULSET_PREFIX.into(),
            AppKind::TApp => TAPP_PREFIX.into(),
            AppKind::Other(kind) => format!("{}_", kind.to_lowercase()),
            AppKind::Bare => NULL_PREFIX.into(),
        }
    }

    /// The kind of a key prefix (without its `_`).
    pub fn from_prefix(prefix: &str) -> Self {
        match prefix {
            "dp" => AppKind::Deployment,
            "sts" => AppKind::StatefulSet,
            "tapp" => AppKind::TApp,
            "NULL" => AppKind::Bare,
            other => AppKind::Other(other.to_owned()),
        }
    }

    /// The REST API's `appType` name: deployment, statefulset, tapp, pod or the lowercased kind.
    pub fn app_type(&self) -> String {
        match self {
            AppKind::Deployment => "deployment".into(),
            AppKind::StatefulSet => "statefulset".into(),
            AppKind::TApp => "tapp".into(),
            AppKind::Other(kind) => kind.to_lowercase(),
            AppKind::Bare => "pod".into(),
        }
    }

    /// The kind of a REST API `appType`.
    pub fn from_app_type(app_type: &str) -> Self {
        match app_type.to_ascii_lowercase().as_str() {
            "deployment" | "dp" => AppKind::Deployment,
            "statefulset" | "statefulsets" | "sts" => AppKind::StatefulSet,
            "tapp" => AppKind::TApp,
            "pod" | "pods" | "null" => AppKind::Bare,
            other => AppKind::Other(other.to_owned()),
        }
    }

    /// The kind of a pod controller owner reference kind.
    pub fn from_owner_kind(kind: &str) -> Self {
        match kind {
            "ReplicaSet" => AppKind::Deployment,
            "StatefulSet" => AppKind::StatefulSet,
            "TApp" => AppKind::TApp,
            other => AppKind::Other(other.to_lowercase()),
        }
    }
}

/// A parsed or built key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyObj {
    /// The shared pool (`tke.cloud.tencent.com/eni-ip-pool`), if any.
    pub pool: Option<String>,
    /// The owner kind; `None` for a pool-level key (`pool__<pool>_`).
    pub kind: Option<AppKind>,
    /// Namespace ("" for a pool-level key).
    pub namespace: String,
    /// App name (Deployment, StatefulSet... or `NULL`).
    pub app: String,
    /// Pod name ("" for an app-level key).
    pub pod: String,
}

impl KeyObj {
    /// The key of a pod.
    pub fn pod(kind: AppKind, namespace: &str, app: &str, pod: &str, pool: Option<&str>) -> Self {
        let app = if kind == AppKind::Bare { NULL_APP } else { app };
        Self {
            pool: pool.filter(|p| !p.is_empty()).map(str::to_owned),
            kind: Some(kind),
            namespace: namespace.to_owned(),
            app: app.to_owned(),
            pod: pod.to_owned(),
        }
    }

    /// The key string stored in FloatingIP `spec.key`.
    pub fn key(&self) -> String {
        let mut out = String::new();
        if let Some(pool) = &self.pool {
            out.push_str(&pool_prefix(pool));
        }
        if let Some(kind) = &self.kind {
            out.push_str(&kind.prefix());
            out.push_str(&self.namespace);
            out.push('_');
            out.push_str(&self.app);
            out.push('_');
            out.push_str(&self.pod);
        }
        out
    }

    /// The key an IP is re-keyed to when it is reserved for the app: `pool__<pool>_` when the
    /// pod uses a pool, else `<kind>_<ns>_<app>_`.
    pub fn pool_app_prefix(&self) -> String {
        match &self.pool {
            Some(pool) => pool_prefix(pool),
            None => self.app_prefix(),
        }
    }

    /// `<kind>_<ns>_<app>_` (empty for a pool-level key).
    pub fn app_prefix(&self) -> String {
        match &self.kind {
            Some(kind) => format!("{}{}_{}_", kind.prefix(), self.namespace, self.app),
            None => String::new(),
        }
    }

    /// Whether this is an app- or pool-level key (no pod).
    pub fn is_app_level(&self) -> bool {
        self.pod.is_empty()
    }

    /// Whether the owner is a Deployment.
    pub fn is_deployment(&self) -> bool {
        self.kind == Some(AppKind::Deployment)
    }

    /// `<ns>/<pod>`: the pod lock key.
    pub fn pod_ref(&self) -> String {
        format!("{}/{}", self.namespace, self.pod)
    }

    /// Parses a key. `""` (unallocated) and malformed keys are errors.
    pub fn parse(key: &str) -> Result<Self, crate::Error> {
        let bad = || crate::Error::InvalidKey {
            key: key.to_owned(),
        };
        let mut rest = key;
        let mut pool = None;
        if let Some(after) = rest.strip_prefix(POOL_PREFIX) {
            let idx = after.find('_').ok_or_else(bad)?;
            let name = &after[..idx];
            if name.is_empty() {
                return Err(bad());
            }
            pool = Some(name.to_owned());
            rest = &after[idx + 1..];
            if rest.is_empty() {
                return Ok(Self {
                    pool,
                    kind: None,
                    namespace: String::new(),
                    app: String::new(),
                    pod: String::new(),
                });
            }
        }
        let parts: Vec<&str> = rest.split('_').collect();
        if parts.len() != 4 || parts[0].is_empty() || parts[1].is_empty() || parts[2].is_empty() {
            return Err(bad());
        }
        Ok(Self {
            pool,
            kind: Some(AppKind::from_prefix(parts[0])),
            namespace: parts[1].to_owned(),
            app: parts[2].to_owned(),
            pod: parts[3].to_owned(),
        })
    }
}

impl fmt::Display for KeyObj {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// `pool__<pool>_`.
pub fn pool_prefix(pool: &str) -> String {
    format!("{POOL_PREFIX}{pool}_")
}

/// The Deployment of a ReplicaSet: its name up to the last `-`.
pub fn deployment_of_replicaset(rs: &str) -> &str {
    rs.rfind('-').map_or(rs, |i| &rs[..i])
}

/// The ordinal of a pod name (the number after the last `-`), as StatefulSets name pods.
pub fn ordinal(pod: &str) -> Option<u32> {
    let (_, n) = pod.rsplit_once('-')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    type Row<'a> = (
        AppKind,
        &'a str,
        &'a str,
        &'a str,
        Option<&'a str>,
        &'a str,
        &'a str,
    );

    #[test]
    fn keys_for_every_owner_kind_roundtrip() {
        let table: &[Row<'_>] = &[
            (
                AppKind::Deployment,
                "default",
                "nnn",
                "nnn-7df5984746-58hjm",
                None,
                "dp_default_nnn_nnn-7df5984746-58hjm",
                "dp_default_nnn_",
            ),
            (
                AppKind::StatefulSet,
                "ns",
                "web",
                "web-0",
                None,
                "sts_ns_web_web-0",
                "sts_ns_web_",
            ),
            (
                AppKind::TApp,
                "ns",
                "app",
                "app-1",
                None,
                "tapp_ns_app_app-1",
                "tapp_ns_app_",
            ),
            (
                AppKind::Other("CloneSet".into()),
                "ns",
                "cs",
                "cs-x1",
                None,
                "cloneset_ns_cs_cs-x1",
                "cloneset_ns_cs_",
            ),
            (
                AppKind::Bare,
                "ns",
                "ignored",
                "solo",
                None,
                "NULL_ns_NULL_solo",
                "NULL_ns_NULL_",
            ),
            (
                AppKind::Deployment,
                "ns",
                "app",
                "app-xyz",
                Some("p1"),
                "pool__p1_dp_ns_app_app-xyz",
                "pool__p1_",
            ),
            (
                AppKind::Bare,
                "ns",
                "",
                "solo",
                Some("p2"),
                "pool__p2_NULL_ns_NULL_solo",
                "pool__p2_",
            ),
        ];
        for (kind, ns, app, pod, pool, key, prefix) in table {
            let k = KeyObj::pod(kind.clone(), ns, app, pod, *pool);
            assert_eq!(k.key(), *key);
            assert_eq!(k.pool_app_prefix(), *prefix, "{key}");
            let parsed = KeyObj::parse(key).expect(key);
            let want_kind = match kind {
                AppKind::Other(k) => AppKind::Other(k.to_lowercase()),
                k => k.clone(),
            };
            assert_eq!(parsed.kind, Some(want_kind), "{key}");
            assert_eq!(parsed.key(), *key);
            assert_eq!(parsed.pod, *pod);
            assert_eq!(parsed.pool.as_deref(), *pool);
            assert!(!parsed.is_app_level());
        }
    }

    #[test]
    fn app_and_pool_level_keys() {
        let k = KeyObj::parse("dp_ns_app_").expect("app key");
        assert!(k.is_app_level());
        assert!(k.is_deployment());
        assert_eq!(k.app, "app");
        assert_eq!(k.key(), "dp_ns_app_");
        let k = KeyObj::parse("pool__p1_").expect("pool key");
        assert_eq!(k.pool.as_deref(), Some("p1"));
        assert!(k.kind.is_none() && k.is_app_level());
        assert_eq!(k.key(), "pool__p1_");
        let k = KeyObj::parse("pool__reserved-for-node_").expect("documented reserve key");
        assert_eq!(k.pool.as_deref(), Some("reserved-for-node"));
    }

    #[test]
    fn malformed_keys() {
        for bad in [
            "",
            "dp_ns_app",
            "dp_ns_app_pod_x",
            "pool__",
            "pool___",
            "pool__p1",
            "_ns_app_pod",
            "dp__app_pod",
        ] {
            assert!(KeyObj::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn helpers() {
        assert_eq!(deployment_of_replicaset("nnn-7df5984746"), "nnn");
        assert_eq!(deployment_of_replicaset("my-app-7df5984746"), "my-app");
        assert_eq!(deployment_of_replicaset("plain"), "plain");
        assert_eq!(ordinal("web-12"), Some(12));
        assert_eq!(ordinal("web-"), None);
        assert_eq!(ordinal("web"), None);
        assert_eq!(ordinal("web-1a"), None);
        assert_eq!(AppKind::from_app_type("StatefulSet"), AppKind::StatefulSet);
        assert_eq!(AppKind::from_owner_kind("ReplicaSet"), AppKind::Deployment);
        assert_eq!(AppKind::from_owner_kind("CloneSet").prefix(), "cloneset_");
        assert_eq!(AppKind::Bare.app_type(), "pod");
    }
}
