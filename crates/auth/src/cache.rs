//! Verified tokens, keyed by the SHA-256 of the token (the token itself is never stored), kept
//! until the earlier of the token's expiry and the configured TTL. Bounded: when full, expired
//! entries go first, then arbitrary ones.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{SHA256, digest};
use portcullis_engine::Principal;

/// The cache.
pub struct TokenCache {
    ttl: Duration,
    max: usize,
    /// Held only inside `get` and `put`.
    map: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
}

impl TokenCache {
    /// A cache trusting entries for at most `ttl`, holding at most `max`.
    pub fn new(ttl: Duration, max: usize) -> Self {
        Self { ttl, max, map: Mutex::default() }
    }

    fn key(token: &str) -> [u8; 32] {
        let d = digest(&SHA256, token.as_bytes());
        let mut k = [0u8; 32];
        k.copy_from_slice(d.as_ref());
        k
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (Principal, Instant)>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The principal of a token verified earlier and not yet expired.
    pub fn get(&self, token: &str) -> Option<Principal> {
        if self.max == 0 || self.ttl.is_zero() {
            return None;
        }
        let key = Self::key(token);
        let mut map = self.lock();
        match map.get(&key) {
            Some((p, until)) if *until > Instant::now() => Some(p.clone()),
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Remembers a verified token.
    pub fn put(&self, token: &str, principal: &Principal) {
        if self.max == 0 || self.ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut life = self.ttl;
        if let Some(exp) = principal.expires_at {
            let now_unix = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            life = life.min(Duration::from_secs(exp.saturating_sub(now_unix)));
        }
        if life.is_zero() {
            return;
        }
        let mut map = self.lock();
        if map.len() >= self.max {
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= self.max
                && let Some(k) = map.keys().next().copied()
            {
                map.remove(&k);
            }
        }
        map.insert(Self::key(token), (principal.clone(), now + life));
    }

    /// Forgets every entry (revocation makes cached verdicts stale).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(exp: Option<u64>) -> Principal {
        Principal { expires_at: exp, ..Principal::anonymous() }
    }

    #[test]
    fn bounded_and_respects_expiry() {
        let c = TokenCache::new(Duration::from_secs(60), 2);
        c.put("a", &principal(None));
        c.put("b", &principal(None));
        c.put("c", &principal(None));
        assert_eq!(c.len(), 2);
        assert!(c.get("c").is_some());
        // Already expired by its own `exp`: never cached.
        c.put("d", &principal(Some(1)));
        assert!(c.get("d").is_none());
        let off = TokenCache::new(Duration::ZERO, 10);
        off.put("a", &principal(None));
        assert!(off.get("a").is_none());
    }
}
