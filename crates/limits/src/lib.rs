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

use portcullis_engine::policy::{Kind, glob};
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
    /// Tool name patterns.
    pub tools: Vec<String>,
    /// Resource URI patterns.
    pub resources: Vec<String>,
    /// Prompt name patterns.
    pub prompts: Vec<String>,
    /// The limits; all must allow.
    pub limits: Vec<Limit>,
    /// Where the counters live.
    pub backend: Backend,
    /// Redis rules: when Redis fails.
    pub on_error: OnError,
}

impl Rule {
    fn covers(&self, kind: Kind, target: &str) -> bool {
        let patterns = match kind {
            Kind::Tool => &self.tools,
            Kind::Resource => &self.resources,
            Kind::Prompt => &self.prompts,
        };
        patterns.iter().any(|p| glob(p, target))
    }

    /// The counter keys of each limit for this call, and their (emission interval, tolerance).
    fn keys(&self, index: usize, p: &Principal, target: &str) -> Vec<(String, u64, u64)> {
        self.limits
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let mut key = format!("{}:{index}:{i}", self.name.len());
                key.push_str(&self.name);
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
                (key, interval, window.saturating_sub(interval))
            })
            .collect()
    }
}

/// The limiter: local state, and the Redis connection when any rule needs it.
pub struct Limiter {
    rules: Vec<Arc<Rule>>,
    local: Mutex<Local>,
    redis: Option<Arc<Redis>>,
}

struct Local {
    epoch: Instant,
    /// Key → TAT in microseconds since `epoch`.
    tat: HashMap<String, u64>,
}

/// Most local keys before expired ones are swept.
const LOCAL_SWEEP_AT: usize = 100_000;

struct Redis {
    client: redis::Client,
    conn: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    script: redis::Script,
    prefix: String,
}

/// Checks every key and counts the call against all of them only if all allow; otherwise the
/// longest wait, in microseconds. KEYS: the counters; ARGV: interval and tolerance per key.
const GCRA_LUA: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tats = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[2 * i - 1])
  local tolerance = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', key) or now)
  if tat < now then tat = now end
  tats[i] = tat
  if tat - now > tolerance and tat - now - tolerance > wait then wait = tat - now - tolerance end
end
if wait > 0 then return {0, math.ceil(wait)} end
for i, key in ipairs(KEYS) do
  local next_tat = tats[i] + tonumber(ARGV[2 * i - 1])
  redis.call('SET', key, string.format('%.0f', next_tat), 'PX', math.ceil((next_tat - now) / 1000) + 1)
end
return {1, 0}
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
        Ok(Self {
            rules: rules.into_iter().map(Arc::new).collect(),
            local: Mutex::new(Local { epoch: Instant::now(), tat: HashMap::new() }),
            redis,
        })
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

    fn check_local(&self, keys: &[(String, u64, u64)]) -> Result<(), Duration> {
        let mut local = self.local.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = local.epoch.elapsed().as_micros() as u64;
        if local.tat.len() > LOCAL_SWEEP_AT {
            local.tat.retain(|_, tat| *tat > now);
        }
        let mut wait = 0;
        let tats: Vec<u64> = keys
            .iter()
            .map(|(key, _, tolerance)| {
                let tat = local.tat.get(key).copied().unwrap_or(now).max(now);
                wait = wait.max((tat - now).saturating_sub(*tolerance));
                tat
            })
            .collect();
        if wait > 0 {
            return Err(Duration::from_micros(wait));
        }
        for ((key, interval, _), tat) in keys.iter().zip(tats) {
            local.tat.insert(key.clone(), tat + interval);
        }
        Ok(())
    }
}

impl Redis {
    async fn conn(&self) -> Result<redis::aio::ConnectionManager, String> {
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

    async fn check(&self, keys: &[(String, u64, u64)]) -> Result<Result<(), Duration>, String> {
        let mut conn = self.conn().await?;
        let mut invocation = self.script.prepare_invoke();
        for (key, interval, tolerance) in keys {
            invocation.key(format!("{}{key}", self.prefix)).arg(*interval).arg(*tolerance);
        }
        let (allowed, wait): (i64, i64) = invocation.invoke_async(&mut conn).await.map_err(|e| e.to_string())?;
        Ok(if allowed == 1 { Ok(()) } else { Err(Duration::from_micros(wait.max(1) as u64)) })
    }
}

impl RateLimiter for Limiter {
    fn check(
        &self,
        principal: &Principal,
        kind: Kind,
        target: &str,
    ) -> Option<BoxFuture<'static, Result<(), Limited>>> {
        let mut remote = Vec::new();
        let mut covered = false;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.covers(kind, target) {
                continue;
            }
            covered = true;
            let keys = rule.keys(index, principal, target);
            match rule.backend {
                Backend::Local => {
                    if let Err(wait) = self.check_local(&keys) {
                        let limited = Limited { rule: format!("rate:{}", rule.name), retry_after: wait };
                        return Some(Box::pin(std::future::ready(Err(limited))));
                    }
                }
                Backend::Redis => remote.push((rule.clone(), keys)),
            }
        }
        if !covered {
            return None;
        }
        let redis = self.redis.clone();
        Some(Box::pin(async move {
            for (rule, keys) in remote {
                let Some(redis) = &redis else { continue };
                match redis.check(&keys).await {
                    Ok(Ok(())) => {}
                    Ok(Err(wait)) => return Err(Limited { rule: format!("rate:{}", rule.name), retry_after: wait }),
                    Err(e) if rule.on_error == OnError::Allow => {
                        tracing::warn!(rule = %rule.name, error = %e, "rate limit store unavailable: allowing (on_error = allow)");
                    }
                    Err(e) => {
                        tracing::error!(rule = %rule.name, error = %e, "rate limit store unavailable: refusing (on_error = deny)");
                        let rule = format!("rate:{} (store unavailable)", rule.name);
                        return Err(Limited { rule, retry_after: Duration::from_secs(1) });
                    }
                }
            }
            Ok(())
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
            tools: vec!["trigger_*".into()],
            resources: vec![],
            prompts: vec![],
            limits: vec![Limit { per, max, window }],
            backend: Backend::Local,
            on_error: OnError::Deny,
        }
    }

    fn who(sub: &str) -> Principal {
        Principal { subject: sub.into(), ..Principal::anonymous() }
    }

    async fn allowed(l: &Limiter, p: &Principal, tool: &str) -> Option<bool> {
        Some(l.check(p, Kind::Tool, tool)?.await.is_ok())
    }

    #[tokio::test]
    async fn a_burst_of_max_then_refusals_with_the_wait() {
        let l = Limiter::new(vec![rule(10, Duration::from_secs(60), vec![KeyPart::Subject])], None).unwrap();
        let (alice, bob) = (who("alice"), who("bob"));
        for _ in 0..10 {
            assert_eq!(allowed(&l, &alice, "trigger_pipeline").await, Some(true));
        }
        let refused = l.check(&alice, Kind::Tool, "trigger_pipeline").unwrap().await.unwrap_err();
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
    async fn the_rate_refills() {
        let l = Limiter::new(vec![rule(2, Duration::from_millis(200), vec![])], None).unwrap();
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true));
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true));
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(false));
        tokio::time::sleep(Duration::from_millis(120)).await;
        assert_eq!(allowed(&l, &who("a"), "trigger_x").await, Some(true), "one interval later");
    }
}
