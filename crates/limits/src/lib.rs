//! Rate limits: GCRA (the generic cell rate algorithm) keyed by any of tenant, subject, client and
//! tool, several limits per rule, all of which must allow a call for it to count against any.
//!
//! One algorithm, two places for its state:
//! - **local** (default): a map in this process;
//! - **redis**: one Lua script per check, on Redis's own clock, so every replica shares the limit
//!   exactly. When Redis cannot answer, the rule's `on_error` decides: `deny` (fail closed, the
//!   default) or `allow` (fail open, logged).
//!
//! GCRA with `max` calls per `window`: each call moves a key's *theoretical arrival time* (TAT)
//! forward by `window / max`; a call is allowed while the TAT is at most `window - window / max`
//! ahead of now. So `max` calls may come at once, then one every `window / max`; a refused call
//! learns exactly when it would succeed. Only the TAT is stored, one number per key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_engine::policy::{Kind, Targets};
use portcullis_engine::{BoxFuture, Limited, Principal, RateLimiter};

/// What a limit counts separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPart {
    /// Per tenant.
    Tenant,
    /// Per subject (user or service).
    Subject,
    /// Per OAuth client.
    Client,
    /// Per tool (or prompt, or resource URI).
    Tool,
}

/// `max` calls per `window`, counted per combination of `per`.
#[derive(Debug, Clone)]
pub struct Limit {
    /// The key parts; empty: one counter for everyone.
    pub per: Vec<KeyPart>,
    /// Calls allowed per window (also the burst).
    pub max: u32,
    /// The window.
    pub window: Duration,
}

/// Where a rule keeps its counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// In this process.
    Local,
    /// In Redis, shared by every replica.
    Redis,
}

/// What a Redis rule does when Redis cannot answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Refuse the call (fail closed).
    Deny,
    /// Let it through (fail open), logged.
    Allow,
}

/// One rule: targets and limits.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The rule's name (audit and errors say `rate:<name>`).
    pub name: String,
    /// What the rule covers.
    pub targets: Targets,
    /// The limits; all must allow.
    pub limits: Vec<Limit>,
    /// Where the counters live.
    pub backend: Backend,
    /// Redis rules: when Redis fails.
    pub on_error: OnError,
}

impl Rule {
    /// The counter of each limit for this call: key, emission interval and tolerance (µs).
    fn keys(self: &Arc<Self>, p: &Principal, target: &str) -> Vec<Key> {
        self.limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                // By rule name, not position: replicas listing rules in another order still share.
                let mut key = format!("{}:{}:{i}", self.name.len(), self.name);
                for part in &l.per {
                    let v = match part {
                        KeyPart::Tenant => p.tenant.as_deref().unwrap_or(""),
                        KeyPart::Subject => &p.subject,
                        KeyPart::Client => p.client_id.as_deref().unwrap_or(""),
                        KeyPart::Tool => target,
                    };
                    // Length-prefixed, so no value can be read as two.
                    key.push_str(&format!(":{}:{v}", v.len()));
                }
                let window = l.window.as_micros().max(1) as u64;
                let interval = (window / u64::from(l.max.max(1))).max(1);
                Key { key, interval, tolerance: window.saturating_sub(interval), rule: self.clone() }
            })
            .collect()
    }
}

/// One counter of one rule's limit.
struct Key {
    key: String,
    /// Emission interval, µs.
    interval: u64,
    /// How far ahead of now the TAT may run, µs.
    tolerance: u64,
    rule: Arc<Rule>,
}

/// The limiter: local state, and the Redis connection when any rule needs it.
pub struct Limiter {
    rules: Vec<Arc<Rule>>,
    local: Arc<Local>,
    redis: Option<Arc<Redis>>,
}

/// In-process counters.
struct Local {
    epoch: Instant,
    state: Mutex<LocalState>,
}

struct LocalState {
    /// Key → TAT in microseconds since `epoch`.
    tat: HashMap<String, u64>,
    /// When expired keys were last swept (µs since `epoch`).
    swept: u64,
}

/// Most local keys before expired ones are swept (at most once a second).
const LOCAL_SWEEP_AT: usize = 100_000;

struct Redis {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    prefix: String,
}

/// Checks every key and counts the call against all of them only if all allow; otherwise the
/// longest wait (µs) and the 1-based index of its key. KEYS: the counters; ARGV: interval and
/// tolerance per key, in µs. Time is Redis's own, so every replica agrees.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local wait = 0
local worst = 0
for i, key in ipairs(KEYS) do
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  if tat - now - tolerance > wait then
    wait = tat - now - tolerance
    worst = i
  end
end
if wait > 0 then return {0, math.ceil(wait), worst} end
for i, key in ipairs(KEYS) do
  local next_tat = tats[i] + tonumber(ARGV[2 * i - 1])
  redis.call('SET', key, string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
return {1, 0, 0}
";

impl Limiter {
    /// A limiter over `rules`; `redis` (URL, key prefix) is needed when any rule uses Redis.
    pub fn new(rules: Vec<Rule>, redis: Option<(&str, &str)>) -> Result<Self, String> {
        let needs_redis = rules.iter().any(|r| r.backend == Backend::Redis);
        let redis = match (needs_redis, redis) {
            (false, _) => None,
            (true, None) => return Err("a rule uses the redis backend but no Redis URL is configured".into()),
            (true, Some((url, prefix))) => Some(Arc::new(Redis {
                client: redis::Client::open(url).map_err(|e| e.to_string())?,
                conn: tokio::sync::OnceCell::new(),
                script: redis::Script::new(GCRA_LUA),
                prefix: prefix.to_owned(),
            })),
        };
        for r in &rules {
            if r.limits.is_empty() || r.limits.iter().any(|l| l.max == 0 || l.window.is_zero()) {
                return Err(format!("rate limit {:?}: every limit needs max > 0 and a window > 0", r.name));
            }
        }
        let local = Local { epoch: Instant::now(), state: Mutex::new(LocalState { tat: HashMap::new(), swept: 0 }) };
        Ok(Self { rules: rules.into_iter().map(Arc::new).collect(), local: Arc::new(local), redis })
    }

    /// Connects to Redis now (if any rule uses it), so a wrong address shows at startup.
    pub async fn check_connection(&self) -> Result<(), String> {
        match &self.redis {
            None => Ok(()),
            Some(r) => {
                let mut conn = r.conn().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await.map(|_| ()).map_err(|e| e.to_string())
            }
        }
    }
}

impl Local {
    /// Checks every key; counts the call against all of them only when all allow and `commit`.
    /// A refusal names the rule with the longest wait.
    fn check(&self, keys: &[Key], commit: bool) -> Result<(), Limited> {
        if keys.is_empty() {
            return Ok(());
        }
        let now = self.epoch.elapsed().as_micros() as u64;
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.tat.len() > LOCAL_SWEEP_AT && now.saturating_sub(state.swept) > 1_000_000 {
            state.tat.retain(|_, tat| *tat > now);
            state.swept = now;
        }
        let mut worst: Option<(u64, &Key)> = None;
        let mut tats = Vec::with_capacity(keys.len());
        for k in keys {
            let tat = state.tat.get(&k.key).copied().unwrap_or(now).max(now);
            let wait = (tat - now).saturating_sub(k.tolerance);
            if wait > 0 && worst.is_none_or(|(w, _)| wait > w) {
                worst = Some((wait, k));
            }
            tats.push(tat);
        }
        if let Some((wait, k)) = worst {
            return Err(Limited { rule: format!("rate:{}", k.rule.name), retry_after: Duration::from_micros(wait) });
        }
        if commit {
            for (k, tat) in keys.iter().zip(tats) {
                state.tat.insert(k.key.clone(), tat + k.interval);
            }
        }
        Ok(())
    }
}

impl Redis {
    async fn conn(&self) -> Result<redis::aio::ConnectionManager, String> {
        // Timeouts and retries as in `portcullis_auth`'s revocation list: change both together. Neither crate
        // depends on the other, and the engine, their one shared crate, stays free of redis.
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1);
        self.conn
            .get_or_try_init(|| redis::aio::ConnectionManager::new_with_config(self.client.clone(), config))
            .await
            .cloned()
            .map_err(|e| e.to_string())
    }

    /// One script over every key: all counted, or none. `Err((worst key index, wait))`.
    async fn check(&self, keys: &[Key]) -> Result<Result<(), (usize, Duration)>, String> {
        let mut conn = self.conn().await?;
        let mut invocation = self.script.prepare_invoke();
        for k in keys {
            invocation.key(format!("{}{}", self.prefix, k.key)).arg(k.interval).arg(k.tolerance);
        }
        let (allowed, wait, worst): (i64, i64, i64) =
            invocation.invoke_async(&mut conn).await.map_err(|e| e.to_string())?;
        Ok(if allowed == 1 {
            Ok(())
        } else {
            Err(((worst.max(1) - 1) as usize, Duration::from_micros(wait.max(1) as u64)))
        })
    }
}

impl RateLimiter for Limiter {
    fn check(
        &self,
        principal: &Principal,
        kind: Kind,
        target: &str,
        key: &str,
    ) -> Option<BoxFuture<'static, Result<(), Limited>>> {
        let mut local = Vec::new();
        let mut remote = Vec::new();
        for rule in self.rules.iter().filter(|r| r.targets.covers(kind, target)) {
            match rule.backend {
                Backend::Local => local.extend(rule.keys(principal, key)),
                Backend::Redis => remote.extend(rule.keys(principal, key)),
            }
        }
        if local.is_empty() && remote.is_empty() {
            return None;
        }
        // Nothing is counted unless every rule allows: local rules are checked without counting,
        // then the Redis rules in one atomic script, then the local ones are counted.
        if let Err(limited) = self.local.check(&local, remote.is_empty()) {
            return Some(Box::pin(std::future::ready(Err(limited))));
        }
        let Some(redis) = self.redis.clone().filter(|_| !remote.is_empty()) else {
            return Some(Box::pin(std::future::ready(Ok(()))));
        };
        let state = self.local.clone();
        Some(Box::pin(async move {
            match redis.check(&remote).await {
                Ok(Ok(())) => {}
                Ok(Err((worst, wait))) => {
                    let rule = remote.get(worst).map_or_else(String::new, |k| format!("rate:{}", k.rule.name));
                    return Err(Limited { rule, retry_after: wait });
                }
                Err(e) if remote.iter().all(|k| k.rule.on_error == OnError::Allow) => {
                    tracing::warn!(error = %e, "rate limit store unavailable: allowing (on_error = allow)");
                }
                Err(e) => {
                    tracing::error!(error = %e, "rate limit store unavailable: refusing (on_error = deny)");
                    let name =
                        remote.iter().find(|k| k.rule.on_error == OnError::Deny).map_or("", |k| k.rule.name.as_str());
                    let rule = format!("rate:{name} (store unavailable)");
                    return Err(Limited { rule, retry_after: Duration::from_secs(1) });
                }
            }
            state.check(&local, true)
        }))
    }
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").field("rules", &self.rules.len()).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(max: u32, window: Duration, per: Vec<KeyPart>) -> Rule {
        Rule {
            name: "t".into(),
            targets: Targets { tools: vec!["trigger_*".into()], ..Targets::default() },
            limits: vec![Limit { per, max, window }],
            backend: Backend::Local,
            on_error: OnError::Deny,
        }
    }

    fn who(sub: &str) -> Principal {
        Principal { subject: sub.into(), ..Principal::anonymous() }
    }

    async fn allowed(l: &Limiter, p: &Principal, tool: &str) -> Option<bool> {
        Some(l.check(p, Kind::Tool, tool, tool)?.await.is_ok())
    }

    #[tokio::test]
    async fn a_burst_of_max_then_refusals_with_the_wait() {
        let l = Limiter::new(vec![rule(10, Duration::from_secs(60), vec![KeyPart::Subject])], None).unwrap();
        let (alice, bob) = (who("alice"), who("bob"));
        for _ in 0..10 {
            assert_eq!(allowed(&l, &alice, "trigger_pipeline").await, Some(true));
        }
        let refused = l.check(&alice, Kind::Tool, "trigger_pipeline", "trigger_pipeline").unwrap().await.unwrap_err();
        assert_eq!(refused.rule, "rate:t");
        // One call per 6 s after the burst.
        assert!(
            refused.retry_after > Duration::from_secs(5) && refused.retry_after <= Duration::from_secs(6),
            "{refused:?}"
        );
        assert_eq!(allowed(&l, &bob, "trigger_pipeline").await, Some(true), "per subject");
        assert_eq!(allowed(&l, &alice, "echo").await, None, "not covered");
    }

    #[tokio::test]
    async fn all_limits_of_a_rule_must_allow_and_a_refusal_counts_against_none() {
        let mut r = rule(3, Duration::from_secs(60), vec![KeyPart::Subject]);
        r.limits.push(Limit { per: vec![], max: 4, window: Duration::from_secs(60) });
        let l = Limiter::new(vec![r], None).unwrap();
        for _ in 0..3 {
            assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true));
        }
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(false), "per-subject limit");
        assert_eq!(allowed(&l, &who("b"), "trigger_x").await, Some(true), "the global limit still had one");
        assert_eq!(allowed(&l, &who("c"), "trigger_x").await, Some(false), "global limit reached");
    }

    #[tokio::test]
    async fn a_refusal_by_one_rule_counts_against_no_other() {
        let mut per_tool = rule(1, Duration::from_secs(60), vec![KeyPart::Subject]);
        per_tool.name = "per-tool".into();
        let mut tenant = rule(3, Duration::from_secs(60), vec![KeyPart::Tenant]);
        tenant.name = "per-tenant".into();
        let l = Limiter::new(vec![per_tool, tenant], None).unwrap();
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true));
        for _ in 0..5 {
            let refused = l.check(&who("a"), Kind::Tool, "trigger_x", "trigger_x").unwrap().await.unwrap_err();
            assert_eq!(refused.rule, "rate:per-tool");
        }
        // The tenant-wide limit still has 2 of its 3 calls: a's refusals did not use them.
        assert_eq!(allowed(&l, &who("b"), "trigger_x").await, Some(true));
        assert_eq!(allowed(&l, &who("c"), "trigger_x").await, Some(true));
        assert_eq!(allowed(&l, &who("d"), "trigger_x").await, Some(false));
    }

    #[tokio::test]
    async fn the_rate_refills() {
        let l = Limiter::new(vec![rule(2, Duration::from_millis(200), vec![])], None).unwrap();
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true));
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true));
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(false));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true), "one interval later");
    }
}
