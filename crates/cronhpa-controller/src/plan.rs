//! Every scheduling decision, as pure functions of the object and the clock.
//!
//! [`plan`] decides which occurrence (if any) to apply now, what every cron's status is and
//! when to wake up next; [`status_after`] folds the executor's outcome into the status to
//! write. Neither does I/O, so both are table-tested with an injected clock.

use addon_common::api::cronhpa::{
    CONDITION_INVALID, CONDITION_READY, CronHPA, CronHPAStatus, CronResult, CronStatus,
};
use addon_common::k8s_openapi::{
    apimachinery::pkg::apis::meta::v1::{Condition, Time},
    jiff,
};
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::validate::{FieldError, summary, validate};

/// Ready condition reason while everything works.
pub const REASON_SCHEDULED: &str = "Scheduled";
/// Ready condition reason while `spec.suspend` is true.
pub const REASON_SUSPENDED: &str = "Suspended";
/// Ready/Invalid condition reason (and Warning Event reason) for a spec that cannot be scheduled.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Invalid condition reason for a good spec.
pub const REASON_VALID: &str = "Valid";
/// Warning Event reason when an occurrence is skipped because it is older than
/// `startingDeadlineSeconds`.
pub const REASON_MISSED_SCHEDULE: &str = "MissedSchedule";

/// Longest requeue: an object whose next occurrence is further away (e.g. `0 0 29 2 *`) is
/// re-planned once a day, which also bounds the effect of a wall-clock step (the timers are
/// monotonic) and stays within the timer wheel's range.
pub const MAX_REQUEUE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// An occurrence to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fire {
    /// Index in `spec.crons`.
    pub index: usize,
    /// The scheduled time of the occurrence.
    pub scheduled: DateTime<Utc>,
    /// `spec.crons[index].targetReplicas`.
    pub target_replicas: i32,
}

/// What the object is, as far as scheduling goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// The spec cannot be scheduled.
    Invalid(Vec<FieldError>),
    /// `spec.suspend: true`.
    Suspended,
    /// Scheduling.
    Active,
}

/// The decisions for one object at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Validity / suspension.
    pub state: State,
    /// The occurrence to apply now: the latest in (lastScheduleTime, now] across all crons
    /// (ties: the later entry), within the starting deadline.
    pub fire: Option<Fire>,
    /// The latest occurrence, when it was skipped for being past `startingDeadlineSeconds`.
    pub missed: Option<Fire>,
    /// Per-cron status, in the order of `spec.crons`, before the outcome of `fire`.
    pub crons: Vec<CronStatus>,
    /// When the next occurrence is due, and of which cron.
    pub next: Option<(usize, DateTime<Utc>)>,
}

/// What the executor did with [`Plan::fire`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The target now has the requested size (`changed`: a write was needed).
    Succeeded {
        /// Human-readable result, e.g. "New size: 60".
        message: String,
        /// Whether the target was changed.
        changed: bool,
    },
    /// Reading or writing the target failed; the occurrence is retried.
    Failed {
        /// `FailedGetScale` or `FailedRescale`.
        reason: &'static str,
        /// The error.
        message: String,
    },
}

/// Converts an API time.
pub fn from_time(t: &Time) -> DateTime<Utc> {
    Utc.timestamp_opt(t.0.as_second(), 0)
        .single()
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Converts to an API time (whole seconds, as the API stores it).
pub fn to_time(t: DateTime<Utc>) -> Time {
    Time(jiff::Timestamp::from_second(t.timestamp()).unwrap_or(jiff::Timestamp::UNIX_EPOCH))
}

fn fmt(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Decides what to do with `obj` at `now`. `default_tz` is the controller's
/// `--default-time-zone`.
pub fn plan(obj: &CronHPA, now: DateTime<Utc>, default_tz: Tz) -> Plan {
    let spec = &obj.spec;
    let status = obj.status.clone().unwrap_or_default();
    let last = status
        .last_schedule_time
        .as_ref()
        .map(from_time)
        .or_else(|| obj.metadata.creation_timestamp.as_ref().map(from_time))
        .unwrap_or(now);
    let old = status.crons.unwrap_or_default();
    let mut crons: Vec<CronStatus> = spec
        .crons
        .iter()
        .enumerate()
        .map(|(i, c)| match old.get(i) {
            Some(o) if o.schedule == c.schedule => o.clone(),
            _ => CronStatus {
                schedule: c.schedule.clone(),
                ..CronStatus::default()
            },
        })
        .collect();

    let compiled = match validate(spec, default_tz) {
        Ok(c) => c,
        Err(errors) => {
            for (i, c) in crons.iter_mut().enumerate() {
                c.next_schedule_time = None;
                let field = format!("spec.crons[{i}].schedule");
                if let Some(e) = errors.iter().find(|e| e.field == field) {
                    c.message = Some(e.message.clone());
                }
            }
            return Plan {
                state: State::Invalid(errors),
                fire: None,
                missed: None,
                crons,
                next: None,
            };
        }
    };

    if spec.is_suspended() {
        for c in &mut crons {
            c.next_schedule_time = None;
        }
        return Plan {
            state: State::Suspended,
            fire: None,
            missed: None,
            crons,
            next: None,
        };
    }

    // `@every` counts from the cron's own last handled occurrence, else the object's.
    let anchors: Vec<DateTime<Utc>> = crons
        .iter()
        .map(|c| match (&c.last_schedule_time, c.last_result) {
            (Some(t), Some(r)) if r != CronResult::Failed => from_time(t),
            _ => last,
        })
        .collect();
    let due: Vec<Option<DateTime<Utc>>> = compiled
        .schedules
        .iter()
        .zip(&anchors)
        .map(|(s, anchor)| s.latest_in(last, now, compiled.tz, *anchor, &compiled.exclusions))
        .collect();
    // Latest occurrence wins; on a tie the later entry (max_by_key keeps the last maximum).
    let winner = due
        .iter()
        .enumerate()
        .filter_map(|(i, t)| t.map(|t| (i, t)))
        .max_by_key(|(_, t)| *t)
        .map(|(index, scheduled)| Fire {
            index,
            scheduled,
            target_replicas: spec.crons[index].target_replicas,
        });
    let (fire, missed) = match winner {
        Some(w) => {
            let late = (now - w.scheduled).num_seconds();
            match spec.starting_deadline_seconds {
                Some(deadline) if late > deadline => (None, Some(w)),
                _ => (Some(w), None),
            }
        }
        None => (None, None),
    };

    let mut next: Option<(usize, DateTime<Utc>)> = None;
    for (i, c) in crons.iter_mut().enumerate() {
        if let (Some(t), Some(w)) = (due[i], fire.as_ref().or(missed.as_ref())) {
            if i != w.index {
                c.last_schedule_time = Some(to_time(t));
                c.last_result = Some(CronResult::Skipped);
                c.message = Some(format!(
                    "occurrence at {} superseded by spec.crons[{}] at {}",
                    fmt(t),
                    w.index,
                    fmt(w.scheduled)
                ));
            } else if missed.is_some() {
                c.last_schedule_time = Some(to_time(t));
                c.last_result = Some(CronResult::Skipped);
                c.message = Some(format!(
                    "occurrence at {} missed: more than startingDeadlineSeconds ({}) late",
                    fmt(t),
                    spec.starting_deadline_seconds.unwrap_or_default()
                ));
            }
        }
        let anchor = due[i].unwrap_or(anchors[i]);
        let n = compiled.schedules[i].next_after(now, compiled.tz, anchor, &compiled.exclusions);
        c.next_schedule_time = n.map(to_time);
        if let Some(n) = n
            && next.is_none_or(|(_, t)| n < t)
        {
            next = Some((i, n));
        }
    }

    Plan {
        state: State::Active,
        fire,
        missed,
        crons,
        next,
    }
}

impl Plan {
    /// How long until the next decision is due (at least 1 ms, at most [`MAX_REQUEUE`]),
    /// `None` when only a change of the object can bring one. With a `read_ahead` lead the
    /// object first wakes `read_ahead` before its next occurrence (to read the target, see
    /// [`Plan::read_ahead`]), then at the occurrence itself.
    pub fn requeue_after(
        &self,
        now: DateTime<Utc>,
        read_ahead: std::time::Duration,
    ) -> Option<std::time::Duration> {
        self.next.map(|(_, t)| {
            let until = (t - now).to_std().unwrap_or_default();
            let wake = if until > read_ahead {
                until - read_ahead
            } else {
                until
            };
            wake.clamp(std::time::Duration::from_millis(1), MAX_REQUEUE)
        })
    }

    /// The occurrence whose target should be read now, ahead of time: the next one, when
    /// nothing fires now and it is at most `read_ahead` away. (Reading early is harmless: the
    /// write still waits for the scheduled time and carries the read's resourceVersion.)
    pub fn read_ahead(
        &self,
        now: DateTime<Utc>,
        read_ahead: std::time::Duration,
    ) -> Option<DateTime<Utc>> {
        if self.fire.is_some() || read_ahead.is_zero() {
            return None;
        }
        let (_, t) = self.next?;
        let until = (t - now).to_std().unwrap_or_default();
        (until <= read_ahead).then_some(t)
    }
}

/// What a successful reconciliation left behind: the `resourceVersion` of the object as it
/// wrote it (or found it) and when it asked to be woken. The watch event of the controller's
/// own status patch carries exactly that object, and until the wake-up nothing can be due
/// for it (no occurrence, no read-ahead: the wake-up is the earlier of both), so that event
/// needs no new plan. Any other change (spec, labels, someone else's status edit) has
/// another `resourceVersion` and is planned as usual.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `metadata.resourceVersion` after the reconciliation.
    pub resource_version: String,
    /// When the reconciliation asked to be woken.
    pub wake: DateTime<Utc>,
}

impl Written {
    /// The requeue for `resource_version` at `now` without planning, or `None` when the
    /// object must be planned (another version, or the wake-up is due).
    pub fn requeue_after(
        &self,
        resource_version: Option<&str>,
        now: DateTime<Utc>,
    ) -> Option<std::time::Duration> {
        if resource_version != Some(self.resource_version.as_str()) || now >= self.wake {
            return None;
        }
        (self.wake - now).to_std().ok()
    }
}

/// The status to write after executing `plan` (with `outcome` of its fire, if any).
pub fn status_after(
    obj: &CronHPA,
    plan: &Plan,
    outcome: Option<&Outcome>,
    now: DateTime<Utc>,
) -> CronHPAStatus {
    let old = obj.status.clone().unwrap_or_default();
    let mut crons = plan.crons.clone();
    let mut last = old.last_schedule_time.clone();
    if let (Some(fire), Some(outcome)) = (&plan.fire, outcome)
        && let Some(c) = crons.get_mut(fire.index)
    {
        match outcome {
            Outcome::Succeeded { message, .. } => {
                last = Some(to_time(fire.scheduled));
                c.last_schedule_time = Some(to_time(fire.scheduled));
                c.last_result = Some(CronResult::Succeeded);
                c.message = Some(message.clone());
            }
            Outcome::Failed { message, .. } => {
                c.last_result = Some(CronResult::Failed);
                c.message = Some(format!(
                    "occurrence at {} failed (retrying): {message}",
                    fmt(fire.scheduled)
                ));
            }
        }
    }

    let generation = obj.metadata.generation;
    let (ready, reason, message) = match (&plan.state, outcome) {
        (State::Invalid(errors), _) => ("False", REASON_INVALID_SPEC, summary(errors)),
        (State::Suspended, _) => (
            "False",
            REASON_SUSPENDED,
            "spec.suspend is true: no schedule fires".to_owned(),
        ),
        (State::Active, Some(Outcome::Failed { reason, message })) => {
            ("False", *reason, message.clone())
        }
        (State::Active, _) => (
            "True",
            REASON_SCHEDULED,
            match plan.next {
                Some((i, t)) => format!("next: spec.crons[{i}] at {}", fmt(t)),
                None => "no upcoming occurrence".to_owned(),
            },
        ),
    };
    let (invalid, invalid_reason, invalid_message) = match &plan.state {
        State::Invalid(errors) => ("True", REASON_INVALID_SPEC, summary(errors)),
        _ => ("False", REASON_VALID, String::new()),
    };
    let old_conditions = old.conditions.unwrap_or_default();
    let condition = |type_: &str, status: &str, reason: &str, message: String| {
        let transition = old_conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == status)
            .map(|c| c.last_transition_time.clone())
            .unwrap_or_else(|| to_time(now));
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message,
            last_transition_time: transition,
            observed_generation: generation,
        }
    };
    CronHPAStatus {
        last_schedule_time: last,
        crons: Some(crons),
        conditions: Some(vec![
            condition(CONDITION_READY, ready, reason, message),
            condition(CONDITION_INVALID, invalid, invalid_reason, invalid_message),
        ]),
        observed_generation: generation,
        next_schedule_time: plan.next.map(|(_, t)| to_time(t)),
    }
}

/// The condition label of the `objects` gauge: `invalid`, `suspended`, `failing` or `ready`.
pub fn condition_label(status: &CronHPAStatus) -> &'static str {
    let find = |t: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .map(|c| (c.status.as_str(), c.reason.as_str()))
    };
    match (find(CONDITION_INVALID), find(CONDITION_READY)) {
        (Some(("True", _)), _) => "invalid",
        (_, Some((_, REASON_SUSPENDED))) => "suspended",
        (_, Some(("True", _))) => "ready",
        _ => "failing",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("rfc3339")
            .with_timezone(&Utc)
    }

    fn object(spec: serde_json::Value, created: &str, last: Option<&str>) -> CronHPA {
        let mut v = json!({
            "apiVersion": "extensions.tkestack.io/v1", "kind": "CronHPA",
            "metadata": {"name": "c", "namespace": "default", "creationTimestamp": created,
                         "generation": 1},
            "spec": spec,
        });
        if let Some(last) = last {
            v["status"] = json!({"lastScheduleTime": last});
        }
        serde_json::from_value(v).expect("cronhpa")
    }

    fn daily_pair() -> serde_json::Value {
        json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "crons": [{"schedule": "0 8 * * *", "targetReplicas": 60},
                      {"schedule": "0 9 * * *", "targetReplicas": 10}]
        })
    }

    /// Runs plan + a successful outcome, returning the object with its new status.
    fn step(obj: &CronHPA, now: DateTime<Utc>) -> (Plan, CronHPA) {
        let p = plan(obj, now, Tz::UTC);
        let outcome = p.fire.as_ref().map(|f| Outcome::Succeeded {
            message: format!("New size: {}", f.target_replicas),
            changed: true,
        });
        let mut next = obj.clone();
        next.status = Some(status_after(obj, &p, outcome.as_ref(), now));
        (p, next)
    }

    #[test]
    fn catch_up_applies_the_latest_missed_occurrence() {
        // Down 07:00–10:00 with 08:00→60 and 09:00→10: we must end at 10 (the original: 60).
        let obj = object(
            daily_pair(),
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T07:00:00Z"),
        );
        let now = utc("2024-01-02T10:00:00Z");
        let obj2 = object(
            daily_pair(),
            "2024-01-01T00:00:00Z",
            Some("2024-01-02T07:00:00Z"),
        );
        let (p, after) = step(&obj2, now);
        assert_eq!(
            p.fire,
            Some(Fire {
                index: 1,
                scheduled: utc("2024-01-02T09:00:00Z"),
                target_replicas: 10
            })
        );
        let status = after.status.expect("status");
        assert_eq!(
            status.last_schedule_time.as_ref().map(from_time),
            Some(utc("2024-01-02T09:00:00Z"))
        );
        let crons = status.crons.expect("crons");
        assert_eq!(crons[0].last_result, Some(CronResult::Skipped));
        assert_eq!(crons[1].last_result, Some(CronResult::Succeeded));
        assert_eq!(
            crons[0].next_schedule_time.as_ref().map(from_time),
            Some(utc("2024-01-03T08:00:00Z"))
        );
        assert_eq!(p.next, Some((0, utc("2024-01-03T08:00:00Z"))));
        // A day and more of downtime: still the latest (yesterday's 09:00 is older).
        let p = plan(&obj, now, Tz::UTC);
        assert_eq!(
            p.fire.map(|f| (f.index, f.scheduled)),
            Some((1, utc("2024-01-02T09:00:00Z")))
        );
    }

    #[test]
    fn once_applied_an_occurrence_never_fires_again() {
        let obj = object(
            daily_pair(),
            "2024-01-01T00:00:00Z",
            Some("2024-01-02T07:00:00Z"),
        );
        let (_, after) = step(&obj, utc("2024-01-02T10:00:00Z"));
        // Restart / re-reconcile at any later time before 08:00 next day: nothing to do.
        for now in [
            "2024-01-02T10:00:00Z",
            "2024-01-02T23:59:59Z",
            "2024-01-03T07:59:59Z",
        ] {
            let (p, _) = step(&after, utc(now));
            assert_eq!(p.fire, None, "{now}");
        }
        let (p, _) = step(&after, utc("2024-01-03T08:00:00Z"));
        assert_eq!(p.fire.map(|f| f.target_replicas), Some(60));
    }

    #[test]
    fn two_crons_at_the_same_minute_the_later_entry_wins() {
        let spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "crons": [{"schedule": "0 8 * * *", "targetReplicas": 5},
                      {"schedule": "0 8 * * 1-5", "targetReplicas": 50},
                      {"schedule": "0 3 * * *", "targetReplicas": 1}]
        });
        // 2024-01-02 is a Tuesday.
        let obj = object(spec, "2024-01-01T00:00:00Z", Some("2024-01-02T07:00:00Z"));
        let (p, after) = step(&obj, utc("2024-01-02T08:00:00Z"));
        assert_eq!(p.fire.map(|f| (f.index, f.target_replicas)), Some((1, 50)));
        let crons = after.status.and_then(|s| s.crons).expect("crons");
        assert_eq!(crons[0].last_result, Some(CronResult::Skipped));
        assert!(
            crons[0]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("superseded by spec.crons[1]"),
            "{:?}",
            crons[0].message
        );
        assert_eq!(crons[2].last_result, None);
    }

    #[test]
    fn starting_deadline_bounds_catch_up() {
        let mut spec = daily_pair();
        spec["startingDeadlineSeconds"] = json!(300);
        let obj = object(spec, "2024-01-01T00:00:00Z", Some("2024-01-02T07:00:00Z"));
        // 4 minutes late: applied.
        let p = plan(&obj, utc("2024-01-02T09:04:00Z"), Tz::UTC);
        assert_eq!(p.fire.map(|f| f.index), Some(1));
        // 5 minutes: still within (the deadline is inclusive).
        let p = plan(&obj, utc("2024-01-02T09:05:00Z"), Tz::UTC);
        assert!(p.fire.is_some());
        // An hour late: skipped, the earlier 08:00 is not considered instead.
        let (p, after) = step(&obj, utc("2024-01-02T10:00:00Z"));
        assert_eq!(p.fire, None);
        assert_eq!(p.missed.as_ref().map(|f| f.index), Some(1));
        let status = after.status.clone().expect("status");
        assert_eq!(
            status.last_schedule_time.as_ref().map(from_time),
            Some(utc("2024-01-02T07:00:00Z")),
            "a missed occurrence is not recorded as applied"
        );
        let crons = status.crons.expect("crons");
        assert_eq!(crons[1].last_result, Some(CronResult::Skipped));
        assert!(
            crons[1]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("missed")
        );
        assert_eq!(p.next, Some((0, utc("2024-01-03T08:00:00Z"))));
        // The next occurrence fires normally.
        let (p, _) = step(&after, utc("2024-01-03T08:00:00Z"));
        assert_eq!(p.fire.map(|f| f.index), Some(0));
    }

    #[test]
    fn requeue_is_bounded() {
        let spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "crons": [{"schedule": "0 0 29 2 *", "targetReplicas": 3}]
        });
        let obj = object(spec, "2024-03-01T00:00:00Z", None);
        let now = utc("2024-03-01T00:00:00Z");
        let p = plan(&obj, now, Tz::UTC);
        assert_eq!(p.next, Some((0, utc("2028-02-29T00:00:00Z"))));
        let zero = std::time::Duration::ZERO;
        assert_eq!(p.requeue_after(now, zero), Some(MAX_REQUEUE));
        assert_eq!(
            p.requeue_after(utc("2028-02-29T00:00:00Z"), zero),
            Some(std::time::Duration::from_millis(1))
        );
    }

    #[test]
    fn read_ahead_wakes_before_the_occurrence_and_fires_at_it() {
        let secs = std::time::Duration::from_secs;
        let ms = std::time::Duration::from_millis;
        // Next occurrence: 2024-01-02T09:00:00Z (created 08:30, crons 08:00 and 09:00).
        let obj = object(daily_pair(), "2024-01-02T08:30:00Z", None);
        // (now, lead) → (wake after, read ahead now for)
        let table = [
            // Far away: wake `lead` early.
            (
                "2024-01-02T08:31:00Z",
                secs(10),
                Some(secs(29 * 60 - 10)),
                None,
            ),
            // Exactly at the lead: read now, wake at the occurrence.
            (
                "2024-01-02T08:59:50Z",
                secs(10),
                Some(secs(10)),
                Some("2024-01-02T09:00:00Z"),
            ),
            // Inside the lead (started late): read now, wake at the occurrence.
            (
                "2024-01-02T08:59:57Z",
                secs(10),
                Some(secs(3)),
                Some("2024-01-02T09:00:00Z"),
            ),
            // No lead: no read-ahead, wake at the occurrence (the behaviour without the feature).
            ("2024-01-02T08:59:57Z", secs(0), Some(secs(3)), None),
            // A lead longer than the wait: never wakes "in the past".
            (
                "2024-01-02T08:59:59Z",
                secs(3600),
                Some(secs(1)),
                Some("2024-01-02T09:00:00Z"),
            ),
        ];
        for (now, lead, wake, read) in table {
            let now = utc(now);
            let p = plan(&obj, now, Tz::UTC);
            assert_eq!(p.fire, None, "{now}");
            assert_eq!(p.requeue_after(now, lead), wake, "{now} {lead:?}");
            assert_eq!(p.read_ahead(now, lead), read.map(utc), "{now} {lead:?}");
        }
        // At the occurrence it fires: no read-ahead, next wake `lead` before tomorrow's 08:00.
        let now = utc("2024-01-02T09:00:00Z");
        let p = plan(&obj, now, Tz::UTC);
        assert_eq!(p.fire.as_ref().map(|f| f.scheduled), Some(now));
        assert_eq!(p.read_ahead(now, secs(10)), None);
        assert_eq!(p.requeue_after(now, secs(10)), Some(secs(23 * 3600 - 10)));
        // A wake-up a hair before the occurrence (timer vs wall clock) does not fire early.
        let now = utc("2024-01-02T08:59:59Z") + chrono::Duration::milliseconds(999);
        let p = plan(&obj, now, Tz::UTC);
        assert_eq!(p.fire, None);
        assert_eq!(p.requeue_after(now, secs(10)), Some(ms(1)));
        // Suspended or invalid objects never read ahead.
        let mut spec = daily_pair();
        spec["suspend"] = json!(true);
        let suspended = object(spec, "2024-01-02T08:30:00Z", None);
        let now = utc("2024-01-02T08:59:55Z");
        let p = plan(&suspended, now, Tz::UTC);
        assert_eq!(
            (p.read_ahead(now, secs(10)), p.requeue_after(now, secs(10))),
            (None, None)
        );
    }

    #[test]
    fn own_status_writes_are_not_planned_again() {
        let secs = std::time::Duration::from_secs;
        let written = Written {
            resource_version: "42".into(),
            wake: utc("2024-01-02T08:59:50Z"),
        };
        // (resourceVersion, now) → requeue without planning
        let table = [
            (Some("42"), "2024-01-02T08:00:01Z", Some(secs(3589))),
            // Another version: someone changed the object.
            (Some("43"), "2024-01-02T08:00:01Z", None),
            (None, "2024-01-02T08:00:01Z", None),
            // The wake-up is due (a late event): plan.
            (Some("42"), "2024-01-02T08:59:50Z", None),
            (Some("42"), "2024-01-02T09:00:00Z", None),
        ];
        for (rv, now, want) in table {
            assert_eq!(written.requeue_after(rv, utc(now)), want, "{rv:?} {now}");
        }
    }

    #[test]
    fn status_shows_the_next_occurrence_across_crons() {
        let obj = object(daily_pair(), "2024-01-02T08:30:00Z", None);
        let now = utc("2024-01-02T08:31:00Z");
        let p = plan(&obj, now, Tz::UTC);
        let status = status_after(&obj, &p, None, now);
        assert_eq!(
            status.next_schedule_time,
            Some(to_time(utc("2024-01-02T09:00:00Z")))
        );
        // After the 09:00 fire: tomorrow 08:00 (the earliest of both crons).
        let (_, after) = step(&obj, utc("2024-01-02T09:00:00Z"));
        assert_eq!(
            after.status.and_then(|s| s.next_schedule_time),
            Some(to_time(utc("2024-01-03T08:00:00Z")))
        );
        // Suspended: none.
        let mut spec = daily_pair();
        spec["suspend"] = json!(true);
        let suspended = object(spec, "2024-01-02T08:30:00Z", None);
        let p = plan(&suspended, now, Tz::UTC);
        assert_eq!(
            status_after(&suspended, &p, None, now).next_schedule_time,
            None
        );
    }

    #[test]
    fn new_object_waits_for_its_first_occurrence_after_creation() {
        let obj = object(daily_pair(), "2024-01-02T08:30:00Z", None);
        let p = plan(&obj, utc("2024-01-02T08:31:00Z"), Tz::UTC);
        assert_eq!(p.fire, None);
        assert_eq!(p.next, Some((1, utc("2024-01-02T09:00:00Z"))));
        let p = plan(&obj, utc("2024-01-02T09:00:00Z"), Tz::UTC);
        assert_eq!(p.fire.map(|f| f.target_replicas), Some(10));
    }

    #[test]
    fn suspend_and_resume() {
        let mut spec = daily_pair();
        spec["suspend"] = json!(true);
        let obj = object(
            spec.clone(),
            "2024-01-01T00:00:00Z",
            Some("2024-01-02T07:00:00Z"),
        );
        let (p, after) = step(&obj, utc("2024-01-02T09:30:00Z"));
        assert_eq!(p.state, State::Suspended);
        assert_eq!(p.fire, None);
        assert_eq!(p.next, None);
        assert_eq!(
            p.requeue_after(utc("2024-01-02T09:30:00Z"), std::time::Duration::ZERO),
            None
        );
        let status = after.status.clone().expect("status");
        assert_eq!(condition_label(&status), "suspended");
        assert!(
            status
                .crons
                .iter()
                .flatten()
                .all(|c| c.next_schedule_time.is_none())
        );

        // Resume without a deadline: the latest missed occurrence is applied.
        let mut resumed = after.clone();
        resumed.spec.suspend = Some(false);
        let p = plan(&resumed, utc("2024-01-02T12:00:00Z"), Tz::UTC);
        assert_eq!(p.fire.map(|f| f.index), Some(1));

        // Resume with a deadline: nothing older than it is replayed.
        resumed.spec.starting_deadline_seconds = Some(60);
        let (p, after) = step(&resumed, utc("2024-01-02T12:00:00Z"));
        assert_eq!(p.fire, None);
        assert!(p.missed.is_some());
        assert_eq!(p.next, Some((0, utc("2024-01-03T08:00:00Z"))));
        assert_eq!(
            condition_label(after.status.as_ref().expect("status")),
            "ready"
        );
    }

    #[test]
    fn invalid_object_is_marked_not_scheduled() {
        let spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "crons": [{"schedule": "0 8 * * *", "targetReplicas": 60},
                      {"schedule": "0 23 * * 8", "targetReplicas": 30}]
        });
        let obj = object(spec, "2024-01-01T00:00:00Z", None);
        let (p, after) = step(&obj, utc("2024-01-02T09:00:00Z"));
        assert!(matches!(p.state, State::Invalid(ref e) if e.len() == 1));
        assert_eq!(p.fire, None);
        assert_eq!(p.next, None);
        let status = after.status.expect("status");
        assert_eq!(condition_label(&status), "invalid");
        let conditions = status.conditions.expect("conditions");
        assert!(conditions[1].message.contains("spec.crons[1].schedule"));
        assert!(conditions[1].message.contains("\"0 23 * * 8\""));
        let crons = status.crons.expect("crons");
        assert!(
            crons[1]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("out of range")
        );
    }

    #[test]
    fn failures_keep_the_occurrence_pending_and_transitions_are_stable() {
        let obj = object(
            daily_pair(),
            "2024-01-01T00:00:00Z",
            Some("2024-01-02T07:00:00Z"),
        );
        let now = utc("2024-01-02T08:00:00Z");
        let p = plan(&obj, now, Tz::UTC);
        let failed = Outcome::Failed {
            reason: "FailedRescale",
            message: "conflict".into(),
        };
        let status = status_after(&obj, &p, Some(&failed), now);
        assert_eq!(
            status.last_schedule_time.as_ref().map(from_time),
            Some(utc("2024-01-02T07:00:00Z"))
        );
        assert_eq!(condition_label(&status), "failing");
        let mut failed_obj = obj.clone();
        failed_obj.status = Some(status);
        // The retry a few seconds later still targets the same occurrence.
        let later = utc("2024-01-02T08:00:07Z");
        let p2 = plan(&failed_obj, later, Tz::UTC);
        assert_eq!(p2.fire, p.fire);
        let ok = Outcome::Succeeded {
            message: "New size: 60".into(),
            changed: true,
        };
        let status = status_after(&failed_obj, &p2, Some(&ok), later);
        assert_eq!(condition_label(&status), "ready");
        let mut done = failed_obj.clone();
        done.status = Some(status.clone());
        // Recomputing at the same instant gives the same status (no write), and the Ready
        // transition time is kept while its status does not change.
        let again = status_after(
            &done,
            &plan(&done, later, Tz::UTC),
            None,
            utc("2024-01-02T08:30:00Z"),
        );
        assert_eq!(again, status);
    }

    #[test]
    fn time_zone_of_the_object_is_used() {
        let mut spec = daily_pair();
        spec["timeZone"] = json!("Asia/Shanghai");
        let obj = object(spec, "2024-01-01T00:00:00Z", Some("2024-01-01T12:00:00Z"));
        let p = plan(&obj, utc("2024-01-01T12:00:00Z"), Tz::UTC);
        // 08:00 CST is 00:00 UTC.
        assert_eq!(p.next, Some((0, utc("2024-01-02T00:00:00Z"))));
        // The default zone applies when the object has none.
        let obj = object(
            daily_pair(),
            "2024-01-01T00:00:00Z",
            Some("2024-01-01T12:00:00Z"),
        );
        let p = plan(&obj, utc("2024-01-01T12:00:00Z"), Tz::Asia__Shanghai);
        assert_eq!(p.next, Some((0, utc("2024-01-02T00:00:00Z"))));
    }

    #[test]
    fn every_continues_from_its_last_occurrence() {
        let spec = json!({
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "crons": [{"schedule": "@every 90m", "targetReplicas": 3}]
        });
        let obj = object(spec, "2024-01-01T00:00:00Z", None);
        let (p, after) = step(&obj, utc("2024-01-01T01:30:00Z"));
        assert_eq!(
            p.fire.map(|f| f.scheduled),
            Some(utc("2024-01-01T01:30:00Z"))
        );
        assert_eq!(p.next, Some((0, utc("2024-01-01T03:00:00Z"))));
        // Late reconcile (4 h later): the latest occurrence of the chain is applied.
        let (p, _) = step(&after, utc("2024-01-01T05:40:00Z"));
        assert_eq!(
            p.fire.map(|f| f.scheduled),
            Some(utc("2024-01-01T04:30:00Z"))
        );
    }

    #[test]
    fn excluded_dates_do_not_fire() {
        let mut spec = daily_pair();
        spec["excludeDates"] = json!(["* * * * 6,0"]);
        // Saturday 2024-01-06.
        let obj = object(spec, "2024-01-01T00:00:00Z", Some("2024-01-05T09:00:00Z"));
        let p = plan(&obj, utc("2024-01-06T08:00:00Z"), Tz::UTC);
        assert_eq!(p.fire, None);
        assert_eq!(p.next, Some((0, utc("2024-01-08T08:00:00Z"))));
    }
}
