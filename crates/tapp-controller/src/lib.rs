//! The TApp controller (apps.tkestack.io/v1), wire-compatible with tkestack/tapp.
//!
//! - [`plan`]: the pure planner holding every decision (table-tested);
//! - [`controller`]: the thin executor (kube-runtime Controller, status, events, metrics);
//! - [`validate`] and [`webhook`]: the validating admission webhook (its HTTPS and
//!   certificates are `addon_common::webhook`);
//! - [`hash`] and [`pods`]: template hashes, adoption comparison, pod helpers;
//! - [`index`] and [`slim`]: the pod cache (by owner, fed by kube-runtime's `watcher`) and
//!   the slim pods it holds.

pub mod controller;
pub mod error;
pub mod expectations;
pub mod hash;
pub mod index;
pub mod metrics;
pub mod plan;
pub mod pods;
pub mod slim;
pub mod validate;
pub mod webhook;

pub use error::{Error, Result};
