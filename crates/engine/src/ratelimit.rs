//! The rate-limit seam: [`RateLimiter`] says whether a principal may use a target now. The engine
//! asks it through [`Engine::admit`](crate::Engine::admit) — after the policy, so a hidden target
//! is never rate-limited (a 429 would reveal that it exists) — and transports await the answer
//! before dispatching, so an HTTP caller gets 429 with `Retry-After` before any stream opens.

use std::time::Duration;

use crate::Principal;
use crate::policy::Kind;
use crate::registry::BoxFuture;

/// A refusal: which rule, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// The rule that refused (`rate:<name>`).
    pub rule: String,
    /// When a retry may succeed.
    pub retry_after: Duration,
}

/// Decides whether a call may go ahead now.
pub trait RateLimiter: Send + Sync + 'static {
    /// `None` when no rule covers the target (nothing to wait for); otherwise the answer, which
    /// counts the call if it is allowed.
    fn check(&self, principal: &Principal, kind: Kind, target: &str)
    -> Option<BoxFuture<'static, Result<(), Limited>>>;
}
