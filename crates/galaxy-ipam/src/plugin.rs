//! Filter, bind and release against the API server.
//!
//! Decisions are made in memory ([`Ipam`]) under a per-pod lock (and, for Deployments and
//! pools with a non-default policy, a per-app lock); no global lock is held across API
//! calls. The FloatingIP CR is the durable record: a new IP is only handed out once its CR has
//! been created, and a create that finds the name taken means someone else owns the IP (its
//! record is adopted and another IP is tried).

use addon_common::{k8s_openapi, kube};
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    hash::{DefaultHasher, Hash, Hasher},
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use addon_common::k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{Node, Pod},
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use addon_common::kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use addon_common::{
    api::{
        TApp,
        galaxy::{
            ANNOTATION_CNI_ARGS, FloatingIP, FloatingIPAttribute, FloatingIPSpec, POOL_NAMESPACE,
            Pool, ReleasePolicy,
        },
    },
    events::EventRecorder,
    guard::{self, DeserializeGuard},
};
use serde_json::json;

use crate::{
    Error, Result,
    allocator::{Allocation, Ipam, Target, ip_string, parse_ip},
    config::{IpRange, Net, PoolConfig},
    extender::Nodes,
    key::{AppKind, KeyObj},
    metrics::Metrics,
    pod::{
        IpInfo, cni_args, cni_args_with_ipinfos, controller_of, key_of, policy_of,
        requested_ranges, wants_eni_ip,
    },
    policy::{self, Quota, Release, WorkloadFacts},
};

/// Label marking a FloatingIP borrowed by a rolling-update surge pod.
pub const LABEL_BORROWED: &str = "galaxy-ipam.tkestack.io/borrowed";

/// Failure reasons of the filter, as Galaxy words them.
pub const REASON_NO_FIP_LEFT: &str = "FloatingIPPlugin:NoFIPLeft";
/// The node has no InternalIP (or is unknown).
pub const REASON_UNKNOWN_NODE: &str = "FloatingIPPlugin:UnknowNode";
/// The node's IP is in no configured node subnet.
pub const REASON_NO_FIP_CONFIG_NODE: &str = "FloatingIPPlugin:NoFIPConfigNode";

/// Where the extender and the API find the active plugin: set while this replica leads and
/// has recovered its state, empty otherwise (standby replicas answer with an error).
#[derive(Clone, Default)]
pub struct Slot(Arc<RwLock<Option<Arc<Plugin>>>>);

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let active = self.0.read().unwrap_or_else(|p| p.into_inner()).is_some();
        f.debug_struct("Slot").field("active", &active).finish()
    }
}

impl Slot {
    /// The active plugin.
    pub fn get(&self) -> Option<Arc<Plugin>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Sets or clears the active plugin.
    pub fn set(&self, plugin: Option<Arc<Plugin>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = plugin;
    }
}

/// Hashed async locks (Galaxy's `podLockPool`/`dpLockPool`, without the global IPAM lock).
pub struct Locks(Vec<tokio::sync::Mutex<()>>);

impl Locks {
    fn new(slots: usize) -> Self {
        Self((0..slots).map(|_| tokio::sync::Mutex::new(())).collect())
    }

    /// Locks `key`'s slot; a wait over 500 ms is logged, as Galaxy does.
    pub async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let slot = &self.0[(h.finish() % self.0.len() as u64) as usize];
        let start = Instant::now();
        let guard = slot.lock().await;
        if start.elapsed() > Duration::from_millis(500) {
            tracing::warn!(key, waited = ?start.elapsed(), "slow lock");
        }
        guard
    }
}

/// What the pod watcher knows about a pod requesting eni-ip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodState {
    /// The pod UID.
    pub uid: String,
    /// Its allocation key.
    pub key: String,
    /// Succeeded or Failed.
    pub finished: bool,
    /// Its release policy.
    pub policy: ReleasePolicy,
    /// Its node ("" before binding).
    pub node: String,
    /// The IPs of its `common.ipinfos` annotation.
    pub ips: Vec<u32>,
}

impl PodState {
    /// The state of a pod.
    pub fn of(pod: &Pod) -> Self {
        Self {
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            key: key_of(pod).key(),
            finished: crate::pod::is_finished(pod),
            policy: policy_of(pod),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .unwrap_or_default(),
            ips: crate::pod::annotated_ips(pod),
        }
    }
}

/// Tunables.
#[derive(Clone, Debug)]
pub struct Options {
    /// Interval between binding attempts.
    pub bind_retry: Duration,
    /// Total time to try the binding.
    pub bind_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bind_retry: Duration::from_millis(500),
            bind_timeout: Duration::from_secs(3),
        }
    }
}

/// The active IPAM of the leader.
pub struct Plugin {
    /// The allocator.
    pub ipam: Ipam,
    client: Client,
    /// Metrics.
    pub metrics: Metrics,
    pod_locks: Locks,
    app_locks: Locks,
    node_ips: Mutex<HashMap<String, u32>>,
    owner_kinds: Mutex<HashMap<String, (String, String)>>,
    /// Pods requesting eni-ip (`ns/name` → state), filled by the pod watcher.
    pub pods: Mutex<HashMap<String, PodState>>,
    events: Option<EventRecorder>,
    options: Options,
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

fn now_string() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

/// The in-memory allocation a FloatingIP describes.
pub fn allocation_from_fip(fip: &FloatingIP) -> Allocation {
    let attr = fip.spec.parsed_attribute().unwrap_or_default();
    Allocation {
        key: fip.spec.key.clone(),
        policy: fip.spec.policy,
        node: attr.node_name,
        uid: attr.uid,
        reserved: fip.is_reserved(),
        borrowed: fip
            .metadata
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(LABEL_BORROWED)),
        update_time: fip.spec.update_time.0.to_string(),
    }
}

fn fip_spec(a: &Allocation) -> FloatingIPSpec {
    FloatingIPSpec {
        key: a.key.clone(),
        attribute: FloatingIPAttribute {
            node_name: a.node.clone(),
            uid: a.uid.clone(),
        }
        .to_attribute_string(),
        policy: a.policy,
        subnet: None,
        update_time: now(),
    }
}

enum Created {
    Yes,
    /// The name was taken: the holder its FloatingIP records.
    Taken(Box<Allocation>),
}

/// The holder recorded for an IP whose FloatingIP exists but cannot be decoded (a record the
/// Go original left with a wrong-typed field): reserved, so the IP is neither handed out nor
/// released until the record is fixed.
pub fn unreadable_holder() -> Allocation {
    Allocation {
        policy: ReleasePolicy::Never,
        reserved: true,
        update_time: now_string(),
        ..Allocation::default()
    }
}

/// Whether an allocation is [`unreadable_holder`]'s.
pub fn is_unreadable_holder(a: &Allocation) -> bool {
    a.reserved && a.key.is_empty()
}

/// The FloatingIP of a guarded list item, watch event or read; one that does not decode is
/// reported (log, and a Warning Event `InvalidObject` when there is a recorder) and `None`.
pub async fn decoded_fip<'a>(
    guarded: &'a DeserializeGuard<FloatingIP>,
    events: Option<&EventRecorder>,
) -> Option<&'a FloatingIP> {
    match (events, &guarded.0) {
        (Some(events), _) => guard::decoded(guarded, events).await,
        (None, Ok(fip)) => Some(fip),
        (None, Err(invalid)) => {
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error,
                "cannot decode the FloatingIP; skipping it until it is edited");
            None
        }
    }
}

/// The outcome of a filter.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FilterOutcome {
    /// Nodes that pass.
    pub passed: BTreeSet<String>,
    /// Failed nodes and why.
    pub failed: BTreeMap<String, String>,
}

impl Plugin {
    /// A plugin over `config` with nothing allocated (call [`crate::controllers::recover`]).
    pub fn new(
        client: Client,
        config: PoolConfig,
        metrics: Metrics,
        events: Option<EventRecorder>,
        options: Options,
    ) -> Self {
        Self {
            ipam: Ipam::new(config),
            client,
            metrics,
            pod_locks: Locks::new(4096),
            app_locks: Locks::new(1024),
            node_ips: Mutex::default(),
            owner_kinds: Mutex::default(),
            pods: Mutex::default(),
            events,
            options,
        }
    }

    /// The API client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The Event recorder, if any.
    pub fn events(&self) -> Option<&EventRecorder> {
        self.events.as_ref()
    }

    fn fips(&self) -> Api<FloatingIP> {
        Api::all(self.client.clone())
    }

    /// Records a node's InternalIP (from the node watch or a request).
    pub fn set_node_ip(&self, node: &str, ip: Option<u32>) {
        let mut m = self.node_ips.lock().unwrap_or_else(|p| p.into_inner());
        match ip {
            Some(ip) => {
                m.insert(node.to_owned(), ip);
            }
            None => {
                m.remove(node);
            }
        }
    }

    async fn node_ip(&self, node: &str) -> Result<Option<u32>> {
        if let Some(ip) = self
            .node_ips
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
        {
            return Ok(Some(*ip));
        }
        let api: Api<Node> = Api::all(self.client.clone());
        let found = api.get_opt(node).await.map_err(|source| Error::ReadNode {
            node: node.to_owned(),
            source,
        })?;
        let Some(n) = found else {
            return Ok(None);
        };
        let ip = node_internal_ip(&n);
        self.set_node_ip(node, ip);
        Ok(ip)
    }

    /// Creates the FloatingIP of a new allocation.
    async fn create_fip(&self, ip: u32, a: &Allocation) -> Result<Created> {
        let mut fip = FloatingIP::new(&ip_string(ip), fip_spec(a));
        if a.borrowed {
            fip.metadata.labels = Some([(LABEL_BORROWED.to_owned(), "true".to_owned())].into());
        }
        match self.fips().create(&PostParams::default(), &fip).await {
            Ok(_) => Ok(Created::Yes),
            Err(e) if crate::api_code(&e) == Some(409) => {
                let guarded: DeserializeGuard<FloatingIP> = Api::all(self.client.clone())
                    .get(&ip_string(ip))
                    .await
                    .map_err(|source| Error::ReadFloatingIp {
                        ip: ip_string(ip),
                        source,
                    })?;
                let Some(existing) = decoded_fip(&guarded, self.events()).await else {
                    return Ok(Created::Taken(Box::new(unreadable_holder())));
                };
                if existing.spec.key.is_empty() && !existing.is_reserved() {
                    // A record of nothing (older Galaxy versions): take it over.
                    self.patch_fip(ip, a).await?;
                    return Ok(Created::Yes);
                }
                Ok(Created::Taken(Box::new(allocation_from_fip(existing))))
            }
            Err(source) => Err(Error::CreateFloatingIp {
                ip: ip_string(ip),
                source,
            }),
        }
    }

    async fn patch_fip(&self, ip: u32, a: &Allocation) -> Result<FloatingIP> {
        let spec = fip_spec(a);
        let borrowed = if a.borrowed {
            json!("true")
        } else {
            json!(null)
        };
        let patch = json!({
            "metadata": {"labels": {LABEL_BORROWED: borrowed}},
            "spec": {"key": spec.key, "attribute": spec.attribute, "policy": spec.policy,
                     "updateTime": spec.update_time},
        });
        self.fips()
            .patch(
                &ip_string(ip),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| Error::UpdateFloatingIp {
                ip: ip_string(ip),
                source,
            })
    }

    /// Rewrites a FloatingIP's spec (and borrowed label) from an allocation.
    async fn update_fip(&self, ip: u32, a: &Allocation) -> Result<()> {
        match self.patch_fip(ip, a).await {
            Ok(_) => Ok(()),
            // The record vanished (deleted by hand): write it again.
            Err(Error::UpdateFloatingIp { source, .. })
                if crate::api_code(&source) == Some(404) =>
            {
                match self.create_fip(ip, a).await? {
                    Created::Yes => Ok(()),
                    Created::Taken(_) => Err(Error::FloatingIpRecreated { ip: ip_string(ip) }),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn delete_fip(&self, ip: u32) -> Result<()> {
        match self
            .fips()
            .delete(&ip_string(ip), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if crate::api_code(&e) == Some(404) => Ok(()),
            Err(source) => Err(Error::DeleteFloatingIp {
                ip: ip_string(ip),
                source,
            }),
        }
    }

    /// Allocates a new IP matching `target` and records it; `None` when none is left.
    pub async fn allocate_persist(
        &self,
        target: &Target,
        alloc: Allocation,
    ) -> Result<Option<u32>> {
        let mut api_time = Duration::ZERO;
        self.allocate_persist_timed(target, alloc, &mut api_time)
            .await
    }

    /// [`Plugin::allocate_persist`], adding the time spent in API calls to `api_time`.
    async fn allocate_persist_timed(
        &self,
        target: &Target,
        alloc: Allocation,
        api_time: &mut Duration,
    ) -> Result<Option<u32>> {
        for _ in 0..32 {
            let Some(ip) = self.ipam.allocate(target, alloc.clone()) else {
                return Ok(None);
            };
            let api_start = Instant::now();
            let created = self.create_fip(ip, &alloc).await;
            *api_time += api_start.elapsed();
            match created {
                Ok(Created::Yes) => return Ok(Some(ip)),
                Ok(Created::Taken(theirs)) => {
                    let theirs = *theirs;
                    tracing::warn!(ip = %ip_string(ip), owner = %theirs.key, "FloatingIP already exists: adopting it and trying another IP");
                    if self.ipam.assign(ip, &alloc.key, theirs).is_err() {
                        self.ipam.release(ip, &alloc.key);
                    }
                }
                Err(e) => {
                    self.ipam.release(ip, &alloc.key);
                    return Err(e);
                }
            }
        }
        Err(Error::TooManyConflicts { key: alloc.key })
    }

    /// Learns the GroupVersionKind of a lowercased owner kind (for replicas of CRD workloads).
    fn learn_owner(&self, pod: &Pod) {
        if let Some((api_version, kind, _)) = controller_of(pod) {
            self.owner_kinds
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(kind.to_lowercase(), (api_version, kind));
        }
    }

    /// `spec.replicas` of the key's workload (or the Pool's size); `Ok(None)` when it does not
    /// exist; an error when it cannot be told (retry later).
    pub async fn replicas(&self, key: &KeyObj) -> Result<Option<i64>> {
        if let Some(pool) = &key.pool {
            let api: Api<Pool> = Api::namespaced(self.client.clone(), POOL_NAMESPACE);
            return Ok(read_workload(&api, pool, pool)
                .await?
                .map(|p| p.spec.size)
                .filter(|s| *s > 0));
        }
        let ns = &key.namespace;
        let name = format!("{ns}/{}", key.app);
        match &key.kind {
            None | Some(AppKind::Bare) => Ok(None),
            Some(AppKind::Deployment) => {
                let api: Api<Deployment> = Api::namespaced(self.client.clone(), ns);
                Ok(read_workload(&api, &key.app, &name)
                    .await?
                    .map(|d| i64::from(d.spec.and_then(|s| s.replicas).unwrap_or(1))))
            }
            Some(AppKind::StatefulSet) => {
                let api: Api<StatefulSet> = Api::namespaced(self.client.clone(), ns);
                Ok(read_workload(&api, &key.app, &name)
                    .await?
                    .map(|d| i64::from(d.spec.and_then(|s| s.replicas).unwrap_or(1))))
            }
            Some(AppKind::TApp) => {
                let api: Api<TApp> = Api::namespaced(self.client.clone(), ns);
                Ok(read_workload(&api, &key.app, &name)
                    .await?
                    .map(|t| i64::from(t.spec.replicas)))
            }
            Some(AppKind::Other(kind)) => {
                let gvk = self
                    .owner_kinds
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(kind)
                    .cloned();
                let Some((api_version, kind)) = gvk else {
                    return Err(Error::UnknownWorkloadKind { kind: kind.clone() });
                };
                let (group, version) = api_version
                    .split_once('/')
                    .map_or(("", api_version.as_str()), |(g, v)| (g, v));
                let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
                let (ar, _) = kube::discovery::pinned_kind(&self.client, &gvk)
                    .await
                    .map_err(|source| Error::Discovery {
                        api_version: api_version.clone(),
                        kind: kind.clone(),
                        source,
                    })?;
                let api: Api<kube::api::DynamicObject> =
                    Api::namespaced_with(self.client.clone(), ns, &ar);
                match api.get_scale(&key.app).await {
                    Ok(scale) => Ok(Some(i64::from(
                        scale.spec.and_then(|s| s.replicas).unwrap_or(0),
                    ))),
                    Err(e) if crate::api_code(&e) == Some(404) => Ok(None),
                    Err(source) => Err(Error::ReadWorkload { kind, name, source }),
                }
            }
        }
    }

    /// (replicas, maxSurge while a rollout is in progress) of a Deployment.
    async fn deployment_limits(&self, key: &KeyObj) -> Result<(Option<i64>, i64)> {
        if key.pool.is_some() {
            return Ok((self.replicas(key).await?, 0));
        }
        let api: Api<Deployment> = Api::namespaced(self.client.clone(), &key.namespace);
        let name = format!("{}/{}", key.namespace, key.app);
        let Some(d) = read_workload(&api, &key.app, &name).await? else {
            return Ok((None, 0));
        };
        let spec = d.spec.unwrap_or_default();
        let replicas = i64::from(spec.replicas.unwrap_or(1));
        let strategy = spec.strategy.unwrap_or_default();
        if strategy
            .type_
            .as_deref()
            .is_some_and(|t| t != "RollingUpdate")
        {
            return Ok((Some(replicas), 0));
        }
        let status = d.status.unwrap_or_default();
        let rollout = policy::Rollout {
            generation: d.metadata.generation.unwrap_or(0),
            observed_generation: status.observed_generation.unwrap_or(0),
            replicas,
            updated_replicas: i64::from(status.updated_replicas.unwrap_or(0)),
            status_replicas: i64::from(status.replicas.unwrap_or(0)),
        };
        if !rollout.in_progress() {
            return Ok((Some(replicas), 0));
        }
        let surge = strategy
            .rolling_update
            .and_then(|r| r.max_surge)
            .map(|s| match s {
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i) => i.to_string(),
                k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s) => s,
            });
        Ok((
            Some(replicas),
            policy::resolve_max_surge(surge.as_deref(), replicas),
        ))
    }

    fn node_subnets_of_ip(&self, config: &PoolConfig, ip: u32) -> BTreeSet<Net> {
        config
            .pool_of_ip(ip)
            .map(|i| config.pools[i].node_subnets.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The scheduler's filter: which candidate nodes can give the pod its IP(s).
    pub async fn filter(&self, pod: &Pod, nodes: &Nodes) -> Result<FilterOutcome> {
        let names = nodes.names();
        if !wants_eni_ip(pod) {
            return Ok(FilterOutcome {
                passed: names.into_iter().collect(),
                failed: BTreeMap::new(),
            });
        }
        self.learn_owner(pod);
        let key = key_of(pod);
        let policy = policy_of(pod);
        let (_, ranges) = requested(pod, &key, policy)?;
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let config = self.ipam.config();

        // Candidate nodes → node subnets.
        let mut out = FilterOutcome::default();
        let mut node_subnet: BTreeMap<String, Net> = BTreeMap::new();
        for name in &names {
            let ip = match nodes.internal_ip(name) {
                Some(ip) => {
                    let ip = ip.as_deref().and_then(parse_ip);
                    self.set_node_ip(name, ip);
                    ip
                }
                None => self.node_ip(name).await?,
            };
            match ip {
                None => {
                    out.failed.insert(name.clone(), REASON_UNKNOWN_NODE.into());
                }
                Some(ip) => match config.node_subnet(ip) {
                    None => {
                        out.failed
                            .insert(name.clone(), REASON_NO_FIP_CONFIG_NODE.into());
                    }
                    Some(n) => {
                        node_subnet.insert(name.clone(), n);
                    }
                },
            }
        }
        let candidate_subnets: Vec<Net> = {
            let mut seen = BTreeSet::new();
            names
                .iter()
                .filter_map(|n| node_subnet.get(n))
                .filter(|n| seen.insert(**n))
                .copied()
                .collect()
        };

        let _pod_guard = self.pod_locks.lock(&key.pod_ref()).await;
        let start = Instant::now();
        let slots: Vec<Option<Vec<IpRange>>> = match &ranges {
            None => vec![None],
            Some(r) => r.iter().cloned().map(Some).collect(),
        };
        let held = self.ipam.by_key(&key.key());
        let mut allowed: Option<BTreeSet<Net>> = None;
        let mut missing = false;
        let mut used: BTreeSet<u32> = BTreeSet::new();
        for slot in &slots {
            let hit = held.iter().find(|(ip, _)| {
                !used.contains(ip)
                    && slot
                        .as_ref()
                        .is_none_or(|rs| rs.iter().any(|r| r.contains(*ip)))
            });
            let set = match hit {
                Some((ip, _)) => {
                    used.insert(*ip);
                    self.node_subnets_of_ip(&config, *ip)
                }
                None => {
                    missing = true;
                    self.ipam.subnets_with_free(slot.as_deref())
                }
            };
            allowed = Some(match allowed {
                None => set,
                Some(a) => a.intersection(&set).copied().collect(),
            });
        }
        let mut allowed = allowed.unwrap_or_default();
        self.metrics
            .decision
            .with_label_values(&["filter"])
            .observe(start.elapsed().as_secs_f64());

        let deployment_like = key.pool.is_some() || key.is_deployment();
        if missing && deployment_like && policy != ReleasePolicy::Default {
            match self
                .filter_app(&key, policy, &uid, &config, &candidate_subnets)
                .await?
            {
                Ok(set) => allowed = set,
                Err(reason) => {
                    for name in node_subnet.keys() {
                        out.failed.insert(name.clone(), reason.clone());
                    }
                    return Ok(out);
                }
            }
        }
        for (name, subnet) in node_subnet {
            if allowed.contains(&subnet) {
                out.passed.insert(name);
            } else {
                out.failed.insert(name, REASON_NO_FIP_LEFT.into());
            }
        }
        Ok(out)
    }

    /// Filter for a Deployment/pool pod with a non-default policy and no IP yet: claim an IP
    /// reserved for the app, or allocate a new one within the quota, during filter (so that
    /// concurrent scheduling cycles cannot over-allocate the app). Returns the allowed node
    /// subnets, or the reason every node fails.
    async fn filter_app(
        &self,
        key: &KeyObj,
        policy: ReleasePolicy,
        uid: &str,
        config: &PoolConfig,
        candidates: &[Net],
    ) -> Result<std::result::Result<BTreeSet<Net>, String>> {
        let prefix = key.pool_app_prefix();
        let _app_guard = self.app_locks.lock(&prefix).await;
        let app_ips = self.ipam.by_prefix(&prefix);
        let mine = Allocation {
            key: key.key(),
            policy,
            node: String::new(),
            uid: uid.to_owned(),
            update_time: now_string(),
            ..Allocation::default()
        };
        // 1. an IP reserved for the app, usable on a candidate node
        for (ip, a) in app_ips
            .iter()
            .filter(|(_, a)| a.key == prefix && !a.reserved)
        {
            let subnets = self.node_subnets_of_ip(config, *ip);
            if !candidates.iter().any(|c| subnets.contains(c)) {
                continue;
            }
            let claimed = Allocation {
                borrowed: a.borrowed,
                ..mine.clone()
            };
            if self.ipam.assign(*ip, &prefix, claimed.clone()).is_err() {
                continue;
            }
            if let Err(e) = self.update_fip(*ip, &claimed).await {
                let _ = self.ipam.assign(*ip, &claimed.key, a.clone());
                return Err(e);
            }
            tracing::info!(ip = %ip_string(*ip), key = %claimed.key, "reserved IP claimed");
            return Ok(Ok(subnets));
        }
        if app_ips.iter().any(|(_, a)| a.key == prefix && !a.reserved) {
            return Ok(Err(format!(
                "{REASON_NO_FIP_LEFT}: the IPs reserved for {prefix} are not usable on any candidate node"
            )));
        }
        // 2. a new IP within the quota
        let (limit, surge) = self.deployment_limits(key).await?;
        let what = match &key.pool {
            Some(p) => format!("pool {p}"),
            None => format!("deployment {}/{}", key.namespace, key.app),
        };
        let borrowed = match policy::deployment_quota(&what, app_ips.len(), limit, surge) {
            Quota::Allocate => false,
            Quota::Borrow => true,
            Quota::Wait(reason) => return Ok(Err(reason)),
        };
        let alloc = Allocation { borrowed, ..mine };
        for subnet in candidates {
            let target = Target {
                node_subnet: Some(*subnet),
                ranges: None,
            };
            if let Some(ip) = self.allocate_persist(&target, alloc.clone()).await? {
                tracing::info!(ip = %ip_string(ip), key = %alloc.key, borrowed, "IP allocated during filter");
                return Ok(Ok(self.node_subnets_of_ip(config, ip)));
            }
        }
        Ok(Err(REASON_NO_FIP_LEFT.into()))
    }

    /// The scheduler's bind: give the pod its IP(s) on `node` and bind it, writing the CNI
    /// args through the Binding's annotations.
    pub async fn bind(&self, namespace: &str, name: &str, uid: &str, node: &str) -> Result<()> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod_ref = || format!("{namespace}/{name}");
        let pod = pods.get(name).await.map_err(|source| Error::ReadPod {
            pod: pod_ref(),
            source,
        })?;
        let pod_uid = pod.metadata.uid.clone().unwrap_or_default();
        if !uid.is_empty() && !pod_uid.is_empty() && uid != pod_uid {
            return Err(Error::PodUidMismatch {
                pod: pod_ref(),
                actual: pod_uid,
                expected: uid.to_owned(),
            });
        }
        if !wants_eni_ip(&pod) {
            return Err(Error::NoEniIpRequested { pod: pod_ref() });
        }
        self.learn_owner(&pod);
        let key = key_of(&pod);
        let policy = policy_of(&pod);
        let (args, ranges) = requested(&pod, &key, policy)?;
        let node_ip = self
            .node_ip(node)
            .await?
            .ok_or_else(|| Error::UnknownNode {
                node: node.to_owned(),
            })?;

        let _pod_guard = self.pod_locks.lock(&key.pod_ref()).await;
        let start = Instant::now();
        let config = self.ipam.config();
        let subnet = config
            .node_subnet(node_ip)
            .ok_or_else(|| Error::NodeOutsidePools {
                node: node.to_owned(),
            })?;
        let slots: Vec<Option<Vec<IpRange>>> = match &ranges {
            None => vec![None],
            Some(r) => r.iter().cloned().map(Some).collect(),
        };
        let held = self.ipam.by_key(&key.key());
        let me = Allocation {
            key: key.key(),
            policy,
            node: node.to_owned(),
            uid: pod_uid.clone(),
            update_time: now_string(),
            ..Allocation::default()
        };
        // Reuse what the key holds (one IP per slot), else allocate in the node's subnet.
        // The decision time excludes the FloatingIP writes (`api_time`).
        let mut api_time = Duration::ZERO;
        let mut chosen: Vec<u32> = Vec::new();
        let mut fresh: Vec<u32> = Vec::new();
        let mut result: Result<()> = Ok(());
        for slot in &slots {
            let hit = held.iter().find(|(ip, _)| {
                !chosen.contains(ip)
                    && slot
                        .as_ref()
                        .is_none_or(|rs| rs.iter().any(|r| r.contains(*ip)))
            });
            let taken = match hit {
                Some((ip, cur)) => {
                    let reused = self
                        .reuse_for_bind(*ip, cur, &me, &config, subnet, &key, &mut api_time)
                        .await;
                    reused.map(|()| (*ip, false))
                }
                None => {
                    let target = Target {
                        node_subnet: Some(subnet),
                        ranges: slot.clone(),
                    };
                    match self
                        .allocate_persist_timed(&target, me.clone(), &mut api_time)
                        .await
                    {
                        Ok(Some(ip)) => Ok((ip, true)),
                        Ok(None) => Err(Error::NoIpLeft {
                            key: key.key(),
                            node: node.to_owned(),
                            subnet,
                        }),
                        Err(e) => Err(e),
                    }
                }
            };
            match taken {
                Ok((ip, new)) => {
                    chosen.push(ip);
                    if new {
                        fresh.push(ip);
                    }
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        self.metrics
            .decision
            .with_label_values(&["bind"])
            .observe(start.elapsed().saturating_sub(api_time).as_secs_f64());
        if let Err(e) = result {
            // All or nothing: give back what this call allocated.
            for ip in fresh {
                if self.delete_fip(ip).await.is_ok() {
                    self.ipam.release(ip, &me.key);
                }
            }
            return Err(e);
        }
        let infos: Vec<IpInfo> = chosen
            .iter()
            .filter_map(|ip| {
                config
                    .pool_of_ip(*ip)
                    .map(|i| IpInfo::new(*ip, &config.pools[i]))
            })
            .collect();
        let annotation = cni_args_with_ipinfos(&args, &infos);
        let binding = json!({
            "apiVersion": "v1", "kind": "Binding",
            "metadata": {"name": name, "namespace": namespace, "uid": pod_uid,
                         "annotations": {ANNOTATION_CNI_ARGS: annotation}},
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        if let Err(source) = self.post_binding(&pods, name, &binding).await {
            if crate::api_code(&source) == Some(404) {
                tracing::info!(pod = %pod_ref(), "pod deleted while binding; releasing its IPs");
                drop(_pod_guard);
                let _ = self
                    .release_key(&key, Some(&pod_uid), "pod deleted while binding")
                    .await;
            }
            return Err(Error::BindPod {
                pod: pod_ref(),
                node: node.to_owned(),
                source,
            });
        }
        tracing::info!(pod = %format!("{namespace}/{name}"), %node, ips = ?chosen.iter().map(|ip| ip_string(*ip)).collect::<Vec<_>>(), "bound");
        Ok(())
    }

    /// Bind's reuse of an IP the key holds (`cur`): rewritten for this pod (`me`), if the IP
    /// can be used on the node's `subnet`.
    #[allow(clippy::too_many_arguments)]
    async fn reuse_for_bind(
        &self,
        ip: u32,
        cur: &Allocation,
        me: &Allocation,
        config: &PoolConfig,
        subnet: Net,
        key: &KeyObj,
        api_time: &mut Duration,
    ) -> Result<()> {
        if !self.node_subnets_of_ip(config, ip).contains(&subnet) {
            return Err(Error::HeldIpNotOnNode {
                ip: ip_string(ip),
                key: key.key(),
                node: me.node.clone(),
            });
        }
        if !cur.uid.is_empty() && cur.uid != me.uid {
            // Names are unique: the pod that held this key under another UID is gone.
            tracing::info!(ip = %ip_string(ip), key = %key, old_uid = %cur.uid, "reusing the IP of a deleted pod of the same name");
        }
        let updated = Allocation {
            borrowed: cur.borrowed,
            ..me.clone()
        };
        if self.ipam.assign(ip, &cur.key, updated.clone()).is_err() {
            return Err(Error::IpChangedHands { ip: ip_string(ip) });
        }
        let api_start = Instant::now();
        let written = self.update_fip(ip, &updated).await;
        *api_time += api_start.elapsed();
        if let Err(e) = written {
            let _ = self.ipam.assign(ip, &updated.key, cur.clone());
            return Err(e);
        }
        Ok(())
    }

    /// POSTs the pod's Binding, retrying other failures than NotFound (the pod is gone) and
    /// Conflict (already bound) every `bind_retry` until `bind_timeout`.
    async fn post_binding(
        &self,
        pods: &Api<Pod>,
        name: &str,
        binding: &serde_json::Value,
    ) -> kube::Result<()> {
        let deadline = Instant::now() + self.options.bind_timeout;
        loop {
            let posted = pods
                .create_subresource::<serde_json::Value, serde_json::Value>(
                    "binding",
                    name,
                    &PostParams::default(),
                    binding,
                )
                .await;
            match posted {
                Ok(_) => return Ok(()),
                Err(e)
                    if matches!(crate::api_code(&e), Some(404 | 409))
                        || Instant::now() >= deadline =>
                {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, pod = name, "binding failed; retrying");
                    tokio::time::sleep(self.options.bind_retry).await;
                }
            }
        }
    }

    /// Nodes the preemptor may use: with a non-default policy and IPs already held, only nodes
    /// whose subnet can use them.
    pub async fn preempt_nodes(&self, pod: &Pod, nodes: &[String]) -> Result<BTreeSet<String>> {
        let mut out: BTreeSet<String> = nodes.iter().cloned().collect();
        if !wants_eni_ip(pod) || policy_of(pod) == ReleasePolicy::Default {
            return Ok(out);
        }
        let key = key_of(pod);
        let held = self.ipam.by_key(&key.key());
        if held.is_empty() {
            return Ok(out);
        }
        let config = self.ipam.config();
        let mut allowed: Option<BTreeSet<Net>> = None;
        for (ip, _) in &held {
            let s = self.node_subnets_of_ip(&config, *ip);
            allowed = Some(match allowed {
                None => s,
                Some(a) => a.intersection(&s).copied().collect(),
            });
        }
        let allowed = allowed.unwrap_or_default();
        for node in nodes {
            let ok = match self.node_ip(node).await? {
                Some(ip) => config.node_subnet(ip).is_some_and(|s| allowed.contains(&s)),
                None => false,
            };
            if !ok {
                out.remove(node);
            }
        }
        Ok(out)
    }

    /// Applies the release policy to every IP of `key` (a pod that was deleted or finished).
    /// With `uid`, IPs held under another (newer) UID are left alone.
    pub async fn release_key(&self, key: &KeyObj, uid: Option<&str>, why: &str) -> Result<()> {
        let _pod_guard = self.pod_locks.lock(&key.pod_ref()).await;
        self.release_key_locked(key, uid, why).await
    }

    async fn release_key_locked(&self, key: &KeyObj, uid: Option<&str>, why: &str) -> Result<()> {
        let held = self.ipam.by_key(&key.key());
        for (ip, a) in held {
            if a.reserved {
                continue;
            }
            if let Some(uid) = uid
                && !a.uid.is_empty()
                && a.uid != uid
            {
                continue;
            }
            self.release_ip(key, ip, &a, why).await?;
        }
        Ok(())
    }

    async fn release_ip(&self, key: &KeyObj, ip: u32, a: &Allocation, why: &str) -> Result<()> {
        let deployment_like = key.pool.is_some() || key.is_deployment();
        let needs_facts = a.policy != ReleasePolicy::Default;
        let prefix = key.pool_app_prefix();
        let _app_guard = if deployment_like && needs_facts {
            Some(self.app_locks.lock(&prefix).await)
        } else {
            None
        };
        let mut facts = WorkloadFacts::default();
        if needs_facts {
            facts.replicas = self.replicas(key).await?;
            if deployment_like {
                let app = self.ipam.by_prefix(&prefix);
                facts.app_ips = app.len();
                facts.borrowed = app.iter().filter(|(_, a)| a.borrowed).count();
            }
        }
        let decision = policy::on_release(a.policy, key, &facts);
        let label = match &decision {
            Release::Free => "free",
            Release::ReserveForApp(_) => "reserve_for_app",
            Release::KeepForPod => "keep_for_pod",
            Release::FreeSurplus => "free_surplus",
        };
        tracing::info!(ip = %ip_string(ip), key = %a.key, policy = %a.policy, decision = label, why, "releasing");
        match decision {
            Release::Free => self.free(ip, &a.key).await?,
            Release::FreeSurplus => {
                self.free(ip, &a.key).await?;
                // The app is back to its size before the surge: a borrowed IP becomes its own
                // (unless the IP just freed was the borrowed one).
                if a.borrowed {
                    // nothing else to do
                } else if let Some((bip, b)) = self
                    .ipam
                    .by_prefix(&prefix)
                    .into_iter()
                    .find(|(_, b)| b.borrowed)
                {
                    let kept = Allocation {
                        borrowed: false,
                        ..b.clone()
                    };
                    self.update_fip(bip, &kept).await?;
                    let _ = self.ipam.assign(bip, &b.key, kept);
                }
            }
            Release::ReserveForApp(app_key) => {
                let reserved = Allocation {
                    key: app_key,
                    policy: a.policy,
                    update_time: now_string(),
                    borrowed: a.borrowed,
                    ..Allocation::default()
                };
                self.update_fip(ip, &reserved).await?;
                let _ = self.ipam.assign(ip, &a.key, reserved);
            }
            Release::KeepForPod if a.node.is_empty() && a.uid.is_empty() => {}
            Release::KeepForPod => {
                let kept = Allocation {
                    node: String::new(),
                    uid: String::new(),
                    update_time: now_string(),
                    ..a.clone()
                };
                self.update_fip(ip, &kept).await?;
                let _ = self.ipam.assign(ip, &a.key, kept);
            }
        }
        self.metrics.releases.with_label_values(&[label]).inc();
        Ok(())
    }

    /// Frees an IP: the record first, then memory (so nobody can take the IP while its old
    /// record still exists).
    pub async fn free(&self, ip: u32, key: &str) -> Result<()> {
        self.delete_fip(ip).await?;
        self.ipam.release(ip, key);
        Ok(())
    }

    /// Releases one IP through the REST API: only when `releasable` and the key matches,
    /// under the pod lock.
    pub async fn api_release(&self, ip: u32, expect_key: &str) -> Result<()> {
        let key = KeyObj::parse(expect_key).ok();
        let lock_key = key.as_ref().map(KeyObj::pod_ref).unwrap_or_default();
        let _guard = self.pod_locks.lock(&lock_key).await;
        let Some(a) = self.ipam.get(ip) else {
            return Err(Error::NotAllocated { ip: ip_string(ip) });
        };
        if a.key != expect_key {
            return Err(Error::HeldByOther {
                ip: ip_string(ip),
                holder: a.key,
                expected: expect_key.to_owned(),
            });
        }
        if !self.releasable(&a) {
            return Err(Error::NotReleasable { ip: ip_string(ip) });
        }
        self.free(ip, &a.key).await
    }

    /// Whether the REST API may release an allocation: the pod is gone, or the key is
    /// app-level; reserved IPs never.
    pub fn releasable(&self, a: &Allocation) -> bool {
        if a.reserved {
            return false;
        }
        match KeyObj::parse(&a.key) {
            Ok(k) if k.is_app_level() => true,
            Ok(k) => {
                let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
                match pods.get(&k.pod_ref()) {
                    None => true,
                    Some(s) => s.finished || (!a.uid.is_empty() && s.uid != a.uid),
                }
            }
            Err(_) => true,
        }
    }

    /// The status the REST API shows for an allocation: Running, Deleted, or the phase.
    pub fn status_of(&self, a: &Allocation) -> String {
        match KeyObj::parse(&a.key) {
            Ok(k) if !k.is_app_level() => {
                let pods = self.pods.lock().unwrap_or_else(|p| p.into_inner());
                match pods.get(&k.pod_ref()) {
                    None => "Deleted".into(),
                    Some(s) if s.finished => "Finished".into(),
                    Some(_) => "Running".into(),
                }
            }
            _ => "Unknown".into(),
        }
    }

    /// Allocates IPs to `pool__<name>_` until the pool holds `size`; returns the pool's size
    /// afterwards.
    pub async fn preallocate_pool(&self, name: &str, size: usize) -> Result<usize> {
        let prefix = crate::key::pool_prefix(name);
        let _guard = self.app_locks.lock(&prefix).await;
        let mut have = self.ipam.by_prefix(&prefix).len();
        while have < size {
            let a = Allocation {
                key: prefix.clone(),
                policy: ReleasePolicy::Never,
                update_time: now_string(),
                ..Allocation::default()
            };
            match self.allocate_persist(&Target::default(), a).await? {
                Some(_) => have += 1,
                None => break,
            }
        }
        Ok(have)
    }

    /// Takes the pod lock of `key` (resync, recovery).
    pub async fn lock_pod(&self, key: &KeyObj) -> tokio::sync::MutexGuard<'_, ()> {
        self.pod_locks.lock(&key.pod_ref()).await
    }

    /// Releases under an already-held pod lock (resync).
    pub async fn release_key_with_lock(
        &self,
        key: &KeyObj,
        uid: Option<&str>,
        why: &str,
    ) -> Result<()> {
        self.release_key_locked(key, uid, why).await
    }

    /// Records an allocation found only in a running pod's annotation (Galaxy's
    /// `syncPodIPsIntoDB`): the IP is adopted for the pod's key and its FloatingIP created.
    pub async fn adopt_annotated(&self, pod: &PodState, ip: u32) -> Result<bool> {
        let key = KeyObj::parse(&pod.key)?;
        let _guard = self.pod_locks.lock(&key.pod_ref()).await;
        if let Some(cur) = self.ipam.get(ip) {
            if cur.key != pod.key {
                tracing::warn!(ip = %ip_string(ip), holder = %cur.key, pod = %key.pod_ref(), "annotated IP conflicts with another allocation");
            }
            return Ok(false);
        }
        let a = Allocation {
            key: pod.key.clone(),
            policy: pod.policy,
            node: pod.node.clone(),
            uid: pod.uid.clone(),
            update_time: now_string(),
            ..Allocation::default()
        };
        if self.ipam.assign(ip, "", a.clone()).is_err() && self.ipam.adopt(ip, a.clone()).is_err() {
            return Ok(false);
        }
        match self.create_fip(ip, &a).await {
            Ok(Created::Yes) => {
                tracing::info!(ip = %ip_string(ip), key = %a.key, "recovered an IP recorded only in the pod annotation");
                Ok(true)
            }
            Ok(Created::Taken(theirs)) => {
                let _ = self.ipam.assign(ip, &a.key, *theirs);
                Ok(false)
            }
            Err(e) => {
                self.ipam.release(ip, &a.key);
                Err(e)
            }
        }
    }
}

/// A pod's CNI args and the IP ranges it requests (one list per IP; `None`: one IP from
/// anywhere).
type Requested = (
    serde_json::Map<String, serde_json::Value>,
    Option<Vec<Vec<IpRange>>>,
);

/// The pod's CNI args and requested ranges, admitted by its release policy.
fn requested(pod: &Pod, key: &KeyObj, policy: ReleasePolicy) -> Result<Requested> {
    let invalid = |reason| Error::InvalidCniArgs {
        pod: key.pod_ref(),
        reason,
    };
    let args = cni_args(pod).map_err(invalid)?;
    let ranges = requested_ranges(&args).map_err(invalid)?;
    policy::admit(policy, key, ranges.as_ref().is_some_and(|r| r.len() > 1)).map_err(|reason| {
        Error::PolicyRejected {
            key: key.key(),
            reason,
        }
    })?;
    Ok((args, ranges))
}

/// Reads a workload (or Pool) whose replicas bound a key's IPs; `None` when it does not exist.
async fn read_workload<K>(api: &Api<K>, name: &str, what: &str) -> Result<Option<K>>
where
    K: kube::Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name)
        .await
        .map_err(|source| Error::ReadWorkload {
            kind: K::kind(&()).into_owned(),
            name: what.to_owned(),
            source,
        })
}

/// The InternalIP of a node.
pub fn node_internal_ip(node: &Node) -> Option<u32> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .find(|a| a.type_ == "InternalIP")
        .and_then(|a| parse_ip(&a.address))
}
