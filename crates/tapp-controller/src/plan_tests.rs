//! Table tests of the planner: the original's golden tables (reference §G) and our own cases.

use super::*;
use addon_common::api::tapp::TAppStatus;
use addon_common::k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

fn base_template(image: &str, restart: &str) -> Value {
    json!({"metadata": {"labels": {"app": "t"}},
           "spec": {"restartPolicy": restart, "containers": [{"name": "c", "image": image}]}})
}

/// A defaulted TApp named `t` (uid `u1`) with `replicas` instances.
fn tapp(replicas: i32) -> TApp {
    let mut t: TApp = serde_json::from_value(json!({
        "apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
        "metadata": {"name": "t", "namespace": "ns", "uid": "u1", "generation": 3, "labels": {"app": "t"}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "t"}},
                 "template": base_template("img:1", "OnFailure"),
                 "updateStrategy": {"template": "default", "maxUnavailable": 1, "forceUpdate": {"maxUnavailable": "100%"}}}
    }))
    .expect("tapp");
    t.status = Some(TAppStatus::default());
    t
}

fn add_pool(t: &mut TApp, name: &str, image: &str, restart: &str) {
    t.spec.template_pool.insert(
        name.into(),
        serde_json::from_value(base_template(image, restart)).expect("template"),
    );
}

/// The pod the controller would create for `id`, observed in `phase` with PodReady `ready`.
fn pod_of(t: &TApp, id: u32, phase: &str, ready: Option<bool>) -> Pod {
    let template = t
        .spec
        .template_for(&id.to_string())
        .expect("template")
        .clone();
    let mut pod = build_pod(t, id, &template, &TemplateHashes::of(&template));
    pod.metadata.uid = Some(format!("pod-uid-{id}"));
    let mut status = json!({"phase": phase, "conditions": [{"type": "tkestack.io/InPlaceUpdate", "status": "True"}]});
    if let Some(r) = ready {
        status["conditions"]
            .as_array_mut()
            .expect("array")
            .push(json!({"type": "Ready", "status": if r { "True" } else { "False" }}));
    }
    pod.status = serde_json::from_value(status).ok();
    pod
}

fn now() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
        .expect("time")
        .with_timezone(&Utc)
}

fn run(t: &TApp, pods: &[Pod], flags: Flags) -> Plan {
    let observed = Observed {
        pods: pods.iter().collect(),
        ..Observed::<Pod>::default()
    };
    plan(t, &observed, now(), &flags)
}

fn ids(names: impl IntoIterator<Item = String>) -> Vec<u32> {
    let mut v: Vec<u32> = names
        .into_iter()
        .filter_map(|n| n.rsplit('-').next().and_then(|s| s.parse().ok()))
        .collect();
    v.sort();
    v
}

/// Reference §G: TestAppStatus (tkestack/tapp pkg/tapp/tapp_test.go), including the "with any
/// other status added" variations.
#[test]
fn golden_app_status() {
    use InstanceStatus as S;
    let table: &[(&[S], AppStatus, bool)] = &[
        (&[], AppStatus::Pending, false),
        (&[S::NotCreated], AppStatus::Running, true),
        (&[S::Pending], AppStatus::Running, true),
        (&[S::Running], AppStatus::Running, true),
        (&[S::Killing], AppStatus::Running, true),
        (&[S::Killed], AppStatus::Killed, false),
        (&[S::Succ], AppStatus::Succ, false),
        (&[S::Failed], AppStatus::Failed, false),
        (&[S::Unknown], AppStatus::Running, true),
        (&[S::Killed, S::Failed], AppStatus::Failed, false),
        (&[S::Succ, S::Failed], AppStatus::Failed, false),
        (&[S::Killed, S::Succ], AppStatus::Succ, false),
    ];
    for (statuses, want, with_any) in table {
        let map: BTreeMap<String, S> = statuses
            .iter()
            .enumerate()
            .map(|(i, s)| (i.to_string(), *s))
            .collect();
        assert_eq!(app_status(&map), *want, "{statuses:?}");
        if *with_any {
            for extra in S::ALL {
                let mut m = map.clone();
                m.insert(map.len().to_string(), extra);
                assert_eq!(app_status(&m), *want, "{statuses:?} + {extra:?}");
            }
        }
    }
    assert_eq!(
        app_status(&BTreeMap::from([("0".into(), S::PodFailed)])),
        AppStatus::Running
    );
}

/// Reference §G: TestGetDesiredInstance (12 ids, with/without deletePodAfterAppFinish, and a
/// finished app).
#[test]
fn golden_desired_instances() {
    use InstanceStatus as S;
    let mut t = tapp(12);
    t.spec.statuses.insert("0".into(), S::Killed);
    let st = t.status.get_or_insert_default();
    for (id, s) in [
        (1, S::NotCreated),
        (2, S::Pending),
        (3, S::Running),
        (4, S::Updating),
        (5, S::PodFailed),
        (6, S::PodSucc),
        (7, S::Killing),
        (8, S::Killed),
        (9, S::Failed),
        (10, S::Succ),
        (11, S::Unknown),
    ] {
        st.statuses.insert(id.to_string(), s);
    }
    let cases: &[(AppStatus, bool, &[u32], &[u32])] = &[
        (
            AppStatus::Running,
            false,
            &[1, 2, 3, 4, 5, 6, 7, 8, 11],
            &[0, 9, 10],
        ),
        (
            AppStatus::Running,
            true,
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
            &[0],
        ),
        (
            AppStatus::Succ,
            true,
            &[1, 2, 3, 4, 5, 6, 7, 8, 11],
            &[0, 9, 10],
        ),
    ];
    for (app, delete_after, want_running, want_completed) in cases {
        t.status.get_or_insert_default().app_status = Some(*app);
        let flags = Flags {
            delete_pod_after_app_finish: *delete_after,
            ..Flags::default()
        };
        let (running, completed) = desired_instances(&t, &flags);
        assert_eq!(
            running.into_iter().collect::<Vec<_>>(),
            *want_running,
            "{app:?} {delete_after}"
        );
        assert_eq!(
            completed.into_iter().collect::<Vec<_>>(),
            *want_completed,
            "{app:?} {delete_after}"
        );
    }
}

/// Reference §G: TestInstanceStatus (16 instances, template restartPolicy OnFailure).
#[test]
fn golden_instance_status() {
    use InstanceStatus as S;
    let mut t = tapp(16);
    let mut pods = Vec::new();
    let dying = Some(Time(to_jiff(now())));
    for id in 0..16u32 {
        let key = id.to_string();
        let mut pod = pod_of(&t, id, "Pending", None);
        pod.status = serde_json::from_value(json!({})).ok();
        let set_phase =
            |p: &mut Pod, ph: &str| p.status = serde_json::from_value(json!({"phase": ph})).ok();
        match id {
            0 => continue,
            1 => set_phase(&mut pod, "Pending"),
            2 => set_phase(&mut pod, "Running"),
            3 => set_phase(&mut pod, "Succeeded"),
            4 => set_phase(&mut pod, "Failed"),
            5 => set_phase(&mut pod, "Unknown"),
            6 => {
                set_phase(&mut pod, "Running");
                pod.metadata.deletion_timestamp = dying.clone();
            }
            7 => {
                set_phase(&mut pod, "Running");
                t.spec.statuses.insert(key, S::Killed);
            }
            8 => {
                t.spec.statuses.insert(key, S::Killed);
                continue;
            }
            9 => {
                t.status
                    .get_or_insert_default()
                    .statuses
                    .insert(key, S::Failed);
                continue;
            }
            10 => {
                t.status
                    .get_or_insert_default()
                    .statuses
                    .insert(key, S::Succ);
                continue;
            }
            11 => {
                t.status
                    .get_or_insert_default()
                    .statuses
                    .insert(key, S::Running);
                continue;
            }
            12 => {
                set_phase(&mut pod, "Succeeded");
                pod.metadata.deletion_timestamp = dying.clone();
                t.status
                    .get_or_insert_default()
                    .statuses
                    .insert(key, S::Succ);
            }
            13 => {
                pod.status = serde_json::from_value(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})).ok();
            }
            14 => {
                pod.status = serde_json::from_value(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]})).ok();
            }
            15 => {
                set_phase(&mut pod, "Running");
                t.status
                    .get_or_insert_default()
                    .statuses
                    .insert(key, S::Killed);
            }
            _ => {}
        }
        pods.push(pod);
    }
    let by_id: BTreeMap<u32, &Pod> = pods
        .iter()
        .map(|p| (instance_id(p).expect("id"), p))
        .collect();
    let got = instance_statuses(&t, &by_id);
    let want = [
        S::NotCreated,
        S::Pending,
        S::Running,
        S::Succ,
        S::PodFailed,
        S::Unknown,
        S::Killing,
        S::Running,
        S::Killed,
        S::Failed,
        S::Succ,
        S::NotCreated,
        S::Succ,
        S::Running,
        S::Pending,
        S::Running,
    ];
    for (id, want) in want.iter().enumerate() {
        assert_eq!(got[&id.to_string()], *want, "instance {id}");
    }
}

/// Reference §G: TestInstanceFailed / TestInstanceSucc / TestShouldPodMigrate — the migrate
/// matrix by restartPolicy, neverMigrate and kubelet-rejected pods.
#[test]
fn golden_migrate_matrix() {
    for (restart, phase, migrate) in [
        ("Always", "Failed", true),
        ("Always", "Succeeded", true),
        ("OnFailure", "Failed", true),
        ("OnFailure", "Succeeded", false),
        ("Never", "Failed", false),
        ("Never", "Succeeded", false),
    ] {
        let mut t = tapp(2);
        t.spec.template = serde_json::from_value(base_template("img:1", restart)).expect("t");
        let mut pod = pod_of(&t, 0, phase, None);
        pod.status = serde_json::from_value(json!({"phase": phase, "containerStatuses": [{"name": "c", "image": "img:1", "imageID": "x", "ready": false, "restartCount": 0}]})).ok();
        assert_eq!(
            should_migrate(&t.spec, &pod, "0"),
            migrate,
            "{restart} {phase}"
        );
        let p = run(
            &t,
            &[pod.clone(), pod_of(&t, 1, "Running", Some(true))],
            Flags::default(),
        );
        assert_eq!(
            p.deletes.len(),
            usize::from(migrate),
            "{restart} {phase}: {:?}",
            p.deletes
        );
        let status = p.status.expect("status");
        let want = match (migrate, phase) {
            (true, "Failed") => InstanceStatus::PodFailed,
            (true, _) => InstanceStatus::PodSucc,
            (false, "Failed") => InstanceStatus::Failed,
            (false, _) => InstanceStatus::Succ,
        };
        assert_eq!(status.statuses["0"], want);
        t.spec.never_migrate = true;
        assert!(!should_migrate(&t.spec, &pod, "0"));
    }
    // TestShouldPodMigrate: bound to a node but no container ever ran → migrate, even with Never.
    let mut t = tapp(1);
    t.spec.template = serde_json::from_value(base_template("img:1", "Never")).expect("t");
    let pod: Pod = serde_json::from_value(json!({"spec": {"nodeName": "test-node", "containers": []}, "status": {"phase": "Succeeded"}})).expect("pod");
    assert!(should_migrate(&t.spec, &pod, "0"));
    t.spec.never_migrate = true;
    assert!(!should_migrate(&t.spec, &pod, "0"));
}

#[derive(Clone, Copy, Debug)]
enum St {
    Ready,
    NotReady,
    Update,
    RollUpdate,
    RollUpdateNotReady,
    Dying,
    Killed,
    Complete,
}

/// Builds the original's TestRollingUpdate fixture: template "rollupdate" is the rolling
/// template, "forceupdate" another one; pods run the default template.
fn rolling_fixture(states: &[St], max_unavailable: IntOrString) -> (TApp, Vec<Pod>) {
    let mut t = tapp(states.len() as i32);
    t.spec.template = serde_json::from_value(base_template("img:1", "Always")).expect("t");
    add_pool(&mut t, "rollupdate", "img:1roll_update", "Always");
    add_pool(&mut t, "forceupdate", "img:1force_update", "Always");
    t.spec.update_strategy.template = Some("rollupdate".into());
    t.spec.update_strategy.max_unavailable = Some(max_unavailable);
    let mut pods = Vec::new();
    for (i, st) in states.iter().enumerate() {
        let id = i as u32;
        let key = id.to_string();
        let pod = match st {
            St::Ready => pod_of(&t, id, "Running", Some(true)),
            St::NotReady => pod_of(&t, id, "Running", Some(false)),
            St::Update => {
                let p = pod_of(&t, id, "Running", Some(true));
                t.spec.templates.insert(key, "forceupdate".into());
                p
            }
            St::RollUpdate => {
                let p = pod_of(&t, id, "Running", Some(true));
                t.spec.templates.insert(key, "rollupdate".into());
                p
            }
            St::RollUpdateNotReady => {
                let p = pod_of(&t, id, "Running", Some(false));
                t.spec.templates.insert(key, "rollupdate".into());
                p
            }
            St::Dying => {
                let mut p = pod_of(&t, id, "Running", Some(true));
                p.metadata.deletion_timestamp = Some(Time(to_jiff(now())));
                p
            }
            St::Killed => {
                let p = pod_of(&t, id, "Running", Some(true));
                t.spec.statuses.insert(key, InstanceStatus::Killed);
                p
            }
            St::Complete => pod_of(&t, id, "Failed", Some(false)),
        };
        pods.push(pod);
    }
    (t, pods)
}

/// Reference §G: TestRollingUpdate (tkestack/tapp pkg/tapp/tapp_test.go), every row: the ids
/// that get an in-place update.
#[test]
fn golden_rolling_update() {
    use St::*;
    let one = || IntOrString::Int(1);
    let pct = || IntOrString::String("25%".into());
    let table: Vec<(Vec<St>, Vec<u32>, IntOrString)> = vec![
        (vec![Ready, Ready, Ready], vec![], one()),
        (vec![Ready, Ready, NotReady], vec![], one()),
        (vec![Ready, Ready, Update], vec![2], one()),
        (vec![Ready, Ready, Dying], vec![], one()),
        (vec![Ready, Ready, Killed], vec![], one()),
        (vec![Ready, Ready, Complete], vec![], one()),
        (vec![RollUpdate, Ready, Ready, Ready], vec![0], one()),
        (vec![RollUpdate, Ready, Ready, NotReady], vec![], one()),
        (vec![RollUpdate, Ready, Ready, Update], vec![3], one()),
        (vec![RollUpdate, Ready, Ready, Dying], vec![], one()),
        (vec![RollUpdate, Ready, Ready, Killed], vec![0], one()),
        (vec![RollUpdate, Ready, Ready, Complete], vec![], one()),
        (
            vec![RollUpdate, RollUpdateNotReady, Ready, Complete],
            vec![1],
            one(),
        ),
        (
            vec![RollUpdateNotReady, RollUpdateNotReady, Ready, Ready],
            vec![0, 1],
            one(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Ready],
            vec![0],
            one(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, NotReady],
            vec![],
            one(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Update],
            vec![4],
            one(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Dying],
            vec![],
            one(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Killed],
            vec![0],
            one(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Complete],
            vec![],
            one(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Update, Update],
            vec![4, 5],
            one(),
        ),
        (vec![Ready, Ready, Ready], vec![], pct()),
        (vec![Ready, Ready, NotReady], vec![], pct()),
        (vec![Ready, Ready, Update], vec![2], pct()),
        (vec![Ready, Ready, Dying], vec![], pct()),
        (vec![Ready, Ready, Killed], vec![], pct()),
        (vec![Ready, Ready, Complete], vec![], pct()),
        (vec![RollUpdate, Ready, Ready, Ready], vec![0], pct()),
        (vec![RollUpdate, Ready, Ready, NotReady], vec![], pct()),
        (vec![RollUpdate, Ready, Ready, Update], vec![3], pct()),
        (vec![RollUpdate, Ready, Ready, Dying], vec![], pct()),
        (vec![RollUpdate, Ready, Ready, Killed], vec![0], pct()),
        (vec![RollUpdate, Ready, Ready, Complete], vec![], pct()),
        (
            vec![RollUpdate, RollUpdateNotReady, Ready, Complete],
            vec![1],
            pct(),
        ),
        (
            vec![RollUpdateNotReady, RollUpdateNotReady, Ready, Ready],
            vec![0, 1],
            pct(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Ready],
            vec![0, 1],
            pct(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, NotReady],
            vec![0],
            pct(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Update],
            vec![0, 4],
            pct(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Dying],
            vec![0],
            pct(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Killed],
            vec![0],
            pct(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Complete],
            vec![0],
            pct(),
        ),
        (
            vec![RollUpdate, RollUpdate, Ready, Ready, Update, Update],
            vec![4, 5],
            pct(),
        ),
    ];
    for (states, want, budget) in table {
        let (t, pods) = rolling_fixture(&states, budget.clone());
        let p = run(&t, &pods, Flags::default());
        let got = ids(p
            .updates
            .iter()
            .filter(|u| u.kind == UpdateKind::Images)
            .map(|u| u.name.clone()));
        assert_eq!(got, want, "{states:?} maxUnavailable {budget:?}");
        // Every updated pod gets its gate set False in the same plan.
        for id in &got {
            assert!(
                p.conditions
                    .iter()
                    .any(|c| c.name == format!("t-{id}") && !c.ready),
                "{states:?}: gate of {id} not set False"
            );
        }
    }
}

/// Reference §G: TestForceUpdateStrategy — the force group's own budget.
#[test]
fn force_update_budget() {
    use St::*;
    for (budget, want) in [
        (IntOrString::String("100%".into()), vec![0, 1, 2, 3]),
        (IntOrString::Int(1), vec![0]),
        (IntOrString::Int(2), vec![0, 1]),
        (IntOrString::String("50%".into()), vec![0, 1]),
    ] {
        let (mut t, pods) = rolling_fixture(&[Update, Update, Update, Update], IntOrString::Int(1));
        t.spec.update_strategy.force_update = Some(addon_common::api::tapp::ForceUpdateStrategy {
            max_unavailable: Some(budget.clone()),
        });
        let p = run(&t, &pods, Flags::default());
        assert_eq!(
            ids(p.updates.iter().map(|u| u.name.clone())),
            want,
            "{budget:?}"
        );
    }
}

/// The budget holds across restarts: a pod whose gate is False (set by a previous run) is
/// unavailable, so no further pod is taken. (Pods the cache does not show as changed yet are
/// the executor's concern: it does not plan until the cache shows its writes.)
#[test]
fn budget_is_computed_from_observed_pods() {
    use St::*;
    let (mut t, mut pods) =
        rolling_fixture(&[RollUpdate, RollUpdate, RollUpdate], IntOrString::Int(1));
    t.spec.update_strategy.in_place_update_grace_period_seconds = Some(30);
    // Run 1: gate of 0 goes False, no update yet (grace), requeue after 30s.
    let p = run(&t, &pods, Flags::default());
    assert!(p.updates.is_empty());
    assert_eq!(
        p.conditions
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>(),
        ["t-0"]
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(30)));
    // "Restart": the observed pod 0 now has the gate False since 10s; Ready False.
    let since = now() - chrono::Duration::seconds(10);
    pods[0].status = serde_json::from_value(json!({"phase": "Running", "conditions": [
        {"type": "tkestack.io/InPlaceUpdate", "status": "False", "lastTransitionTime": since.to_rfc3339()},
        {"type": "Ready", "status": "False"}]})).ok();
    let p = run(&t, &pods, Flags::default());
    assert!(p.updates.is_empty(), "grace not over: {:?}", p.updates);
    assert!(
        p.conditions.iter().all(|c| c.name == "t-0" || c.ready),
        "no other pod is taken: {:?}",
        p.conditions
    );
    assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
    // After the grace period: pod 0 is updated, still nobody else.
    let since = now() - chrono::Duration::seconds(31);
    pods[0].status = serde_json::from_value(json!({"phase": "Running", "conditions": [
        {"type": "tkestack.io/InPlaceUpdate", "status": "False", "lastTransitionTime": since.to_rfc3339()},
        {"type": "Ready", "status": "False"}]})).ok();
    let p = run(&t, &pods, Flags::default());
    assert_eq!(ids(p.updates.iter().map(|u| u.name.clone())), vec![0]);
}

#[test]
fn new_tapp_gets_defaults_first_then_pods() {
    let mut t: TApp =
        serde_json::from_value(json!({"apiVersion": "apps.tkestack.io/v1", "kind": "TApp",
        "metadata": {"name": "example-tapp", "namespace": "default", "uid": "u", "generation": 1},
        "spec": {"replicas": 3, "template": {"metadata": {"labels": {"app": "example-tapp"}},
                 "spec": {"containers": [{"name": "nginx", "image": "nginx:1.7.9"}]}}}}))
        .expect("tapp");
    let p = run(&t, &[], Flags::default());
    let patch = p.defaults.clone().expect("defaults");
    assert_eq!(
        patch,
        json!({
        "metadata": {"labels": {"app": "example-tapp"}},
        "spec": {"selector": {"matchLabels": {"app": "example-tapp"}},
                 "updateStrategy": {"template": "default", "maxUnavailable": 1, "forceUpdate": {"maxUnavailable": "100%"}}}})
    );
    assert!(p.create_pods.is_empty() && p.status.is_none());
    // Apply the patch as the API server would.
    let mut v = serde_json::to_value(&t).expect("v");
    json_patch::merge(&mut v, &patch);
    t = serde_json::from_value(v).expect("t");
    let p = run(&t, &[], Flags::default());
    assert!(p.defaults.is_none());
    assert_eq!(
        ids(p.create_pods.iter().filter_map(|p| p.metadata.name.clone())),
        vec![0, 1, 2]
    );
    let pod = &p.create_pods[1];
    assert_eq!(pod.metadata.name.as_deref(), Some("example-tapp-1"));
    let labels = pod.metadata.labels.as_ref().expect("labels");
    assert_eq!(labels["tapp_instance_key"], "1");
    assert_eq!(labels["app"], "example-tapp");
    assert!(labels["tapp_template_hash_key"].starts_with("v2-"));
    let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!(
        (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
        ("TApp", "u", Some(true))
    );
    let gates = pod
        .spec
        .as_ref()
        .and_then(|s| s.readiness_gates.clone())
        .expect("gates");
    assert_eq!(gates[0].condition_type, "tkestack.io/InPlaceUpdate");
    let status = p.status.expect("status");
    assert_eq!(status.app_status, Some(AppStatus::Running));
    assert_eq!(status.replicas, 0);
    assert_eq!(
        status.scale_label_selector.as_deref(),
        Some("app=example-tapp")
    );
    assert_eq!(status.statuses["2"], InstanceStatus::NotCreated);
    assert_eq!(status.observed_generation, Some(1));
}

#[test]
fn kill_scale_down_and_status_counting() {
    let mut t = tapp(3);
    let pods: Vec<Pod> = (0..5)
        .map(|i| pod_of(&t, i, "Running", Some(true)))
        .collect();
    t.spec.statuses.insert("1".into(), InstanceStatus::Killed);
    let p = run(&t, &pods, Flags::default());
    let mut deleted: Vec<_> = p.deletes.iter().map(|d| d.name.clone()).collect();
    deleted.sort();
    assert_eq!(deleted, ["t-1", "t-3", "t-4"]);
    assert!(
        p.deletes
            .iter()
            .all(|d| !d.force && d.reason == DeleteReason::Delete)
    );
    let status = p.status.expect("status");
    assert_eq!(
        status.statuses.len(),
        5,
        "ids >= replicas with pods are reported"
    );
    assert_eq!(status.ready_replicas, 5);
    // Once pod 1 is gone: Killed, still counted in replicas.
    let p = run(&t, &[pods[0].clone(), pods[2].clone()], Flags::default());
    let status = p.status.expect("status");
    assert_eq!(status.statuses["1"], InstanceStatus::Killed);
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, 2);
    assert!(p.create_pods.is_empty());
}

#[test]
fn pin_instance_to_pool_template_updates_in_place() {
    // Seed step 2: instance 1 pinned to pool template "test" (image only) → in place.
    let mut t = tapp(3);
    let pods: Vec<Pod> = (0..3)
        .map(|i| pod_of(&t, i, "Running", Some(true)))
        .collect();
    add_pool(&mut t, "test", "nginx:latest", "OnFailure");
    t.spec.templates.insert("1".into(), "test".into());
    let p = run(&t, &pods, Flags::default());
    assert!(p.deletes.is_empty() && p.create_pods.is_empty());
    assert_eq!(p.updates.len(), 1);
    let u = &p.updates[0];
    assert_eq!((u.name.as_str(), u.kind), ("t-1", UpdateKind::Images));
    let ops = u.patch.as_array().expect("ops");
    assert!(ops.contains(
        &json!({"op": "replace", "path": "/spec/containers/0/image", "value": "nginx:latest"})
    ));
    assert!(
        ops.iter()
            .any(|o| o["path"] == "/metadata/annotations/tkestack.io~1inplace-update-state")
    );
    // force group (template "test" is not the rolling one): budget 100%.
    assert_eq!(p.updated_instances, 2);
}

#[test]
fn non_image_change_recreates_and_init_container_images_update_in_place() {
    let mut t = tapp(2);
    let pods: Vec<Pod> = (0..2)
        .map(|i| pod_of(&t, i, "Running", Some(true)))
        .collect();
    t.spec.template = serde_json::from_value(json!({"metadata": {"labels": {"app": "t"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "img:1"}]}}))
    .expect("t");
    let p = run(&t, &pods, Flags::default());
    assert_eq!(
        p.deletes
            .iter()
            .map(|d| (d.name.as_str(), d.reason))
            .collect::<Vec<_>>(),
        [("t-0", DeleteReason::Recreate)]
    );

    let mut t = tapp(1);
    t.spec.template = serde_json::from_value(json!({"metadata": {"labels": {"app": "t"}},
        "spec": {"initContainers": [{"name": "i", "image": "init:1"}], "containers": [{"name": "c", "image": "img:1"}]}})).expect("t");
    let pods = vec![pod_of(&t, 0, "Running", Some(true))];
    t.spec
        .template
        .spec
        .as_mut()
        .expect("spec")
        .init_containers
        .as_mut()
        .expect("init")[0]
        .image = Some("init:2".into());
    let p = run(&t, &pods, Flags::default());
    assert_eq!(p.updates.len(), 1);
    assert!(p.updates[0].patch.as_array().expect("ops").contains(
        &json!({"op": "replace", "path": "/spec/initContainers/0/image", "value": "init:2"})
    ));
}

#[test]
fn resources_resize_in_place_only_when_served() {
    let mut t = tapp(1);
    let pods = vec![pod_of(&t, 0, "Running", Some(true))];
    t.spec.template.spec.as_mut().expect("spec").containers[0].resources =
        serde_json::from_value(json!({"limits": {"cpu": "2"}})).ok();
    let p = run(
        &t,
        &pods,
        Flags {
            resize_supported: true,
            ..Flags::default()
        },
    );
    assert_eq!(p.updates.len(), 1);
    assert_eq!(p.updates[0].kind, UpdateKind::Resize);
    let rp = p.updates[0].resize_patch.clone().expect("resize");
    assert!(
        rp.as_array()
            .expect("ops")
            .iter()
            .any(|o| o["value"] == json!({"limits": {"cpu": "2"}}))
    );
    let p = run(&t, &pods, Flags::default());
    assert!(p.updates.is_empty());
    assert_eq!(p.deletes[0].reason, DeleteReason::Recreate);
}

#[test]
fn adoption_of_pods_with_foreign_hash_labels() {
    let t = tapp(2);
    let mut pods: Vec<Pod> = (0..2)
        .map(|i| pod_of(&t, i, "Running", Some(true)))
        .collect();
    for p in &mut pods {
        let labels = p.metadata.labels.get_or_insert_default();
        labels.insert(TEMPLATE_HASH_LABEL.into(), "17685766981161034909".into());
        labels.insert(UNIQ_HASH_LABEL.into(), "3226707109688322824".into());
        p.metadata.annotations = None;
        // What the API server adds.
        let spec = p.spec.as_mut().expect("spec");
        spec.node_name = Some("n1".into());
        spec.containers[0].image_pull_policy = Some("IfNotPresent".into());
    }
    // Pod 1 runs another image (the Go controller was mid-rollout).
    pods[1].spec.as_mut().expect("spec").containers[0].image = Some("img:0".into());
    let p = run(&t, &pods, Flags::default());
    assert!(p.deletes.is_empty(), "never recreated: {:?}", p.deletes);
    let kinds: Vec<_> = p
        .updates
        .iter()
        .map(|u| (u.name.as_str(), u.kind))
        .collect();
    assert_eq!(
        kinds,
        [("t-0", UpdateKind::Metadata), ("t-1", UpdateKind::Images)]
    );
    let relabel = p.updates[0].patch.as_array().expect("ops");
    assert!(
        relabel
            .iter()
            .any(|o| o["path"] == "/metadata/labels/tapp_template_hash_key")
    );
    assert!(
        !relabel
            .iter()
            .any(|o| o["path"].as_str().is_some_and(|s| s.starts_with("/spec")))
    );
    assert!(
        !p.conditions.iter().any(|c| c.name == "t-0" && !c.ready),
        "no restart protocol for a relabel"
    );
}

#[test]
fn force_delete_only_for_lost_nodes() {
    let mut t = tapp(2);
    let mut pods: Vec<Pod> = (0..2)
        .map(|i| pod_of(&t, i, "Running", Some(true)))
        .collect();
    for (i, node) in ["good", "bad"].iter().enumerate() {
        pods[i].metadata.deletion_timestamp = Some(Time(to_jiff(now())));
        pods[i].spec.as_mut().expect("spec").node_name = Some((*node).into());
    }
    let nodes = BTreeMap::from([("good".to_string(), true), ("bad".to_string(), false)]);
    let observe = |pods: &[Pod]| {
        plan(
            &t_clone(&t),
            &Observed {
                pods: pods.iter().collect(),
                nodes: Some(&nodes),
                ..Observed::<Pod>::default()
            },
            now(),
            &Flags::default(),
        )
    };
    fn t_clone(t: &TApp) -> TApp {
        t.clone()
    }
    assert!(observe(&pods).deletes.is_empty(), "forceDeletePod off");
    t.spec.force_delete_pod = true;
    let p = plan(
        &t,
        &Observed {
            pods: pods.iter().collect(),
            nodes: Some(&nodes),
            ..Observed::<Pod>::default()
        },
        now(),
        &Flags::default(),
    );
    assert_eq!(
        p.deletes,
        vec![PodDelete {
            name: "t-1".into(),
            uid: "pod-uid-1".into(),
            force: true,
            reason: DeleteReason::Delete
        }]
    );
    assert_eq!(p.requeue_after, Some(NODE_RECHECK));
    // Without node information only the NodeLost reason counts (TestInstanceForceDeleted).
    pods[0].status.as_mut().expect("status").reason = Some(NODE_LOST_REASON.into());
    let p = run(&t, &pods, Flags::default());
    assert_eq!(ids(p.deletes.iter().map(|d| d.name.clone())), vec![0]);
}

#[test]
fn batch_apps_keep_finished_pods_until_the_app_finishes() {
    let mut t = tapp(2);
    t.spec.template = serde_json::from_value(base_template("img:1", "Never")).expect("t");
    let pods = vec![
        pod_of(&t, 0, "Succeeded", None),
        pod_of(&t, 1, "Running", Some(true)),
    ];
    t.status
        .get_or_insert_default()
        .statuses
        .insert("0".into(), InstanceStatus::Succ);
    let p = run(&t, &pods, Flags::default());
    assert!(
        p.deletes.is_empty(),
        "kept while the app runs (default flag)"
    );
    let p = run(
        &t,
        &pods,
        Flags {
            delete_pod_after_app_finish: false,
            ..Flags::default()
        },
    );
    assert_eq!(ids(p.deletes.iter().map(|d| d.name.clone())), vec![0]);
    // Both finished → app Succ → finished pods deleted, instance stays Succ.
    let pods = vec![
        pod_of(&t, 0, "Succeeded", None),
        pod_of(&t, 1, "Failed", None),
    ];
    let st = t.status.get_or_insert_default();
    st.statuses.insert("1".into(), InstanceStatus::Failed);
    st.app_status = Some(AppStatus::Failed);
    let p = run(&t, &pods, Flags::default());
    assert_eq!(ids(p.deletes.iter().map(|d| d.name.clone())), vec![0, 1]);
    let p = run(&t, &[], Flags::default());
    let status = p.status.expect("status");
    assert_eq!(status.app_status, Some(AppStatus::Failed));
    assert!(p.create_pods.is_empty());
}

#[test]
fn claims_are_created_before_pods_and_reused() {
    let mut t = tapp(2);
    t.spec.volume_claim_templates = serde_json::from_value(json!([{"metadata": {"name": "data", "labels": {"x": "y"}},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}])).expect("claims");
    t.spec.template.spec.as_mut().expect("spec").volumes =
        serde_json::from_value(json!([{"name": "data", "emptyDir": {}}])).ok();
    let existing: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": "data-t-0"}})).expect("pvc");
    let observed = Observed {
        pvcs: vec![&existing.metadata],
        ..Observed::<Pod>::default()
    };
    let p = plan(&t, &observed, now(), &Flags::default());
    assert_eq!(
        p.create_pvcs
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect::<Vec<_>>(),
        ["data-t-1"]
    );
    let pvc = &p.create_pvcs[0];
    assert_eq!(pvc.metadata.labels.as_ref().expect("labels")["app"], "t");
    assert!(
        pvc.metadata.owner_references.is_some(),
        "owned like the original by default"
    );
    let vols = p.create_pods[0]
        .spec
        .as_ref()
        .and_then(|s| s.volumes.clone())
        .expect("volumes");
    assert_eq!(vols.len(), 1);
    assert_eq!(
        vols[0]
            .persistent_volume_claim
            .as_ref()
            .map(|c| c.claim_name.as_str()),
        Some("data-t-0")
    );
    // whenScaled: Delete removes the claims of removed ids; Retain keeps them.
    let stale: PersistentVolumeClaim =
        serde_json::from_value(json!({"metadata": {"name": "data-t-5", "labels": {"app": "t"}}}))
            .expect("pvc");
    t.spec.persistent_volume_claim_retention_policy =
        serde_json::from_value(json!({"whenScaled": "Delete"})).ok();
    let p = plan(
        &t,
        &Observed {
            pvcs: vec![&existing.metadata, &stale.metadata],
            ..Observed::<Pod>::default()
        },
        now(),
        &Flags::default(),
    );
    assert_eq!(p.delete_pvcs, ["data-t-5"]);
}

#[test]
fn service_name_sets_hostname_and_subdomain() {
    let mut t = tapp(1);
    t.spec.service_name = Some("svc".into());
    let p = run(&t, &[], Flags::default());
    let spec = p.create_pods[0].spec.clone().expect("spec");
    assert_eq!(
        (spec.hostname.as_deref(), spec.subdomain.as_deref()),
        (Some("t-0"), Some("svc"))
    );
}

#[test]
fn templates_with_missing_pool_entries_or_foreign_labels_are_reported_not_created() {
    let mut t = tapp(3);
    t.spec.templates.insert("0".into(), "missing".into());
    t.spec.template_pool.insert(
        "other".into(),
        serde_json::from_value(json!({"metadata": {"labels": {"app": "other"}},
        "spec": {"containers": [{"name": "c", "image": "x"}]}}))
        .expect("t"),
    );
    t.spec.templates.insert("1".into(), "other".into());
    let p = run(&t, &[], Flags::default());
    assert_eq!(
        ids(p.create_pods.iter().filter_map(|p| p.metadata.name.clone())),
        vec![2]
    );
    let reasons: Vec<_> = p.warnings.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(reasons, ["TemplateNotFound", "SelectorMismatch"]);
}

#[test]
fn auto_delete_unused_template_and_gate_true_on_new_pods() {
    let mut t = tapp(1);
    add_pool(&mut t, "used", "a", "Always");
    add_pool(&mut t, "unused", "b", "Always");
    t.spec.templates.insert("0".into(), "used".into());
    t.spec.auto_delete_unused_template = true;
    let p = run(&t, &[], Flags::default());
    assert_eq!(
        p.defaults,
        Some(json!({"spec": {"templatePool": {"unused": null}}}))
    );
    // A fresh pod without the gate condition gets it True.
    let t = tapp(1);
    let mut pod = pod_of(&t, 0, "Pending", None);
    pod.status = serde_json::from_value(json!({"phase": "Pending"})).ok();
    let p = run(&t, &[pod], Flags::default());
    assert_eq!(p.conditions.len(), 1);
    assert!(p.conditions[0].ready);
}

#[test]
fn status_patch_nulls_removed_ids() {
    let old = TAppStatus {
        statuses: BTreeMap::from([
            ("0".into(), InstanceStatus::Running),
            ("5".into(), InstanceStatus::Killing),
        ]),
        ..TAppStatus::default()
    };
    let new = TAppStatus {
        statuses: BTreeMap::from([("0".into(), InstanceStatus::Running)]),
        app_status: Some(AppStatus::Running),
        ..TAppStatus::default()
    };
    let patch = status_patch(Some(&old), &new);
    assert_eq!(
        patch["status"]["statuses"],
        json!({"0": "Running", "5": null})
    );
    assert_eq!(patch["status"]["appStatus"], "Running");
}

#[test]
fn budgets_resolve_like_go() {
    assert_eq!(resolve_budget(&IntOrString::String("25%".into()), 5), 2);
    assert_eq!(resolve_budget(&IntOrString::String("25%".into()), 4), 1);
    assert_eq!(resolve_budget(&IntOrString::String("100%".into()), 7), 7);
    assert_eq!(resolve_budget(&IntOrString::Int(3), 2), 3);
}

#[test]
fn remembered_template_hashes_give_the_same_plan_and_follow_the_generation() {
    let memo = HashMemo::default();
    let with_memo = |t: &TApp, pods: &[Pod]| {
        let observed = Observed {
            pods: pods.iter().collect(),
            hash_memo: Some(&memo),
            ..Observed::<Pod>::default()
        };
        plan(t, &observed, now(), &Flags::default())
    };
    let mut t = tapp(3);
    let pods: Vec<Pod> = (0..3)
        .map(|i| pod_of(&t, i, "Running", Some(true)))
        .collect();
    let p = with_memo(&t, &pods);
    assert_eq!(p, run(&t, &pods, Flags::default()));
    assert!(p.updates.is_empty() && p.deletes.is_empty() && p.create_pods.is_empty());

    // A new image comes with a new generation: the remembered hashes are not reused.
    t.spec.template =
        serde_json::from_value(base_template("img:2", "OnFailure")).expect("template");
    t.metadata.generation = Some(4);
    let p = with_memo(&t, &pods);
    assert_eq!(p, run(&t, &pods, Flags::default()));
    assert_eq!(p.updates.len(), 1, "maxUnavailable 1: one pod at a time");
    assert_eq!(memo.len(), 1);
}

// ---------------------------------------------------------------------------------------------
// Each phase of `plan` alone.

fn by_id(pods: &[Pod]) -> BTreeMap<u32, &Pod> {
    let refs: Vec<&Pod> = pods.iter().collect();
    index_pods("t", &refs)
}

fn selector_of(t: &TApp) -> LabelSelector {
    t.spec.selector.clone().expect("selector")
}

#[test]
fn phase_index_pods_keeps_only_the_pod_named_for_its_id() {
    let t = tapp(3);
    let mut stranger = pod_of(&t, 1, "Running", Some(true));
    stranger.metadata.name = Some("other-1".into());
    let pods = [
        pod_of(&t, 0, "Running", Some(true)),
        stranger,
        pod_of(&t, 2, "Pending", None),
    ];
    assert_eq!(by_id(&pods).keys().copied().collect::<Vec<_>>(), [0, 2]);
}

#[test]
fn phase_instance_actions_creates_deletes_and_leaves_updates_pending() {
    let mut t = tapp(2);
    t.spec.force_delete_pod = true;
    let mut dying = pod_of(&t, 1, "Running", Some(true));
    dying.metadata.deletion_timestamp = Some(Time(to_jiff(now())));
    let extra = pod_of(&t, 4, "Running", Some(true));
    let old = pod_of(&t, 0, "Running", Some(true));
    t.spec.template = serde_json::from_value(base_template("img:2", "OnFailure")).expect("t");

    let run_with = |pods: &[Pod]| {
        let refs: Vec<&Pod> = pods.iter().collect();
        let observed = Observed {
            pods: refs.clone(),
            ..Observed::<Pod>::default()
        };
        let pods = index_pods("t", &refs);
        let (running, completed) = desired_instances(&t, &Flags::default());
        let selector = selector_of(&t);
        let inst = Instances {
            tapp: &t,
            observed: &observed,
            flags: &Flags::default(),
            pods: &pods,
            running: &running,
            completed: &completed,
            selector: &selector,
        };
        let mut plan = Plan::default();
        let actions = instance_actions(&inst, &mut plan);
        (plan, actions)
    };

    // id 1 is missing, id 4 is above replicas; id 0 runs the old image.
    let (plan, actions) = run_with(&[old, extra.clone()]);
    assert_eq!(
        ids(plan
            .create_pods
            .iter()
            .filter_map(|p| p.metadata.name.clone())),
        [1]
    );
    assert_eq!(ids(plan.deletes.iter().map(|d| d.name.clone())), [4]);
    let pending: Vec<(u32, Sync)> = actions.pending.iter().map(|(id, s, _)| (*id, *s)).collect();
    assert_eq!(pending, [(0, Sync::Update(UpdateKind::Images))]);
    assert!(
        plan.updates.is_empty(),
        "image updates wait for the budgets"
    );
    assert!(!actions.waiting_for_node);

    // A dying pod on a node not known lost waits (nodes unknown: only NodeLost counts).
    let (plan, actions) = run_with(&[dying, extra]);
    assert!(actions.waiting_for_node);
    assert_eq!(ids(plan.deletes.iter().map(|d| d.name.clone())), [4]);
}

#[test]
fn phase_budgets_let_through_only_what_max_unavailable_allows() {
    let t = tapp(3);
    let pods = [0, 1, 2].map(|id| pod_of(&t, id, "Running", Some(true)));
    let pods = by_id(&pods);
    let running: BTreeSet<u32> = [0, 1, 2].into();
    let pending: Vec<Pending> = [0, 1, 2]
        .map(|id| (id, Sync::Update(UpdateKind::Images), Pod::default()))
        .into();
    let approved = approve_within_budgets(&t.spec, &pods, &running, pending.clone());
    assert_eq!(approved.iter().map(|(id, ..)| *id).collect::<Vec<_>>(), [0]);
    let mut wide = t.clone();
    wide.spec.update_strategy.max_unavailable = Some(IntOrString::String("100%".into()));
    let approved = approve_within_budgets(&wide.spec, &pods, &running, pending);
    assert_eq!(approved.len(), 3);
}

#[test]
fn phase_in_place_protocol_waits_for_the_grace_period_then_patches() {
    let mut t = tapp(1);
    t.spec.update_strategy.in_place_update_grace_period_seconds = Some(30);
    let mut pod = pod_of(&t, 0, "Running", Some(true));
    let expected = {
        let mut e = pod.clone();
        e.spec.as_mut().expect("spec").containers[0].image = Some("img:2".into());
        e
    };
    // The protocol for the approved image update of `pod` at `at`.
    let step = |pod: &Pod, at: DateTime<Utc>| {
        let mut plan = Plan::default();
        let approved = vec![(0, Sync::Update(UpdateKind::Images), expected.clone())];
        in_place_protocol(
            &t.spec,
            &by_id(std::slice::from_ref(pod)),
            approved,
            at,
            &mut plan,
        );
        plan
    };

    // Gate still True: it goes False now, the update waits a whole grace period.
    let plan = step(&pod, now());
    assert!(plan.updates.is_empty());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(30)));
    assert_eq!(plan.conditions.len(), 1);
    assert!(!plan.conditions[0].ready);

    // Gate False for 10 s: 20 s to go.
    let since = now() - chrono::Duration::seconds(10);
    pod.status = serde_json::from_value(json!({"phase": "Running", "conditions": [
        {"type": "tkestack.io/InPlaceUpdate", "status": "False",
         "lastTransitionTime": since.to_rfc3339()},
        {"type": "Ready", "status": "False"}]}))
    .ok();
    let plan = step(&pod, now());
    assert!(plan.updates.is_empty());
    assert_eq!(plan.requeue_after, Some(Duration::from_secs(20)));
    assert!(
        plan.conditions.is_empty(),
        "gate already False, PodReady False"
    );

    // Past the grace period: patched.
    let later = now() + chrono::Duration::seconds(25);
    let plan = step(&pod, later);
    assert_eq!(plan.updates.len(), 1);
    assert_eq!(plan.updates[0].kind, UpdateKind::Images);
    assert_eq!(plan.requeue_after, None);
}

#[test]
fn phase_claim_actions_follow_the_retention_policy() {
    let mut t = tapp(1);
    t.spec.volume_claim_templates =
        serde_json::from_value(json!([{"metadata": {"name": "data"}}])).expect("claims");
    t.spec.persistent_volume_claim_retention_policy =
        serde_json::from_value(json!({"whenScaled": "Delete", "whenDeleted": "Retain"})).ok();
    let pvc = |name: &str, owned: bool| -> PersistentVolumeClaim {
        let refs = owned
            .then(|| json!([{"apiVersion": API_VERSION, "kind": KIND, "name": "t", "uid": "u1"}]));
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": "t"},
            "ownerReferences": refs}}))
        .expect("pvc")
    };
    let (kept, scaled_away, foreign) = (
        pvc("data-t-0", true),
        pvc("data-t-3", false),
        pvc("logs-t-0", false),
    );
    let mut plan = Plan::default();
    let no_pods: BTreeMap<u32, &Pod> = BTreeMap::new();
    claim_actions(
        &t,
        &[&kept.metadata, &scaled_away.metadata, &foreign.metadata],
        &no_pods,
        &selector_of(&t),
        &mut plan,
    );
    assert_eq!(plan.delete_pvcs, ["data-t-3"]);
    assert_eq!(
        plan.claim_ownership.len(),
        1,
        "Retain releases the owned claim"
    );
    assert_eq!(plan.claim_ownership[0].name, "data-t-0");
    assert!(plan.claim_ownership[0].owner_references.is_empty());
}

#[test]
fn phase_status_counts_created_and_running_instances() {
    use InstanceStatus as S;
    let t = tapp(3);
    let statuses = BTreeMap::from([
        ("0".to_string(), S::Running),
        ("1".to_string(), S::Pending),
        ("2".to_string(), S::NotCreated),
    ]);
    let status = tapp_status(&t, statuses, &selector_of(&t));
    assert_eq!((status.replicas, status.ready_replicas), (2, 1));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.scale_label_selector.as_deref(), Some("app=t"));
    assert_eq!(status.app_status, Some(AppStatus::Running));
}
