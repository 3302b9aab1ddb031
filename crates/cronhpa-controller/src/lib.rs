//! CronHPA controller: sets the replicas of any scalable workload on cron schedules,
//! wire-compatible with TKEStack's `extensions.tkestack.io/v1` CronHPA.
//!
//! - [`schedule`]: the cron dialect (one adaptation function over `croner`) and its
//!   evaluation in a time zone, DST included;
//! - [`validate`]: spec validation shared by the webhook and the controller;
//! - [`plan`]: every scheduling decision, pure (catch-up, deadline, suspend, status);
//! - [`scale`]: the scale subresource through discovery, and HPA mode;
//! - [`controller`]: the thin executor (kube-runtime Controller, timer-driven requeues);
//! - [`events`]: Events published off the fire path (bounded queue, ordered per object);
//! - [`status`]: status writes off the fire path, and the gate keeping them behind fires;
//! - [`webhook`]: the validating admission webhook (HTTPS through `addon_common::webhook`);
//! - [`metrics`]: the controller's metrics.

pub mod controller;
mod error;
pub mod events;
pub mod metrics;
pub mod plan;
pub mod scale;
pub mod schedule;
pub mod status;
pub mod validate;
pub mod webhook;

pub use error::{Error, Result};
