//! Job controller: runs `parallelism` pods at a time until `completions` succeed (NonIndexed and
//! Indexed), fails the Job when failures exceed `backoffLimit`, and writes the status counts and
//! the `Complete`/`SuccessCriteriaMet` or `Failed`/`FailureTarget` conditions. Counts come from
//! the pods themselves (no job-tracking finalizers).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{CtlError, Ctx, drive, pod_from_template, write_status};
use crate::cluster::util;

/// Label with the owning Job's uid.
pub const CONTROLLER_UID: &str = "batch.kubernetes.io/controller-uid";
/// Annotation/label with an Indexed Job pod's index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

/// Runs the controller.
pub async fn run(ctx: Arc<Ctx>, cancel: CancellationToken) {
    let c = Controller::new(
        Api::<Job>::all(ctx.client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<Pod>::all(ctx.client.clone()),
        watcher::Config::default(),
    );
    drive(c, cancel, ctx, reconcile).await;
}

/// What the Job should do next. Pure.
#[derive(Debug, PartialEq, Eq)]
pub enum JobStep {
    /// Create this many pods (for these indexes when Indexed).
    Create(Vec<Option<i32>>),
    /// The Job succeeded.
    Complete,
    /// The Job failed (backoff limit).
    Failed,
    /// Nothing to do.
    Wait,
}

/// Decides the next step from the counts. `succeeded_indexes` is used for Indexed Jobs.
#[allow(clippy::too_many_arguments)]
pub fn decide(
    completions: i32,
    parallelism: i32,
    backoff_limit: i32,
    active: &[Option<i32>],
    succeeded: i32,
    failed: i32,
    succeeded_indexes: &BTreeSet<i32>,
    indexed: bool,
) -> JobStep {
    if failed > backoff_limit {
        return JobStep::Failed;
    }
    let done = if indexed {
        succeeded_indexes.len() as i32
    } else {
        succeeded
    };
    if done >= completions {
        return if active.is_empty() {
            JobStep::Complete
        } else {
            JobStep::Wait
        };
    }
    let remaining = completions - done;
    let want = parallelism.min(remaining) - active.len() as i32;
    if want <= 0 {
        return JobStep::Wait;
    }
    if indexed {
        let busy: BTreeSet<i32> = active.iter().flatten().copied().collect();
        let idx: Vec<Option<i32>> = (0..completions)
            .filter(|i| !succeeded_indexes.contains(i) && !busy.contains(i))
            .take(usize::try_from(want).unwrap_or(0))
            .map(Some)
            .collect();
        if idx.is_empty() {
            JobStep::Wait
        } else {
            JobStep::Create(idx)
        }
    } else {
        JobStep::Create(vec![None; usize::try_from(want).unwrap_or(0)])
    }
}

fn index_of(p: &Pod) -> Option<i32> {
    p.annotations()
        .get(COMPLETION_INDEX)
        .and_then(|v| v.parse().ok())
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, CtlError> {
    if job.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let old = job.status.clone().unwrap_or_default();
    let finished = old
        .conditions
        .iter()
        .flatten()
        .any(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    let ns = job.namespace().unwrap_or_default();
    let uid = job.uid().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pods: Vec<Pod> = api
        .list(&ListParams::default().labels(&format!("{CONTROLLER_UID}={uid}")))
        .await?
        .items
        .into_iter()
        .filter(|p| util::controlled_by(&p.metadata, &uid))
        .collect();
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1);
    let completions = spec.completions.unwrap_or(
        if spec.parallelism.is_some() && spec.completions.is_none() {
            parallelism.max(1)
        } else {
            1
        },
    );
    let backoff = spec.backoff_limit.unwrap_or(6);
    let active: Vec<&Pod> = pods.iter().filter(|p| util::is_active(p)).collect();
    let succeeded = pods
        .iter()
        .filter(|p| util::phase(p) == "Succeeded")
        .count() as i32;
    let restarts = restart_count(&spec.template, &pods);
    let failed = pods.iter().filter(|p| util::phase(p) == "Failed").count() as i32;
    let succeeded_idx: BTreeSet<i32> = pods
        .iter()
        .filter(|p| util::phase(p) == "Succeeded")
        .filter_map(index_of)
        .collect();
    let active_idx: Vec<Option<i32>> = active.iter().map(|p| index_of(p)).collect();
    let step = if finished || spec.suspend == Some(true) {
        JobStep::Wait
    } else {
        decide(
            completions,
            parallelism,
            backoff,
            &active_idx,
            succeeded,
            failed + restarts,
            &succeeded_idx,
            indexed,
        )
    };
    let now = util::now();
    let mut conditions = old
        .conditions
        .clone()
        .map(|c| serde_json::to_value(c).unwrap_or_default())
        .unwrap_or(json!([]));
    let mut completion_time = old.completion_time.clone();
    match &step {
        JobStep::Create(idx) => {
            create_pods(&ctx, &job, &api, &spec.template, &ns, &uid, idx).await?;
        }
        JobStep::Complete => {
            completion_time = Some(now.clone());
            conditions = json!([
                {"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now},
            ]);
            util::record_event(
                &ctx.client,
                "job-controller",
                job.as_ref(),
                "Normal",
                "Completed",
                "Job completed",
            );
        }
        JobStep::Failed => {
            for p in &active {
                let _ = api.delete(&p.name_any(), &DeleteParams::default()).await;
            }
            conditions = json!([
                {"type": "FailureTarget", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
                {"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now},
            ]);
            util::record_event(
                &ctx.client,
                "job-controller",
                job.as_ref(),
                "Warning",
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            );
        }
        JobStep::Wait => {}
    }
    let active_now = if matches!(step, JobStep::Failed) {
        0
    } else {
        active.len()
            + if let JobStep::Create(i) = &step {
                i.len()
            } else {
                0
            }
    };
    let mut status = json!({
        "active": active_now,
        "ready": active.iter().filter(|p| util::is_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
        "terminating": pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count(),
        "startTime": old.start_time.clone().unwrap_or_else(|| now.clone()),
        "conditions": conditions,
        "completionTime": completion_time,
    });
    if indexed {
        let idx: Vec<String> = succeeded_idx.iter().map(|i| i.to_string()).collect();
        status["completedIndexes"] = json!(idx.join(","));
    }
    let japi: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    write_status(
        &japi,
        &job.name_any(),
        &serde_json::to_value(&job.status)?,
        status,
    )
    .await?;
    Ok(Action::await_change())
}

/// Container restarts that count against the backoff limit (only under `restartPolicy: OnFailure`).
fn restart_count(template: &PodTemplateSpec, pods: &[Pod]) -> i32 {
    pods.iter()
        .filter(|_| {
            template
                .spec
                .as_ref()
                .and_then(|s| s.restart_policy.as_deref())
                == Some("OnFailure")
        })
        .flat_map(|p| {
            p.status
                .iter()
                .flat_map(|s| s.container_statuses.iter().flatten())
                .map(|c| c.restart_count)
        })
        .sum()
}

/// Create the Job's pods, one per entry of `idx` (the completion index when Indexed).
async fn create_pods(
    ctx: &Ctx,
    job: &Job,
    api: &Api<Pod>,
    template: &PodTemplateSpec,
    ns: &str,
    uid: &str,
    idx: &[Option<i32>],
) -> Result<(), CtlError> {
    for i in idx {
        let mut labels = std::collections::BTreeMap::from([
            (CONTROLLER_UID.to_string(), uid.to_string()),
            ("controller-uid".to_string(), uid.to_string()),
            ("batch.kubernetes.io/job-name".to_string(), job.name_any()),
            ("job-name".to_string(), job.name_any()),
        ]);
        let generate = match i {
            Some(i) => {
                labels.insert(COMPLETION_INDEX.into(), i.to_string());
                format!("{}-{i}-", job.name_any())
            }
            None => format!("{}-", job.name_any()),
        };
        let mut pod = pod_from_template(
            template,
            ns,
            util::controller_ref(job),
            None,
            Some(generate),
            &labels,
        );
        if let Some(i) = i {
            pod.metadata
                .annotations
                .get_or_insert_with(Default::default)
                .insert(COMPLETION_INDEX.into(), i.to_string());
        }
        let p = api.create(&PostParams::default(), &pod).await?;
        util::record_event(
            &ctx.client,
            "job-controller",
            job,
            "Normal",
            "SuccessfulCreate",
            &format!("Created pod: {}", p.name_any()),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decide_table() {
        let none = BTreeSet::new();
        assert_eq!(
            decide(1, 1, 6, &[], 0, 0, &none, false),
            JobStep::Create(vec![None])
        );
        assert_eq!(
            decide(5, 2, 6, &[None], 1, 0, &none, false),
            JobStep::Create(vec![None])
        );
        assert_eq!(
            decide(5, 2, 6, &[None, None], 1, 0, &none, false),
            JobStep::Wait
        );
        assert_eq!(decide(3, 3, 6, &[None], 2, 0, &none, false), JobStep::Wait);
        assert_eq!(decide(3, 3, 6, &[], 3, 0, &none, false), JobStep::Complete);
        assert_eq!(
            decide(3, 3, 1, &[None], 0, 2, &none, false),
            JobStep::Failed
        );
        assert_eq!(decide(1, 1, 0, &[], 0, 1, &none, false), JobStep::Failed);
        let done: BTreeSet<i32> = [0].into();
        assert_eq!(
            decide(3, 2, 6, &[Some(1)], 1, 0, &done, true),
            JobStep::Create(vec![Some(2)])
        );
    }
}
