//! galaxy-ipam: floating-IP allocation as a kube-scheduler extender, wire-compatible with
//! TKEStack Galaxy IPAM (`cmd/galaxy-ipam`).
//!
//! - [`config`], [`key`], [`policy`], [`pod`], [`extender`]: pure parsing and decisions;
//! - [`allocator`]: the in-memory allocator (fine-grained locks, compare-and-swap per IP);
//! - [`plugin`]: filter / bind / release against the API (FloatingIP CRs are the durable
//!   record; a create that finds the name taken means someone else owns the IP);
//! - [`server`]: the extender HTTP server (`--port`) and the REST API (`--api-port`);
//! - [`controller`]: what the leader runs (`controller::run`): recovery at start, ConfigMap /
//!   FloatingIP / pod / node watches, resync;
//! - [`metrics`]: the metrics; the crate's one error type is [`Error`].

pub mod allocator;
pub mod config;
pub mod controller;
mod error;
pub mod extender;
pub mod key;
pub mod metrics;
pub mod plugin;
pub mod pod;
pub mod policy;
pub mod server;

pub use error::{Error, Result, api_code};
