//! Reviews (access, rules, self-subject and token reviews): answered from the request, never
//! stored. Authorization is not enforced, so every access review is allowed.

use serde_json::{Value, json};

use super::Strategy;

/// Which review.
#[derive(Debug)]
pub enum Review {
    /// Subject/self-subject/local access reviews.
    Access,
    /// `SelfSubjectRulesReview`.
    Rules,
    /// `SelfSubjectReview`.
    SelfSubject,
    /// `TokenReview`.
    Token,
}

const GROUPS: [&str; 2] = ["system:masters", "system:authenticated"];

impl Strategy for Review {
    fn review_status(&self, body: &Value, user: &str, token: Option<&str>) -> Value {
        match self {
            Review::Rules => json!({
                "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
                "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                "incomplete": false,
            }),
            Review::SelfSubject => json!({"userInfo": {"username": user, "groups": GROUPS}}),
            Review::Token => {
                let sent = body
                    .pointer("/spec/token")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if token.is_none_or(|t| t == sent) {
                    json!({"authenticated": true, "user": {"username": "admin", "groups": GROUPS}})
                } else {
                    json!({"authenticated": false, "error": "invalid bearer token"})
                }
            }
            Review::Access => {
                json!({"allowed": true, "reason": "the emulated API server does not enforce authorization"})
            }
        }
    }
}
