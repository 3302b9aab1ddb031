//! Service accounts: `serviceaccounts/token` (TokenRequest).

use super::{Action, Strategy};
use crate::registry::ExtraSubresource;

/// The service account strategy.
#[derive(Debug)]
pub struct ServiceAccounts;

impl Strategy for ServiceAccounts {
    fn action(&self, sub: &str) -> Option<Action> {
        (sub == "token").then_some(Action::Token)
    }

    fn extra_subresources(&self) -> Vec<ExtraSubresource> {
        vec![ExtraSubresource::new(
            "token",
            "authentication.k8s.io",
            "v1",
            "TokenRequest",
            &["create"],
        )]
    }
}
