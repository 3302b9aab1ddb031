//! Secrets: the default type.

use serde_json::{Value, json};

use super::Strategy;
use crate::defaults::set_default;

/// The secret strategy.
#[derive(Debug)]
pub struct Secrets;

impl Strategy for Secrets {
    fn defaults(&self, obj: &mut Value) {
        set_default(obj, "type", json!("Opaque"));
    }
}
