//! Integration tests of the simulated cluster (scheduler + extenders, kubelets, workload
//! controllers, admission webhooks, node failure) against the in-process emulated API server
//! and, for the workload tests, kubectl over loopback.
#![allow(clippy::unwrap_used)]

mod common;
mod multi;
mod nodes;
mod pods;
mod scheduler;
mod webhooks;
mod workloads;
