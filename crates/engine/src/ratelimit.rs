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

/// The key per-target limits count a target under when the caller cannot use it (unknown,
/// hidden or needing a step-up): one counter per principal for all of those, so random names
/// neither mint counters nor go uncounted. No registered name contains a NUL.
pub const UNUSABLE: &str = "\0unusable";

/// Decides whether a call may go ahead now.
pub trait RateLimiter: Send + Sync + 'static {
    /// `None` when no rule covers `target` (matched against the rules' patterns; nothing to wait
    /// for); otherwise the answer, which counts the call if it is allowed. Per-target limits
    /// count it under `key`: the target itself, or [`UNUSABLE`].
    fn check(
        &self,
        principal: &Principal,
        kind: Kind,
        target: &str,
        key: &str,
    ) -> Option<BoxFuture<'static, Result<(), Limited>>>;
}
