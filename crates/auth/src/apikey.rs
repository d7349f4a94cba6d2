//! API keys for service accounts. Only the SHA-256 of each key is configured or held; a presented
//! key is hashed and compared against every configured hash in constant time, so neither the key
//! nor which entry matched leaks through timing.

use aws_lc_rs::constant_time::verify_slices_are_equal;
use aws_lc_rs::digest::{SHA256, digest};
use portcullis_engine::{AuthMethod, Principal};

/// One service account's key, by hash.
#[derive(Clone)]
pub struct ApiKey {
    hash: [u8; 32],
    principal: Principal,
}

/// A configured hash is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an API key hash must be 64 hexadecimal digits (the SHA-256 of the key)")]
pub struct BadHash;

impl ApiKey {
    /// A key whose SHA-256 is `sha256_hex`, authenticating as `principal` (method set to API key).
    pub fn new(sha256_hex: &str, mut principal: Principal) -> Result<Self, BadHash> {
        let hex = sha256_hex.trim();
        if hex.len() != 64 {
            return Err(BadHash);
        }
        let mut hash = [0u8; 32];
        for (i, b) in hash.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| BadHash)?;
        }
        principal.method = AuthMethod::ApiKey;
        principal.issuer = Some("portcullis:api-key".into());
        Ok(Self { hash, principal })
    }

    /// The hex SHA-256 of `key` (what goes in the configuration).
    pub fn hash_hex(key: &str) -> String {
        digest(&SHA256, key.as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey").field("subject", &self.principal.subject).finish_non_exhaustive()
    }
}

/// The principal of the key `presented`, if any configured key matches.
pub(crate) fn find(keys: &[ApiKey], presented: &str) -> Option<Principal> {
    let d = digest(&SHA256, presented.as_bytes());
    let mut found = None;
    // Every entry is compared, match or not: the time taken does not depend on which one matched.
    for k in keys {
        if verify_slices_are_equal(d.as_ref(), &k.hash).is_ok() {
            found = Some(k.principal.clone());
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_match_by_hash_only() {
        let p = Principal { subject: "ci-bot".into(), ..Principal::anonymous() };
        let k = ApiKey::new(&ApiKey::hash_hex("s3cret-key"), p).unwrap();
        let found = find(std::slice::from_ref(&k), "s3cret-key").unwrap();
        assert_eq!(found.subject, "ci-bot");
        assert_eq!(found.method, AuthMethod::ApiKey);
        assert!(find(std::slice::from_ref(&k), "s3cret-kez").is_none());
        assert!(!format!("{k:?}").contains("hash"));
        assert_eq!(ApiKey::new("abc", Principal::anonymous()).err(), Some(BadHash));
        assert_eq!(ApiKey::new(&"zz".repeat(32), Principal::anonymous()).err(), Some(BadHash));
        assert_eq!(ApiKey::hash_hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
