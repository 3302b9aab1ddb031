//! Shared API types and controller plumbing for the TKEStack add-on successors.
//!
//! - [`api`]: the custom resources (TApp, CronHPA, LBCF, Galaxy) and their CRDs;
//! - [`cli`]: flag groups flattened into every binary's clap `Args` (`CommonArgs`,
//!   `WebhookArgs`, `RuntimeArgs`);
//! - [`duration`]: the one parser of Go duration strings (`time.ParseDuration`'s rules);
//! - [`telemetry`], [`metrics`], [`admin`]: logs, the per-binary Prometheus registry and
//!   the `/metrics` `/healthz` `/readyz` server;
//! - [`leader`]: Lease-based leader election; [`runtime`]: the process harness that ties
//!   client, admin server, signals and leadership together, the `Deps` every controller's
//!   `run` gets, and the async runtime every `main()` builds (`block_on`);
//! - [`events`], [`backoff`]: Events on state changes and per-object retry backoff;
//! - [`guard`]: watching custom resources whose objects may not decode;
//! - [`webhook`]: admission webhooks: AdmissionReview handling, HTTPS with reloadable
//!   certificates (from a mounted Secret, or self-managed in a shared Secret), and
//!   `serve_webhook`, which starts a component's webhook from its `WebhookArgs`;
//! - [`writes`]: creates and patches that decode only the response's resourceVersion;
//! - [`wakeups`]: wake-up coalescing for a busy controller's async runtime.
//!
//! `kube`, `k8s_openapi` and `schemars` are re-exported so every controller uses the
//! workspace's one version of each.

pub mod admin;
pub mod api;
pub mod backoff;
pub mod cli;
pub mod crdgen;
pub mod duration;
mod error;
pub mod events;
pub mod guard;
pub mod leader;
pub mod metrics;
pub mod runtime;
pub mod shutdown;
pub mod telemetry;
pub mod testing;
pub mod wakeups;
pub mod watch;
pub mod webhook;
pub mod writes;

pub use error::{Error, Result};
pub use k8s_openapi;
pub use kube;
pub use schemars;
