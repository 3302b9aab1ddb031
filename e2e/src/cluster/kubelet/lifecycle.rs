//! The simulated kubelet's pod lifecycle as a pure state machine: [`PodRuntime`] is the
//! "container runtime" state of one pod, [`advance`] moves it to `now` (container starts,
//! readiness, scripted exits, restarts per `restartPolicy`, in-place restarts on image change,
//! termination on deletion) and [`render_status`] turns it into the `PodStatus` the kubelet
//! reports, keeping conditions owned by others (readiness gates).
//!
//! Container behaviour is scripted per pod through annotations (see [`Script`]); a key suffixed
//! with `.<container-name>` overrides the pod-wide value for that container.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
    ResourceRequirements,
};

use crate::cluster::util::{self, time_ms};

/// Annotation prefix of the scripting keys.
pub const SCRIPT_PREFIX: &str = "sim.e2e.tkestack.io/";
/// Galaxy's pod annotation carrying the allocated IP (`common.ipinfos[0].ip`).
pub const GALAXY_ARGS: &str = "k8s.v1.cni.galaxy.io/args";
/// How long a container restarted in place for an image change stays not-ready at least.
pub const RESTART_NOT_READY_MS: i64 = 100;
/// Conditions the kubelet owns; every other condition is preserved as written by others.
pub const KUBELET_CONDITIONS: &[&str] = &[
    "PodReadyToStartContainers",
    "Initialized",
    "ContainersReady",
    "Ready",
    "PodScheduled",
];

/// Scripted behaviour of one container (all times in milliseconds).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Script {
    /// `start-delay-ms`: from creation (or restart) to running. Default 0.
    pub start_delay: i64,
    /// `ready-delay-ms`: from running to ready. Default 0.
    pub ready_delay: i64,
    /// `exit-after-ms`: the container exits that long after each start. Default: never for
    /// containers, 0 (immediately) for init containers.
    pub exit_after: Option<i64>,
    /// `exit-code`: the exit code of scripted exits. Default 0.
    pub exit_code: i32,
    /// `restart-delay-ms`: back-off before a restart (the CrashLoopBackOff wait). Default 100.
    pub restart_delay: i64,
    /// `termination-delay-ms`: how long the container takes to stop after deletion (capped
    /// by the grace period; reaching the cap means SIGKILL, exit code 137). Default 0.
    pub termination_delay: i64,
    /// `image-pull-error`: when `"true"` the container stays waiting in `ErrImagePull`.
    pub image_pull_error: bool,
}

fn ann_value<'a>(ann: &'a BTreeMap<String, String>, key: &str, container: &str) -> Option<&'a str> {
    ann.get(&format!("{SCRIPT_PREFIX}{key}.{container}"))
        .or_else(|| ann.get(&format!("{SCRIPT_PREFIX}{key}")))
        .map(String::as_str)
}

impl Script {
    /// The script of `container` from the pod's annotations.
    pub fn for_container(ann: &BTreeMap<String, String>, container: &str, init: bool) -> Script {
        let num = |k: &str| ann_value(ann, k, container).and_then(|v| v.trim().parse::<i64>().ok());
        Script {
            start_delay: num("start-delay-ms").unwrap_or(0).max(0),
            ready_delay: num("ready-delay-ms").unwrap_or(0).max(0),
            exit_after: num("exit-after-ms").or(if init { Some(0) } else { None }),
            exit_code: num("exit-code")
                .and_then(|v| i32::try_from(v).ok())
                .unwrap_or(0),
            restart_delay: num("restart-delay-ms").unwrap_or(100).max(0),
            termination_delay: num("termination-delay-ms").unwrap_or(0).max(0),
            image_pull_error: ann_value(ann, "image-pull-error", container) == Some("true"),
        }
    }
}

/// One container's runtime state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum State {
    /// Not running; starts at `until` (unless pull errors).
    Waiting {
        /// ContainerCreating, PodInitializing, CrashLoopBackOff, ErrImagePull.
        reason: String,
        /// When it starts running.
        until: i64,
        /// Restarted in place (forces a short not-ready time).
        in_place: bool,
    },
    /// Running since `started`, ready from `ready_at`.
    Running {
        /// Start time.
        started: i64,
        /// Ready time.
        ready_at: i64,
    },
    /// Exited.
    Terminated {
        /// Exit code.
        code: i32,
        /// Completed, Error.
        reason: String,
        /// Start of the run.
        started: i64,
        /// Exit time.
        finished: i64,
    },
}

/// One container.
#[derive(Clone, Debug, PartialEq)]
pub struct ContainerRuntime {
    /// Name.
    pub name: String,
    /// Image it runs.
    pub image: String,
    /// Restarts so far.
    pub restarts: i32,
    /// Current state.
    pub state: State,
    /// Previous run (`lastState.terminated`).
    pub last: Option<State>,
    /// Increments on every run (used for container IDs).
    pub runs: u32,
    /// Resources the container runs with (allocated; follows in-place resizes).
    pub resources: Option<ResourceRequirements>,
    /// Start held with this error (a kubelet hook such as a device plugin's
    /// `PreStartContainer` failed): the container waits in `CreateContainerError`.
    pub hold: Option<String>,
    /// Until when the hold stands before the hook is retried.
    pub hold_until: i64,
}

/// One pod's runtime ("sandbox" plus containers).
#[derive(Clone, Debug, PartialEq)]
pub struct PodRuntime {
    /// When the kubelet admitted the pod.
    pub started: i64,
    /// Pod IP.
    pub ip: String,
    /// Host IP.
    pub host_ip: String,
    /// Init containers in order.
    pub init: Vec<ContainerRuntime>,
    /// Containers.
    pub containers: Vec<ContainerRuntime>,
    /// An init container failed for good (restartPolicy Never).
    pub init_failed: bool,
    /// When the kubelet noticed the deletion.
    pub killing_since: Option<i64>,
}

/// The IP from Galaxy's `k8s.v1.cni.galaxy.io/args` annotation (`common.ipinfos[0].ip`,
/// prefix length stripped).
pub fn galaxy_ip(pod: &Pod) -> Option<String> {
    let raw = pod.metadata.annotations.as_ref()?.get(GALAXY_ARGS)?;
    let v: serde_json::Value = serde_json::from_str(raw).ok()?;
    let ip = v.pointer("/common/ipinfos/0/ip")?.as_str()?;
    Some(ip.split('/').next().unwrap_or(ip).to_string())
}

fn new_container(c: &Container, start: i64, script: &Script, reason: &str) -> ContainerRuntime {
    ContainerRuntime {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        restarts: 0,
        state: State::Waiting {
            reason: reason.into(),
            until: start + script.start_delay,
            in_place: false,
        },
        last: None,
        runs: 0,
        resources: c.resources.clone(),
        hold: None,
        hold_until: 0,
    }
}

impl PodRuntime {
    /// A runtime for a newly admitted pod.
    pub fn new(pod: &Pod, now: i64, ip: String, host_ip: String) -> PodRuntime {
        let spec = pod.spec.clone().unwrap_or_default();
        let ann = pod.metadata.annotations.clone().unwrap_or_default();
        let init: Vec<ContainerRuntime> = spec
            .init_containers
            .iter()
            .flatten()
            .map(|c| {
                new_container(
                    c,
                    now,
                    &Script::for_container(&ann, &c.name, true),
                    "PodInitializing",
                )
            })
            .collect();
        let containers = spec
            .containers
            .iter()
            .map(|c| {
                new_container(
                    c,
                    now,
                    &Script::for_container(&ann, &c.name, false),
                    if init.is_empty() {
                        "ContainerCreating"
                    } else {
                        "PodInitializing"
                    },
                )
            })
            .collect();
        PodRuntime {
            started: now,
            ip,
            host_ip,
            init,
            containers,
            init_failed: false,
            killing_since: None,
        }
    }

    /// A runtime rebuilt from the status a previous kubelet reported (after a restart of the
    /// simulated cluster, or of a sandbox reloaded from its state file): running containers
    /// keep running, finished ones stay finished, restart counts and images are kept.
    pub fn adopt(pod: &Pod, now: i64, ip: String, host_ip: String) -> PodRuntime {
        let mut rt = PodRuntime::new(pod, now, ip, host_ip);
        let Some(status) = pod.status.as_ref() else {
            return rt;
        };
        if let Some(t) = &status.start_time {
            rt.started = t.0.as_millisecond();
        }
        let ann = pod.metadata.annotations.clone().unwrap_or_default();
        let adopt = |c: &mut ContainerRuntime, cs: &ContainerStatus, init: bool| {
            let script = Script::for_container(&ann, &c.name, init);
            c.image = cs.image.clone();
            c.restarts = cs.restart_count;
            if cs.resources.is_some() {
                c.resources = cs.resources.clone();
            }
            c.runs = u32::try_from(cs.restart_count).unwrap_or(0) + 1;
            let ms = |t: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
                t.as_ref().map(|t| t.0.as_millisecond()).unwrap_or(now)
            };
            let from = |st: &ContainerState| -> Option<State> {
                if let Some(r) = &st.running {
                    let started = ms(&r.started_at);
                    return Some(State::Running {
                        started,
                        ready_at: if cs.ready {
                            started
                        } else {
                            started.max(now) + script.ready_delay
                        },
                    });
                }
                if let Some(t) = &st.terminated {
                    return Some(State::Terminated {
                        code: t.exit_code,
                        reason: t.reason.clone().unwrap_or_default(),
                        started: ms(&t.started_at),
                        finished: ms(&t.finished_at),
                    });
                }
                None
            };
            if let Some(s) = cs.state.as_ref().and_then(from) {
                c.state = s;
            }
            c.last = cs.last_state.as_ref().and_then(from);
        };
        for c in &mut rt.containers {
            if let Some(cs) = status
                .container_statuses
                .iter()
                .flatten()
                .find(|s| s.name == c.name)
            {
                adopt(c, cs, false);
            }
        }
        for c in &mut rt.init {
            if let Some(cs) = status
                .init_container_statuses
                .iter()
                .flatten()
                .find(|s| s.name == c.name)
            {
                adopt(c, cs, true);
            }
        }
        rt.init_failed = status.phase.as_deref() == Some("Failed")
            && rt
                .init
                .iter()
                .any(|c| matches!(c.state, State::Terminated { code, .. } if code != 0));
        rt
    }

    /// Every container has stopped (after a deletion or a terminal phase).
    pub fn all_stopped(&self) -> bool {
        self.containers
            .iter()
            .chain(&self.init)
            .all(|c| !matches!(c.state, State::Running { .. }))
    }
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn should_restart(policy: &str, code: i32) -> bool {
    match policy {
        "Always" => true,
        "OnFailure" => code != 0,
        _ => false,
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Advances one container to `now`; returns its next transition time.
fn step(
    c: &mut ContainerRuntime,
    spec_image: &str,
    script: &Script,
    policy: &str,
    init: bool,
    now: i64,
) -> Option<i64> {
    for _ in 0..64 {
        // in-place restart on image change (kubelet kills and recreates the container)
        if !init && c.image != spec_image && !spec_image.is_empty() {
            match &c.state {
                State::Running { started, .. } => {
                    c.last = Some(State::Terminated {
                        code: 0,
                        reason: "Completed".into(),
                        started: *started,
                        finished: now,
                    });
                    c.restarts += 1;
                    c.image = spec_image.to_string();
                    c.state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        until: now + script.start_delay,
                        in_place: true,
                    };
                    continue;
                }
                State::Waiting { .. } => c.image = spec_image.to_string(),
                State::Terminated { code, .. } if should_restart(policy, *code) => {
                    c.image = spec_image.to_string()
                }
                State::Terminated { .. } => {}
            }
        }
        match c.state.clone() {
            State::Waiting {
                reason,
                until,
                in_place,
            } => {
                if script.image_pull_error {
                    if reason != "ErrImagePull" {
                        c.state = State::Waiting {
                            reason: "ErrImagePull".into(),
                            until,
                            in_place,
                        };
                    }
                    return None;
                }
                if c.hold.is_some() {
                    return None;
                }
                if now < until {
                    return Some(until);
                }
                let ready_delay = if in_place {
                    script.ready_delay.max(RESTART_NOT_READY_MS)
                } else {
                    script.ready_delay
                };
                c.runs += 1;
                c.state = State::Running {
                    started: until,
                    ready_at: until + ready_delay,
                };
            }
            State::Running { started, ready_at } => {
                let exit_at = script.exit_after.map(|e| started + e);
                if let Some(at) = exit_at
                    && now >= at
                {
                    let code = script.exit_code;
                    c.state = State::Terminated {
                        code,
                        reason: if code == 0 {
                            "Completed".into()
                        } else {
                            "Error".into()
                        },
                        started,
                        finished: at,
                    };
                    continue;
                }
                let ready_next = (ready_at > now).then_some(ready_at);
                return min_opt(ready_next, exit_at);
            }
            State::Terminated { code, finished, .. } => {
                // init containers that succeeded never run again
                if (init && code == 0) || !should_restart(policy, code) {
                    return None;
                }
                c.last = Some(c.state.clone());
                c.restarts += 1;
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    until: finished + script.restart_delay + script.start_delay,
                    in_place: false,
                };
            }
        }
    }
    None
}

/// Moves the runtime to `now`. Returns the next time something changes (to requeue), if any.
pub fn advance(pod: &Pod, rt: &mut PodRuntime, now: i64) -> Option<i64> {
    let spec = pod.spec.clone().unwrap_or_default();
    let ann = pod.metadata.annotations.clone().unwrap_or_default();
    let policy = restart_policy(pod).to_string();
    if pod.metadata.deletion_timestamp.is_some() {
        let since = *rt.killing_since.get_or_insert(now);
        let deadline = pod
            .metadata
            .deletion_timestamp
            .as_ref()
            .map(|t| t.0.as_millisecond())
            .unwrap_or(now);
        let mut next = None;
        for c in rt.containers.iter_mut().chain(rt.init.iter_mut()) {
            let script = Script::for_container(&ann, &c.name, false);
            let want = since + script.termination_delay;
            let at = want.min(deadline.max(since));
            if let State::Running { started, .. } = c.state {
                if now >= at {
                    let code = if want > at { 137 } else { 0 };
                    c.state = State::Terminated {
                        code,
                        reason: if code == 0 {
                            "Completed".into()
                        } else {
                            "Error".into()
                        },
                        started,
                        finished: at,
                    };
                } else {
                    next = min_opt(next, Some(at));
                }
            } else if let State::Waiting { .. } = c.state {
                c.state = State::Terminated {
                    code: 0,
                    reason: "ContainerStatusUnknown".into(),
                    started: now,
                    finished: now,
                };
            }
        }
        return next;
    }
    if rt.init_failed || is_finished(rt, &policy) {
        return None;
    }
    // init containers run one at a time
    let n_init = rt.init.len();
    let mut prev_done = rt.started;
    for i in 0..n_init {
        let c = &mut rt.init[i];
        let script = Script::for_container(&ann, &c.name, true);
        // an init container is created when the previous one has finished
        if c.runs == 0
            && let State::Waiting { until, .. } = &mut c.state
        {
            *until = prev_done + script.start_delay;
        }
        let image = spec
            .init_containers
            .as_ref()
            .and_then(|v| v.get(i))
            .and_then(|c| c.image.clone())
            .unwrap_or_default();
        let next = step(c, &image, &script, &policy, true, now);
        match c.state {
            State::Terminated {
                code: 0, finished, ..
            } => prev_done = finished,
            State::Terminated { .. } if policy == "Never" => {
                rt.init_failed = true;
                return None;
            }
            _ => return next,
        }
    }
    if n_init > 0 {
        // all init containers done: the app containers are created now
        for ctr in &mut rt.containers {
            if let State::Waiting { reason, until, .. } = &mut ctr.state
                && reason == "PodInitializing"
            {
                let s = Script::for_container(&ann, &ctr.name, false);
                *reason = "ContainerCreating".into();
                *until = prev_done + s.start_delay;
            }
        }
    }
    let mut next = None;
    for c in &mut rt.containers {
        let script = Script::for_container(&ann, &c.name, false);
        let sc = spec.containers.iter().find(|s| s.name == c.name);
        resize(c, sc, &script, now);
        let image = sc.and_then(|s| s.image.clone()).unwrap_or_default();
        next = min_opt(next, step(c, &image, &script, &policy, false, now));
    }
    next
}

/// The containers (init and app, by name) that [`advance`] would start now if nothing held
/// them: where a kubelet hook (a device plugin's `Allocate`/`PreStartContainer`) runs.
pub fn starting(pod: &Pod, rt: &PodRuntime, now: i64) -> Vec<String> {
    let mut probe = rt.clone();
    for c in probe.init.iter_mut().chain(probe.containers.iter_mut()) {
        if c.hold_until <= now {
            c.hold = None;
        }
    }
    advance(pod, &mut probe, now);
    let before = rt.init.iter().chain(&rt.containers);
    let after = probe.init.iter().chain(&probe.containers);
    before
        .zip(after)
        .filter(|(b, a)| a.runs > b.runs)
        .map(|(_, a)| a.name.clone())
        .collect()
}

/// Whether changing `from` → `to` needs a container restart under `resizePolicy`
/// (per resource `RestartContainer`; the default is `NotRequired`).
pub fn resize_needs_restart(
    from: Option<&ResourceRequirements>,
    to: Option<&ResourceRequirements>,
    policy: &[k8s_openapi::api::core::v1::ContainerResizePolicy],
) -> bool {
    let get = |r: Option<&ResourceRequirements>, limits: bool, name: &str| {
        r.and_then(|r| {
            if limits {
                r.limits.as_ref()
            } else {
                r.requests.as_ref()
            }
        })
        .and_then(|m| m.get(name))
        .map(crate::cluster::quantity::milli)
    };
    policy
        .iter()
        .filter(|p| p.restart_policy == "RestartContainer")
        .any(|p| {
            let n = p.resource_name.as_str();
            get(from, false, n) != get(to, false, n) || get(from, true, n) != get(to, true, n)
        })
}

/// In-place resize (`pods/resize`, Kubernetes 1.33): the container takes the new resources,
/// restarting only when its `resizePolicy` asks for it. Resizes are always feasible here.
fn resize(c: &mut ContainerRuntime, spec: Option<&Container>, script: &Script, now: i64) {
    let want = spec.and_then(|s| s.resources.clone());
    if want == c.resources {
        return;
    }
    let policy = spec
        .and_then(|s| s.resize_policy.clone())
        .unwrap_or_default();
    let restart = resize_needs_restart(c.resources.as_ref(), want.as_ref(), &policy);
    c.resources = want;
    if let (true, State::Running { started, .. }) = (restart, &c.state) {
        c.last = Some(State::Terminated {
            code: 0,
            reason: "Completed".into(),
            started: *started,
            finished: now,
        });
        c.restarts += 1;
        c.state = State::Waiting {
            reason: "ContainerCreating".into(),
            until: now + script.start_delay,
            in_place: true,
        };
    }
}

fn is_finished(rt: &PodRuntime, policy: &str) -> bool {
    !rt.containers.is_empty()
        && rt.containers.iter().all(
            |c| matches!(c.state, State::Terminated { code, .. } if !should_restart(policy, code)),
        )
}

/// The pod phase for a runtime (upstream `getPhase`, simplified).
pub fn phase(pod: &Pod, rt: &PodRuntime) -> &'static str {
    let policy = restart_policy(pod);
    if rt.init_failed {
        return "Failed";
    }
    if rt
        .init
        .iter()
        .any(|c| !matches!(c.state, State::Terminated { code: 0, .. }))
    {
        return "Pending";
    }
    if is_finished(rt, policy) {
        let failed = rt
            .containers
            .iter()
            .any(|c| matches!(c.state, State::Terminated { code, .. } if code != 0));
        return if failed { "Failed" } else { "Succeeded" };
    }
    if rt.containers.iter().any(|c| {
        matches!(c.state, State::Running { .. })
            || c.restarts > 0
            || matches!(c.state, State::Terminated { .. })
    }) {
        "Running"
    } else {
        "Pending"
    }
}

/// The kubelet events (type, reason, message) for what changed between two runtimes of a pod:
/// Pulled/Created/Started when a container starts, Killing when it is stopped for a deletion or
/// an image change, BackOff when it waits to restart, Failed on image pull errors.
pub fn events(
    before: &PodRuntime,
    after: &PodRuntime,
    pod_name: &str,
) -> Vec<(&'static str, &'static str, String)> {
    let mut out = Vec::new();
    let pairs = before
        .init
        .iter()
        .zip(&after.init)
        .chain(before.containers.iter().zip(&after.containers));
    for (b, a) in pairs {
        let name = &a.name;
        if a.runs > b.runs {
            if a.restarts > b.restarts && a.image != b.image {
                out.push((
                    "Normal",
                    "Killing",
                    format!("Container {name} definition changed, will be restarted"),
                ));
            }
            out.push((
                "Normal",
                "Pulled",
                format!("Container image \"{}\" already present on machine", a.image),
            ));
            out.push(("Normal", "Created", format!("Created container: {name}")));
            out.push(("Normal", "Started", format!("Started container {name}")));
        }
        match (&b.state, &a.state) {
            (State::Running { .. }, State::Terminated { .. }) if after.killing_since.is_some() => {
                out.push(("Normal", "Killing", format!("Stopping container {name}")));
            }
            (State::Terminated { .. } | State::Running { .. }, State::Waiting { reason, .. })
                if reason == "CrashLoopBackOff" =>
            {
                out.push((
                    "Warning",
                    "BackOff",
                    format!("Back-off restarting failed container {name} in pod {pod_name}"),
                ));
            }
            (State::Waiting { reason: r0, .. }, State::Waiting { reason, .. })
                if reason == "ErrImagePull" && r0 != reason =>
            {
                out.push((
                    "Warning",
                    "Failed",
                    format!(
                        "Failed to pull image \"{}\": simulated image pull failure",
                        a.image
                    ),
                ));
            }
            _ => {}
        }
    }
    out
}

fn hex_of(s: &str, len: usize) -> String {
    let mut out = String::new();
    let mut i = 0u32;
    while out.len() < len {
        out.push_str(&format!(
            "{:08x}",
            util::fnv32a(format!("{i}:{s}").as_bytes())
        ));
        i += 1;
    }
    out.truncate(len);
    out
}

/// The imageID reported for an image (`<repo>@sha256:<digest>`; stable per image string).
pub fn image_id(image: &str) -> String {
    let repo = image.split('@').next().unwrap_or(image);
    let repo = match repo.rsplit_once(':') {
        Some((r, tag)) if !tag.contains('/') => r,
        _ => repo,
    };
    let repo = if repo.contains('/') {
        repo.to_string()
    } else {
        format!("docker.io/library/{repo}")
    };
    format!("{repo}@sha256:{}", hex_of(image, 64))
}

fn ctr_state(s: &State) -> ContainerState {
    match s {
        State::Waiting { reason, .. } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: (reason == "ErrImagePull")
                    .then(|| "simulated image pull failure".to_string()),
            }),
            ..Default::default()
        },
        State::Running { started, .. } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(time_ms(*started)),
            }),
            ..Default::default()
        },
        State::Terminated {
            code,
            reason,
            started,
            finished,
        } => ContainerState {
            terminated: Some(ContainerStateTerminated {
                exit_code: *code,
                reason: Some(reason.clone()),
                started_at: Some(time_ms(*started)),
                finished_at: Some(time_ms(*finished)),
                ..Default::default()
            }),
            ..Default::default()
        },
    }
}

fn ctr_status(pod_uid: &str, c: &ContainerRuntime, now: i64) -> ContainerStatus {
    let ready = matches!(c.state, State::Running { ready_at, .. } if ready_at <= now);
    let started = matches!(c.state, State::Running { .. });
    let resources: Option<ResourceRequirements> = c
        .resources
        .clone()
        .map(|r| ResourceRequirements { claims: None, ..r });
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: image_id(&c.image),
        container_id: (c.runs > 0).then(|| {
            format!(
                "containerd://{}",
                hex_of(&format!("{pod_uid}/{}/{}", c.name, c.runs), 64)
            )
        }),
        ready,
        started: Some(started),
        restart_count: c.restarts,
        state: Some(match (&c.hold, &c.state) {
            (Some(msg), State::Waiting { .. }) => ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some("CreateContainerError".into()),
                    message: Some(msg.clone()),
                }),
                ..Default::default()
            },
            _ => ctr_state(&c.state),
        }),
        last_state: Some(c.last.as_ref().map(ctr_state).unwrap_or_default()),
        allocated_resources: resources.as_ref().and_then(|r| r.requests.clone()),
        resources,
        ..Default::default()
    }
}

fn qos_class(pod: &Pod) -> &'static str {
    let spec = pod.spec.clone().unwrap_or_default();
    let ctrs: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &ctrs {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        for res in ["cpu", "memory"] {
            match (lim.get(res), req.get(res).or(lim.get(res))) {
                (Some(l), Some(q)) if l == q => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

fn set_condition(
    conds: &mut Vec<PodCondition>,
    ty: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: i64,
) {
    let status = if ok { "True" } else { "False" };
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == ty) {
        if c.status != status {
            c.last_transition_time = Some(time_ms(now));
        }
        c.status = status.into();
        c.reason = reason.map(String::from);
        c.message = message;
    } else {
        conds.push(PodCondition {
            type_: ty.into(),
            status: status.into(),
            reason: reason.map(String::from),
            message,
            last_transition_time: Some(time_ms(now)),
            last_probe_time: None,
            observed_generation: None,
        });
    }
}

/// The status the kubelet reports for `pod` given its runtime.
pub fn render_status(pod: &Pod, rt: &PodRuntime, now: i64) -> PodStatus {
    let old = pod.status.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let phase = phase(pod, rt);
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let mut conds = old.conditions.clone().unwrap_or_default();
    let init_pending: Vec<String> = rt
        .init
        .iter()
        .filter(|c| !matches!(c.state, State::Terminated { code: 0, .. }))
        .map(|c| c.name.clone())
        .collect();
    let statuses: Vec<ContainerStatus> = rt
        .containers
        .iter()
        .map(|c| ctr_status(&uid, c, now))
        .collect();
    let unready: Vec<String> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.clone())
        .collect();
    set_condition(
        &mut conds,
        "PodReadyToStartContainers",
        !terminal,
        None,
        None,
        now,
    );
    if init_pending.is_empty() {
        set_condition(
            &mut conds,
            "Initialized",
            true,
            terminal.then_some("PodCompleted"),
            None,
            now,
        );
    } else {
        set_condition(
            &mut conds,
            "Initialized",
            false,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                init_pending.join(" ")
            )),
            now,
        );
    }
    let (ctrs_ready, ready_reason, ready_msg) = if terminal {
        (false, Some("PodCompleted"), None)
    } else if unready.is_empty() {
        (true, None, None)
    } else {
        (
            false,
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    };
    set_condition(
        &mut conds,
        "ContainersReady",
        ctrs_ready,
        ready_reason,
        ready_msg.clone(),
        now,
    );
    // readiness gates: Ready only when every gate's condition is True
    let mut gate_msg = None;
    for g in spec.readiness_gates.iter().flatten() {
        match conds.iter().find(|c| c.type_ == g.condition_type) {
            None => {
                gate_msg = Some(format!(
                    "corresponding condition of pod readiness gate \"{}\" does not exist.",
                    g.condition_type
                ));
                break;
            }
            Some(c) if c.status != "True" => {
                gate_msg = Some(format!(
                    "the status of pod readiness gate \"{}\" is not \"True\", but {}",
                    g.condition_type, c.status
                ));
                break;
            }
            _ => {}
        }
    }
    match (ctrs_ready, gate_msg) {
        (true, None) => set_condition(&mut conds, "Ready", true, None, None, now),
        (true, Some(m)) => set_condition(
            &mut conds,
            "Ready",
            false,
            Some("ReadinessGatesNotReady"),
            Some(m),
            now,
        ),
        (false, _) => set_condition(&mut conds, "Ready", false, ready_reason, ready_msg, now),
    }
    if !conds.iter().any(|c| c.type_ == "PodScheduled") {
        set_condition(&mut conds, "PodScheduled", true, None, None, rt.started);
    }
    // kubelet-owned conditions first, in upstream order; others keep their place after them
    let order = |t: &str| {
        KUBELET_CONDITIONS
            .iter()
            .position(|k| *k == t)
            .unwrap_or(KUBELET_CONDITIONS.len())
    };
    conds.sort_by_key(|c| order(&c.type_));
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conds),
        host_ip: Some(rt.host_ip.clone()),
        host_ips: Some(vec![HostIP {
            ip: rt.host_ip.clone(),
        }]),
        pod_ip: Some(rt.ip.clone()),
        pod_ips: Some(vec![PodIP { ip: rt.ip.clone() }]),
        start_time: old.start_time.clone().or_else(|| Some(time_ms(rt.started))),
        container_statuses: Some(statuses),
        init_container_statuses: (!rt.init.is_empty())
            .then(|| rt.init.iter().map(|c| ctr_status(&uid, c, now)).collect()),
        qos_class: Some(qos_class(pod).into()),
        ..old
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        let mut base = json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "annotations": {}},
            "spec": {"nodeName": "n1", "containers": [{"name": "app", "image": "nginx:1.0"}]}
        });
        json_patch::merge(&mut base, &v);
        serde_json::from_value(base).expect("pod")
    }

    fn run(p: &Pod, rt: &mut PodRuntime, t: i64) -> PodStatus {
        advance(p, rt, t);
        render_status(p, rt, t)
    }

    fn cond(s: &PodStatus, ty: &str) -> String {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == ty)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn starts_and_becomes_ready_with_delays() {
        let p = pod(
            json!({"metadata": {"annotations": {"sim.e2e.tkestack.io/start-delay-ms": "100", "sim.e2e.tkestack.io/ready-delay-ms": "50"}}}),
        );
        let mut rt = PodRuntime::new(&p, 1000, "10.0.0.2".into(), "192.168.0.1".into());
        let s = run(&p, &mut rt, 1000);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(advance(&p, &mut rt, 1000), Some(1100));
        let s = run(&p, &mut rt, 1100);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(advance(&p, &mut rt, 1100), Some(1150));
        let s = run(&p, &mut rt, 1150);
        assert_eq!(
            (
                cond(&s, "ContainersReady").as_str(),
                cond(&s, "Ready").as_str()
            ),
            ("True", "True")
        );
        let cs = &s.container_statuses.as_ref().expect("statuses")[0];
        assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
        assert_eq!(cs.image_id, image_id("nginx:1.0"));
        assert!(cs.image_id.starts_with("docker.io/library/nginx@sha256:"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.2"));
        assert_eq!(advance(&p, &mut rt, 2000), None);
    }

    #[test]
    fn init_containers_run_first_in_order() {
        let p = pod(
            json!({"spec": {"initContainers": [{"name": "i1", "image": "busybox"}, {"name": "i2", "image": "busybox"}]},
            "metadata": {"annotations": {"sim.e2e.tkestack.io/exit-after-ms.i1": "10", "sim.e2e.tkestack.io/exit-after-ms.i2": "10"}}}),
        );
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        let s = run(&p, &mut rt, 0);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(cond(&s, "Initialized"), "False");
        let s = run(&p, &mut rt, 10);
        assert_eq!(s.phase.as_deref(), Some("Pending"), "i2 still running");
        let s = run(&p, &mut rt, 20);
        assert_eq!(cond(&s, "Initialized"), "True");
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let inits = s.init_container_statuses.expect("init statuses");
        assert!(inits.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| t.exit_code == 0)
        }));
    }

    #[test]
    fn readiness_gates_are_honoured() {
        let mut p = pod(
            json!({"spec": {"readinessGates": [{"conditionType": "tkestack.io/InPlaceUpdate"}]}}),
        );
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        let s = run(&p, &mut rt, 0);
        assert_eq!(cond(&s, "ContainersReady"), "True");
        assert_eq!(cond(&s, "Ready"), "False");
        let ready = s
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == "Ready")
            .expect("ready");
        assert_eq!(ready.reason.as_deref(), Some("ReadinessGatesNotReady"));
        // someone else sets the gate condition: it is kept and Ready follows it
        let mut st = s.clone();
        st.conditions
            .get_or_insert_with(Vec::new)
            .push(PodCondition {
                type_: "tkestack.io/InPlaceUpdate".into(),
                status: "True".into(),
                ..Default::default()
            });
        p.status = Some(st);
        let s = run(&p, &mut rt, 1);
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(cond(&s, "tkestack.io/InPlaceUpdate"), "True");
    }

    #[test]
    fn image_change_restarts_in_place() {
        let mut p = pod(json!({}));
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        let s = run(&p, &mut rt, 0);
        assert_eq!(cond(&s, "Ready"), "True");
        p.status = Some(s);
        p.spec.as_mut().expect("spec").containers[0].image = Some("nginx:2.0".into());
        let s = run(&p, &mut rt, 500);
        let cs = &s.container_statuses.as_ref().expect("cs")[0];
        assert_eq!(
            (cs.restart_count, cs.image.as_str(), cs.ready),
            (1, "nginx:2.0", false)
        );
        assert_eq!(cs.image_id, image_id("nginx:2.0"));
        assert!(
            cs.last_state
                .as_ref()
                .and_then(|l| l.terminated.as_ref())
                .is_some()
        );
        assert_eq!(cond(&s, "Ready"), "False");
        assert_eq!(advance(&p, &mut rt, 500), Some(500 + RESTART_NOT_READY_MS));
        p.status = Some(s);
        let s = run(&p, &mut rt, 500 + RESTART_NOT_READY_MS);
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(
            s.container_statuses.as_ref().expect("cs")[0].restart_count,
            1
        );
    }

    #[test]
    fn exit_codes_and_restart_policies() {
        // (restartPolicy, exit code) -> phase after the first exit (+ restart delay)
        let table = [
            ("Never", 0, "Succeeded", 0),
            ("Never", 3, "Failed", 0),
            ("OnFailure", 0, "Succeeded", 0),
            ("OnFailure", 3, "Running", 1),
            ("Always", 0, "Running", 1),
            ("Always", 3, "Running", 1),
        ];
        for (policy, code, want, restarts) in table {
            let p = pod(
                json!({"spec": {"restartPolicy": policy}, "metadata": {"annotations": {
                "sim.e2e.tkestack.io/exit-after-ms": "50", "sim.e2e.tkestack.io/exit-code": code.to_string(), "sim.e2e.tkestack.io/restart-delay-ms": "10"}}}),
            );
            let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
            run(&p, &mut rt, 0);
            let s = run(&p, &mut rt, 61);
            assert_eq!(s.phase.as_deref(), Some(want), "{policy} {code}");
            let cs = &s.container_statuses.as_ref().expect("cs")[0];
            assert_eq!(cs.restart_count, restarts, "{policy} {code}");
            if want == "Failed" {
                let t = cs
                    .state
                    .as_ref()
                    .and_then(|s| s.terminated.clone())
                    .expect("terminated");
                assert_eq!((t.exit_code, t.reason.as_deref()), (code, Some("Error")));
                assert_eq!(cond(&s, "Ready"), "False");
            }
        }
    }

    #[test]
    fn init_failure_with_never_fails_the_pod() {
        let p = pod(
            json!({"spec": {"restartPolicy": "Never", "initContainers": [{"name": "i1", "image": "busybox"}]},
            "metadata": {"annotations": {"sim.e2e.tkestack.io/exit-code.i1": "1"}}}),
        );
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        let s = run(&p, &mut rt, 0);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn deletion_stops_containers_within_grace() {
        let mut p = pod(
            json!({"metadata": {"annotations": {"sim.e2e.tkestack.io/termination-delay-ms": "5000"}}}),
        );
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        run(&p, &mut rt, 0);
        p.metadata.deletion_timestamp = Some(time_ms(2000));
        assert_eq!(advance(&p, &mut rt, 1000), Some(2000));
        assert!(!rt.all_stopped());
        assert_eq!(advance(&p, &mut rt, 2000), None);
        assert!(rt.all_stopped());
        let s = render_status(&p, &rt, 2000);
        let t = s.container_statuses.expect("cs")[0]
            .state
            .clone()
            .and_then(|s| s.terminated)
            .expect("terminated");
        assert_eq!(t.exit_code, 137);
    }

    #[test]
    fn adopts_a_running_pod_from_its_status() {
        let mut p = pod(json!({"spec": {"restartPolicy": "Never"}}));
        let mut rt = PodRuntime::new(&p, 0, "10.0.0.9".into(), "h".into());
        let s = run(&p, &mut rt, 0);
        p.spec.as_mut().expect("spec").containers[0].image = Some("nginx:2.0".into());
        let s2 = run(&p, &mut rt, 5000);
        assert_eq!(
            s2.container_statuses.as_ref().expect("cs")[0].restart_count,
            1
        );
        p.status = Some(s2);
        let adopted = PodRuntime::adopt(&p, 9000, "10.0.0.9".into(), "h".into());
        let again = render_status(&p, &adopted, 9000);
        let cs = &again.container_statuses.expect("cs")[0];
        assert_eq!(
            (cs.restart_count, cs.image.as_str(), cs.ready),
            (1, "nginx:2.0", true)
        );
        assert_eq!(again.phase.as_deref(), Some("Running"));
        assert_eq!(again.start_time, s.start_time);
    }

    #[test]
    fn kubelet_events_follow_transitions() {
        let mut p = pod(json!({}));
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        let b = rt.clone();
        advance(&p, &mut rt, 0);
        let reasons: Vec<&str> = events(&b, &rt, "p").iter().map(|e| e.1).collect();
        assert_eq!(reasons, vec!["Pulled", "Created", "Started"]);
        p.spec.as_mut().expect("spec").containers[0].image = Some("nginx:2.0".into());
        let b = rt.clone();
        advance(&p, &mut rt, 10);
        let reasons: Vec<&str> = events(&b, &rt, "p").iter().map(|e| e.1).collect();
        assert_eq!(reasons, vec!["Killing", "Pulled", "Created", "Started"]);
        p.metadata.deletion_timestamp = Some(time_ms(20_000));
        let b = rt.clone();
        advance(&p, &mut rt, 20);
        let reasons: Vec<&str> = events(&b, &rt, "p").iter().map(|e| e.1).collect();
        assert_eq!(reasons, vec!["Killing"]);
    }

    #[test]
    fn in_place_resize_follows_the_resize_policy() {
        let mut p = pod(
            json!({"spec": {"containers": [{"name": "app", "image": "nginx:1.0",
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
            "resizePolicy": [{"resourceName": "cpu", "restartPolicy": "NotRequired"}, {"resourceName": "memory", "restartPolicy": "RestartContainer"}]}]}}),
        );
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        run(&p, &mut rt, 0);
        let cpu = |s: &PodStatus| {
            s.container_statuses.as_ref().expect("cs")[0]
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .expect("req")["cpu"]
                .0
                .clone()
        };
        // cpu: applied in place, no restart
        p.spec.as_mut().expect("spec").containers[0]
            .resources
            .as_mut()
            .expect("res")
            .requests
            .as_mut()
            .expect("req")
            .insert("cpu".into(), Quantity("150m".into()));
        let s = run(&p, &mut rt, 10);
        assert_eq!(cpu(&s), "150m");
        assert_eq!(
            s.container_statuses.as_ref().expect("cs")[0].restart_count,
            0
        );
        assert_eq!(
            s.container_statuses.as_ref().expect("cs")[0]
                .allocated_resources
                .as_ref()
                .expect("alloc")["cpu"]
                .0,
            "150m"
        );
        // memory: RestartContainer
        p.spec.as_mut().expect("spec").containers[0]
            .resources
            .as_mut()
            .expect("res")
            .limits
            .as_mut()
            .expect("lim")
            .insert("memory".into(), Quantity("128Mi".into()));
        let s = run(&p, &mut rt, 20);
        assert_eq!(
            s.container_statuses.as_ref().expect("cs")[0].restart_count,
            1
        );
    }

    #[test]
    fn held_containers_wait_for_their_hook() {
        let p = pod(json!({"spec": {"initContainers": [{"name": "i", "image": "busybox"}]}}));
        let mut rt = PodRuntime::new(&p, 0, "ip".into(), "h".into());
        assert_eq!(starting(&p, &rt, 0), vec!["i", "app"]);
        rt.containers[0].hold = Some("device plugin: no GPU".into());
        let s = run(&p, &mut rt, 0);
        let w = s.container_statuses.expect("cs")[0]
            .state
            .clone()
            .and_then(|s| s.waiting)
            .expect("waiting");
        assert_eq!(
            (w.reason.as_deref(), w.message.as_deref()),
            (Some("CreateContainerError"), Some("device plugin: no GPU"))
        );
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(starting(&p, &rt, 1), vec!["app"]);
        rt.containers[0].hold = None;
        assert_eq!(run(&p, &mut rt, 1).phase.as_deref(), Some("Running"));
        assert!(starting(&p, &rt, 2).is_empty());
    }

    #[test]
    fn galaxy_annotation_gives_the_ip() {
        let p = pod(
            json!({"metadata": {"annotations": {GALAXY_ARGS: r#"{"common":{"ipinfos":[{"ip":"10.49.27.205/24","vlan":2,"gateway":"10.49.27.1"}]}}"#}}}),
        );
        assert_eq!(galaxy_ip(&p).as_deref(), Some("10.49.27.205"));
        assert_eq!(galaxy_ip(&pod(json!({}))), None);
    }

    #[test]
    fn scripts_parse_with_container_overrides() {
        let ann: BTreeMap<String, String> = [
            ("sim.e2e.tkestack.io/exit-code".to_string(), "2".to_string()),
            (
                "sim.e2e.tkestack.io/exit-code.side".to_string(),
                "0".to_string(),
            ),
            (
                "sim.e2e.tkestack.io/exit-after-ms".to_string(),
                "10".to_string(),
            ),
        ]
        .into();
        assert_eq!(Script::for_container(&ann, "main", false).exit_code, 2);
        assert_eq!(Script::for_container(&ann, "side", false).exit_code, 0);
        assert_eq!(
            Script::for_container(&BTreeMap::new(), "i", true).exit_after,
            Some(0)
        );
        assert_eq!(
            Script::for_container(&BTreeMap::new(), "c", false).exit_after,
            None
        );
    }
}
