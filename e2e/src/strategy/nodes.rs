//! Nodes: the status a kubelet registers with is kept on create, and node names need not be
//! DNS subdomains.

use serde_json::Value;

use super::Strategy;

/// The node strategy.
#[derive(Debug)]
pub struct Nodes;

impl Strategy for Nodes {
    fn initial_status(&self, _obj: &mut Value) {}

    fn lenient_names(&self) -> bool {
        true
    }
}
