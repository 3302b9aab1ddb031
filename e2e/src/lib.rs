//! Emulated Kubernetes API server for end-to-end tests.
//!
//! [`ApiServer`] serves the Kubernetes REST API from memory as an axum `Router`: use it
//! in-process through [`ApiServer::client`] (a `kube::Client` with no socket) or over TCP with
//! [`ApiServer::serve_tcp`] (plain HTTP or HTTPS with a generated CA) for kubectl and controller
//! binaries. See `docs/e2e.md` for the API surface, deviations and fault injection.

pub mod admission;
pub mod cel;
pub mod cluster;
pub mod convert;
pub mod defaults;
pub mod errors;
pub mod faults;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod protowire;
pub mod registry;
pub mod selectors;
pub mod server;
pub mod store;
pub mod strategy;
pub mod table;
pub mod tls;
pub mod validation;
pub mod wait;
mod watch;

pub use admission::{AdmissionHook, AdmissionRequest, Operation};
pub use errors::{ApiError, Cause};
pub use faults::Faults;
pub use server::{ApiServer, Config};
pub use tls::RunningServer;
