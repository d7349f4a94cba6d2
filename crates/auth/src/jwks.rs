//! A JWKS endpoint's keys, cached. Freshness follows the response's `Cache-Control: max-age`,
//! capped by the configured max age. A token naming an unknown `kid` (key rotation) triggers a
//! refetch, but at most one per `min_refetch` interval and one at a time, so a flood of random
//! `kid`s cannot hammer the identity provider.

use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey};

use crate::jwt::JwtError;

/// JWKS cache settings.
#[derive(Debug, Clone)]
pub struct JwksOptions {
    /// Keys are refetched after this long even if the server allows longer.
    pub max_age: Duration,
    /// At most one fetch per this interval (unknown `kid`s included).
    pub min_refetch: Duration,
    /// Timeout of one fetch.
    pub timeout: Duration,
}

/// One JWKS endpoint.
pub struct Jwks {
    url: String,
    client: reqwest::Client,
    opts: JwksOptions,
    state: RwLock<State>,
    /// Serializes fetches (single flight); a waiter re-checks the state after acquiring it.
    fetching: tokio::sync::Mutex<()>,
    fetches: AtomicU64,
}

#[derive(Default)]
struct State {
    keys: Vec<(Option<String>, Option<Algorithm>, DecodingKey)>,
    fresh_until: Option<Instant>,
    last_fetch: Option<Instant>,
}

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

// === impl Jwks ===

impl Jwks {
    /// A cache for `url`, fetched lazily.
    pub fn new(url: String, client: reqwest::Client, opts: JwksOptions) -> Self {
        Self {
            url,
            client,
            opts,
            state: RwLock::default(),
            fetching: tokio::sync::Mutex::new(()),
            fetches: AtomicU64::new(0),
        }
    }

    /// How many fetches were attempted (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn find(&self, kid: Option<&str>, alg: Algorithm) -> (Option<DecodingKey>, bool) {
        let s = self.read();
        let fresh = s.fresh_until.is_some_and(|t| t > Instant::now());
        let key = s.keys.iter().find(|(k, a, _)| {
            let kid_ok = match kid {
                Some(kid) => k.as_deref() == Some(kid),
                None => true,
            };
            kid_ok && a.is_none_or(|a| a == alg)
        });
        (key.map(|(_, _, d)| d.clone()), fresh)
    }

    /// The key for a token's `kid` and `alg`, refetching the set when stale or when the `kid` is
    /// unknown (within the refetch budget).
    pub async fn key(&self, kid: Option<&str>, alg: Algorithm) -> Result<DecodingKey, JwtError> {
        if let (Some(k), true) = self.find(kid, alg) {
            return Ok(k);
        }
        let refreshed = self.refresh().await;
        match self.find(kid, alg) {
            (Some(k), _) => Ok(k),
            (None, _) => match refreshed {
                Err(e) if self.read().keys.is_empty() => Err(e),
                _ => Err(JwtError::UnknownKey),
            },
        }
    }

    async fn refresh(&self) -> Result<(), JwtError> {
        let _one_at_a_time = self.fetching.lock().await;
        {
            let s = self.read();
            if s.last_fetch.is_some_and(|t| t.elapsed() < self.opts.min_refetch) {
                return Ok(());
            }
        }
        self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner).last_fetch = Some(Instant::now());
        self.fetches.fetch_add(1, Ordering::Relaxed);
        let (set, max_age) = self.fetch().await.inspect_err(|e| {
            tracing::warn!(url = %self.url, error = %e, "JWKS fetch failed");
        })?;
        let keys: Vec<_> = set
            .keys
            .iter()
            .filter_map(|jwk| {
                let alg = jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok());
                DecodingKey::from_jwk(jwk).ok().map(|d| (jwk.common.key_id.clone(), alg, d))
            })
            .collect();
        let ttl = max_age.map_or(self.opts.max_age, |m| m.min(self.opts.max_age));
        let mut s = self.state.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        s.keys = keys;
        s.fresh_until = Some(Instant::now() + ttl);
        Ok(())
    }

    async fn fetch(&self) -> Result<(JwkSet, Option<Duration>), JwtError> {
        let unavailable = |m: String| JwtError::Unavailable(m);
        let resp = self
            .client
            .get(&self.url)
            .timeout(self.opts.timeout)
            .send()
            .await
            .map_err(|e| unavailable(format!("cannot fetch the signing keys: {e}")))?;
        if !resp.status().is_success() {
            return Err(unavailable(format!("signing keys endpoint answered {}", resp.status())));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').find_map(|d| d.trim().strip_prefix("max-age=")?.parse::<u64>().ok()))
            .map(Duration::from_secs);
        let body = resp.bytes().await.map_err(|e| unavailable(format!("reading the signing keys: {e}")))?;
        if body.len() > MAX_JWKS_BYTES {
            return Err(unavailable("signing keys document too large".into()));
        }
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| unavailable(format!("signing keys are not a JWK set: {e}")))?;
        Ok((set, max_age))
    }
}
