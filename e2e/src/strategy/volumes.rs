//! Persistent volume claims: the initial phase.

use serde_json::{Value, json};

use super::Strategy;

/// The persistent volume claim strategy.
#[derive(Debug)]
pub struct Claims;

impl Strategy for Claims {
    fn initial_status(&self, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }
}
