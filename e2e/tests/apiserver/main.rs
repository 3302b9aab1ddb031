//! Integration tests of the emulated API server: kubectl over loopback, kube-runtime in-process,
//! and API semantics.
#![allow(clippy::unwrap_used)]

mod common;
mod kubectl;
mod protobuf;
mod runtime;
mod semantics;
