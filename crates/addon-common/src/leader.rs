//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! The protocol is client-go's: a candidate creates the Lease when it is absent, renews it
//! while it holds it, and takes it over only when the holder has not renewed for a whole
//! `leaseDuration` *as observed locally* (so clock skew between nodes does not matter).
//! Every write carries the resourceVersion it read, so the API server's optimistic
//! concurrency makes two simultaneous takeovers impossible: one of them gets 409.
//! A leader that cannot renew for `renew_deadline` (< `leaseDuration`) steps down before
//! any standby can take over, so two replicas never act as leader at once.

use std::{
    future::Future,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta},
    jiff::Timestamp,
};
use kube::{Api, Client, api::PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cli::LeaderElectionArgs;

/// Why a Lease read or write failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the Lease first (409 Conflict or AlreadyExists).
    #[error("lease was modified concurrently")]
    Conflict,
    /// Anything else: network, permissions, server errors.
    #[error("{0}")]
    Other(String),
}

/// Where the Lease lives. [`KubeLeaseStore`] is the real one; tests use an in-memory store.
pub trait LeaseStore: Send + Sync {
    /// Reads the Lease; `None` when it does not exist.
    fn get(&self) -> impl Future<Output = Result<Option<Lease>, StoreError>> + Send;
    /// Creates the Lease; [`StoreError::Conflict`] when it already exists.
    fn create(&self, lease: Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
    /// Replaces the Lease, conditional on `metadata.resourceVersion`.
    fn replace(&self, lease: Lease) -> impl Future<Output = Result<Lease, StoreError>> + Send;
}

/// A Lease in the API server.
#[derive(Clone)]
pub struct KubeLeaseStore {
    api: Api<Lease>,
    name: String,
}

impl KubeLeaseStore {
    /// The Lease `namespace/name`.
    pub fn new(client: Client, namespace: &str, name: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
        }
    }
}

fn store_error(error: kube::Error) -> StoreError {
    match &error {
        kube::Error::Api(status) if status.code == 409 => StoreError::Conflict,
        _ => StoreError::Other(error.to_string()),
    }
}

impl LeaseStore for KubeLeaseStore {
    async fn get(&self) -> Result<Option<Lease>, StoreError> {
        self.api.get_opt(&self.name).await.map_err(store_error)
    }

    async fn create(&self, mut lease: Lease) -> Result<Lease, StoreError> {
        lease.metadata.name = Some(self.name.clone());
        self.api
            .create(&PostParams::default(), &lease)
            .await
            .map_err(store_error)
    }

    async fn replace(&self, lease: Lease) -> Result<Lease, StoreError> {
        self.api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
            .map_err(store_error)
    }
}

/// What a candidate does with the Lease it just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// No Lease exists: create it with us as holder.
    Create,
    /// We hold it: renew.
    Renew,
    /// Nobody holds it, or the holder let it expire: take it over.
    Acquire,
    /// Someone else holds a live lease: wait.
    Wait,
}

/// The pure rule: what to do given the Lease read (if any) and whether its current
/// record has gone unrenewed for a whole lease duration in our own observation.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, expired: bool) -> Decision {
    let Some(spec) = lease else {
        return Decision::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => Decision::Renew,
        None | Some("") => Decision::Acquire,
        Some(_) if expired => Decision::Acquire,
        Some(_) => Decision::Wait,
    }
}

/// Identity of this replica: `$POD_NAME` when set (unique per pod), else the host name
/// with a random suffix.
pub fn default_identity() -> String {
    if let Ok(pod) = std::env::var("POD_NAME")
        && !pod.is_empty()
    {
        return pod;
    }
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    format!("{host}_{:08x}", rand::random::<u32>())
}

/// Timing of the election.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Validity of a lease without renewal.
    pub lease_duration: Duration,
    /// How long a leader tries to renew before it steps down.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl From<&LeaderElectionArgs> for Timing {
    fn from(args: &LeaderElectionArgs) -> Self {
        Self {
            lease_duration: args.lease_duration,
            renew_deadline: args.renew_deadline,
            retry_period: args.retry_period,
        }
    }
}

/// One candidate's state machine. Call [`LeaderElector::step_at`] every retry period, or
/// let [`LeaderElector::run`] do it.
pub struct LeaderElector<S> {
    store: S,
    identity: String,
    timing: Timing,
    /// The last Lease record seen (holder, renew time, resourceVersion) and when we first saw it.
    observed: Option<(String, Instant)>,
    last_renew: Option<Instant>,
    leader: bool,
}

impl<S: LeaseStore> LeaderElector<S> {
    /// A candidate named `identity`.
    pub fn new(store: S, identity: impl Into<String>, timing: Timing) -> Self {
        Self {
            store,
            identity: identity.into(),
            timing,
            observed: None,
            last_renew: None,
            leader: false,
        }
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// Whether this candidate currently acts as leader.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    fn lease_seconds(&self) -> i32 {
        i32::try_from(self.timing.lease_duration.as_secs().max(1)).unwrap_or(i32::MAX)
    }

    /// A failed attempt: a leader keeps acting until its renew deadline passes.
    fn failed(&mut self, now: Instant) -> bool {
        if self.leader {
            let deadline_passed = self.last_renew.is_none_or(|renewed| {
                now.saturating_duration_since(renewed) >= self.timing.renew_deadline
            });
            if deadline_passed {
                tracing::warn!(identity = %self.identity, "could not renew the lease before the deadline; stepping down");
                self.leader = false;
            }
        }
        self.leader
    }

    fn won(&mut self, lease: &Lease, now: Instant) -> bool {
        if !self.leader {
            tracing::info!(identity = %self.identity, "became leader");
        }
        self.leader = true;
        self.last_renew = Some(now);
        self.observed = Some((fingerprint(lease), now));
        true
    }

    /// One attempt to acquire or renew, judged at `now`. Returns whether we lead afterwards.
    pub async fn step_at(&mut self, now: Instant) -> bool {
        let current = match self.store.get().await {
            Ok(lease) => lease,
            Err(error) => {
                tracing::debug!(%error, "cannot read lease");
                return self.failed(now);
            }
        };
        let expired = match &current {
            Some(lease) => {
                let print = fingerprint(lease);
                let seen_at = match &self.observed {
                    Some((seen, at)) if *seen == print => *at,
                    _ => {
                        self.observed = Some((print, now));
                        now
                    }
                };
                let duration = lease
                    .spec
                    .as_ref()
                    .and_then(|s| s.lease_duration_seconds)
                    .and_then(|s| u64::try_from(s).ok())
                    .map_or(self.timing.lease_duration, Duration::from_secs);
                now.saturating_duration_since(seen_at) >= duration
            }
            None => false,
        };
        let wall = MicroTime(Timestamp::now());
        match decide(
            current.as_ref().and_then(|l| l.spec.as_ref()),
            &self.identity,
            expired,
        ) {
            Decision::Create => {
                let lease = Lease {
                    metadata: ObjectMeta::default(),
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(self.lease_seconds()),
                        acquire_time: Some(wall.clone()),
                        renew_time: Some(wall),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                match self.store.create(lease).await {
                    Ok(lease) => self.won(&lease, now),
                    Err(_) => self.failed(now),
                }
            }
            Decision::Renew | Decision::Acquire => {
                let Some(mut lease) = current else {
                    return self.failed(now);
                };
                let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
                let taking_over = spec.holder_identity.as_deref() != Some(self.identity.as_str());
                if taking_over {
                    spec.holder_identity = Some(self.identity.clone());
                    spec.acquire_time = Some(wall.clone());
                    spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                spec.lease_duration_seconds = Some(self.lease_seconds());
                spec.renew_time = Some(wall);
                match self.store.replace(lease).await {
                    Ok(lease) => self.won(&lease, now),
                    Err(error) => {
                        tracing::debug!(%error, taking_over, "lease write failed");
                        if taking_over {
                            self.leader
                        } else {
                            self.failed(now)
                        }
                    }
                }
            }
            Decision::Wait => {
                if self.leader {
                    tracing::warn!(identity = %self.identity, "lease taken by another replica; stepping down");
                }
                self.leader = false;
                false
            }
        }
    }

    /// Gives the lease up (holder cleared, 1 s duration) so a standby takes over at once.
    pub async fn release(&mut self) {
        if !self.leader {
            return;
        }
        self.leader = false;
        let Ok(Some(mut lease)) = self.store.get().await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self.store.replace(lease).await {
            Ok(_) => tracing::info!(identity = %self.identity, "released the lease"),
            Err(error) => tracing::warn!(%error, "cannot release the lease"),
        }
    }

    /// Campaigns until `shutdown`, publishing leadership on `leading`; releases on shutdown.
    pub async fn run(mut self, shutdown: CancellationToken, leading: watch::Sender<bool>) {
        loop {
            let leader = self.step_at(Instant::now()).await;
            leading.send_if_modified(|current| {
                let changed = *current != leader;
                *current = leader;
                changed
            });
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(self.timing.retry_period) => {}
            }
        }
        leading.send_replace(false);
        self.release().await;
    }
}

fn fingerprint(lease: &Lease) -> String {
    let spec = lease.spec.clone().unwrap_or_default();
    format!(
        "{}|{}|{}|{}",
        spec.holder_identity.unwrap_or_default(),
        spec.renew_time.map(|t| t.0.to_string()).unwrap_or_default(),
        spec.lease_transitions.unwrap_or_default(),
        lease.metadata.resource_version.clone().unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use std::sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    };

    use super::*;

    /// An in-memory Lease with the API server's optimistic concurrency, and a switch
    /// that cuts one client off (network partition).
    #[derive(Default)]
    struct Shared {
        lease: Option<Lease>,
        rv: u64,
    }

    #[derive(Clone)]
    struct MockStore {
        shared: Arc<Mutex<Shared>>,
        partitioned: Arc<AtomicBool>,
    }

    impl MockStore {
        fn new(shared: &Arc<Mutex<Shared>>) -> Self {
            Self {
                shared: shared.clone(),
                partitioned: Arc::new(AtomicBool::new(false)),
            }
        }
        fn check(&self) -> Result<(), StoreError> {
            if self.partitioned.load(Ordering::SeqCst) {
                Err(StoreError::Other("connection refused".into()))
            } else {
                Ok(())
            }
        }
    }

    impl LeaseStore for MockStore {
        async fn get(&self) -> Result<Option<Lease>, StoreError> {
            // Yield like a network round trip does, so concurrent candidates interleave.
            tokio::task::yield_now().await;
            self.check()?;
            Ok(self.shared.lock().expect("lock").lease.clone())
        }
        async fn create(&self, mut lease: Lease) -> Result<Lease, StoreError> {
            tokio::task::yield_now().await;
            self.check()?;
            let mut s = self.shared.lock().expect("lock");
            if s.lease.is_some() {
                return Err(StoreError::Conflict);
            }
            s.rv += 1;
            lease.metadata.resource_version = Some(s.rv.to_string());
            s.lease = Some(lease.clone());
            Ok(lease)
        }
        async fn replace(&self, mut lease: Lease) -> Result<Lease, StoreError> {
            tokio::task::yield_now().await;
            self.check()?;
            let mut s = self.shared.lock().expect("lock");
            let current = s
                .lease
                .as_ref()
                .and_then(|l| l.metadata.resource_version.clone());
            if current != lease.metadata.resource_version {
                return Err(StoreError::Conflict);
            }
            s.rv += 1;
            lease.metadata.resource_version = Some(s.rv.to_string());
            s.lease = Some(lease.clone());
            Ok(lease)
        }
    }

    fn timing() -> Timing {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }

    fn holder(shared: &Arc<Mutex<Shared>>) -> Option<String> {
        shared
            .lock()
            .expect("lock")
            .lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.holder_identity.clone())
    }

    #[test]
    fn decision_table() {
        let held_by = |h: Option<&str>| LeaseSpec {
            holder_identity: h.map(str::to_owned),
            ..LeaseSpec::default()
        };
        let rows = [
            (None, false, Decision::Create),
            (Some(held_by(Some("me"))), false, Decision::Renew),
            (Some(held_by(Some("me"))), true, Decision::Renew),
            (Some(held_by(None)), false, Decision::Acquire),
            (Some(held_by(Some(""))), false, Decision::Acquire),
            (Some(held_by(Some("other"))), false, Decision::Wait),
            (Some(held_by(Some("other"))), true, Decision::Acquire),
        ];
        for (lease, expired, want) in rows {
            assert_eq!(
                decide(lease.as_ref(), "me", expired),
                want,
                "{lease:?} expired={expired}"
            );
        }
    }

    #[tokio::test]
    async fn acquires_when_free_and_others_wait_while_held() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut a = LeaderElector::new(MockStore::new(&shared), "a", timing());
        let mut b = LeaderElector::new(MockStore::new(&shared), "b", timing());
        let t0 = Instant::now();
        assert!(a.step_at(t0).await, "a creates the lease");
        assert_eq!(holder(&shared).as_deref(), Some("a"));
        // a keeps renewing every retry period; b never gets in, however long it waits.
        for i in 1..40u64 {
            let now = t0 + Duration::from_secs(2 * i);
            assert!(a.step_at(now).await);
            assert!(!b.step_at(now).await, "b must wait at t+{}s", 2 * i);
        }
        assert_eq!(holder(&shared).as_deref(), Some("a"));
    }

    #[tokio::test]
    async fn takes_over_when_expired_and_never_two_leaders() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let a_store = MockStore::new(&shared);
        let partition_a = a_store.partitioned.clone();
        let mut a = LeaderElector::new(a_store, "a", timing());
        let mut b = LeaderElector::new(MockStore::new(&shared), "b", timing());
        let t0 = Instant::now();
        assert!(a.step_at(t0).await);
        assert!(!b.step_at(t0).await);
        partition_a.store(true, Ordering::SeqCst);
        let mut a_stepped_down_at = None;
        let mut b_leader_at = None;
        // Half-second ticks: both candidates act at every tick, in both orders.
        for tick in 1..200u64 {
            let now = t0 + Duration::from_millis(500 * tick);
            let (la, lb) = if tick % 2 == 0 {
                (a.step_at(now).await, b.step_at(now).await)
            } else {
                let lb = b.step_at(now).await;
                (a.step_at(now).await, lb)
            };
            assert!(!(la && lb), "two leaders at tick {tick}");
            if !la && a_stepped_down_at.is_none() {
                a_stepped_down_at = Some(tick);
            }
            if lb && b_leader_at.is_none() {
                b_leader_at = Some(tick);
            }
        }
        let down = a_stepped_down_at.expect("a steps down after its renew deadline");
        let up = b_leader_at.expect("b takes over after the lease expires");
        assert!(
            down <= 20,
            "a steps down within the 10 s renew deadline (tick {down})"
        );
        assert!(up >= 30, "b waits a whole lease duration (tick {up})");
        assert!(down < up);
        assert_eq!(holder(&shared).as_deref(), Some("b"));
        let transitions = shared
            .lock()
            .expect("lock")
            .lease
            .as_ref()
            .and_then(|l| l.spec.as_ref())
            .and_then(|s| s.lease_transitions);
        assert_eq!(transitions, Some(1));
        // When the partition heals, a sees b's live lease and stays a follower.
        partition_a.store(false, Ordering::SeqCst);
        assert!(!a.step_at(t0 + Duration::from_secs(101)).await);
    }

    #[tokio::test]
    async fn simultaneous_candidates_get_one_winner() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut a = LeaderElector::new(MockStore::new(&shared), "a", timing());
        let mut b = LeaderElector::new(MockStore::new(&shared), "b", timing());
        let now = Instant::now();
        let (la, lb) = tokio::join!(a.step_at(now), b.step_at(now));
        assert!(la ^ lb, "exactly one of a={la} b={lb} wins");
        // Both read "no lease" before either wrote: the loser's create hit AlreadyExists.
        assert_eq!(shared.lock().expect("lock").rv, 1, "one successful write");
    }

    #[tokio::test]
    async fn release_lets_a_standby_in_at_once() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut a = LeaderElector::new(MockStore::new(&shared), "a", timing());
        let mut b = LeaderElector::new(MockStore::new(&shared), "b", timing());
        let t0 = Instant::now();
        assert!(a.step_at(t0).await);
        assert!(!b.step_at(t0).await);
        a.release().await;
        assert!(!a.is_leader());
        assert_eq!(holder(&shared), None);
        assert!(
            b.step_at(t0 + Duration::from_secs(2)).await,
            "no need to wait for expiry"
        );
    }

    #[tokio::test]
    async fn a_restarted_holder_renews_its_own_lease() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut a = LeaderElector::new(MockStore::new(&shared), "pod-a", timing());
        let t0 = Instant::now();
        assert!(a.step_at(t0).await);
        drop(a);
        let mut a2 = LeaderElector::new(MockStore::new(&shared), "pod-a", timing());
        assert!(a2.step_at(t0 + Duration::from_secs(1)).await);
    }

    #[tokio::test]
    async fn run_publishes_leadership_and_releases_on_shutdown() {
        let shared = Arc::new(Mutex::new(Shared::default()));
        let elector = LeaderElector::new(
            MockStore::new(&shared),
            "a",
            Timing {
                lease_duration: Duration::from_secs(3),
                renew_deadline: Duration::from_secs(2),
                retry_period: Duration::from_millis(20),
            },
        );
        let shutdown = CancellationToken::new();
        let (tx, mut rx) = watch::channel(false);
        let task = tokio::spawn(elector.run(shutdown.clone(), tx));
        tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|l| *l))
            .await
            .expect("leads in time")
            .expect("channel open");
        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops in time")
            .expect("no panic");
        assert!(!*rx.borrow());
        assert_eq!(holder(&shared), None, "released");
    }
}
