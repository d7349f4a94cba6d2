//! The dev issuer's signing key: an ES256 key generated on first use and kept in a file readable
//! only by its owner, so `portcullis token` (one process) and `portcullis serve` (another) agree.
//! For local development only: anyone who can read the file can mint tokens.

use std::io::Write as _;
use std::path::Path;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde_json::{Value, json};

/// The dev signing key.
pub struct DevKey {
    pkcs8: Vec<u8>,
    x: String,
    y: String,
    kid: String,
}

/// The key file could not be read, written or parsed.
#[derive(Debug, thiserror::Error)]
#[error("dev signing key {path}: {reason}")]
pub struct DevKeyError {
    path: String,
    reason: String,
}

impl DevKey {
    /// Loads the key at `path`, creating it (mode 0600) if it does not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, DevKeyError> {
        let err = |reason: String| DevKeyError { path: path.display().to_string(), reason };
        let pkcs8 = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path).map_err(err)?,
            Err(e) => return Err(err(e.to_string())),
        };
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|_| err("not a PKCS#8 P-256 key".into()))?;
        let public = pair.public_key().as_ref();
        if public.len() != 65 || public[0] != 4 {
            return Err(err("unexpected public key encoding".into()));
        }
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let (x, y) = (b64(&public[1..33]), b64(&public[33..65]));
        // RFC 7638 thumbprint: the kid changes exactly when the key does.
        let thumb = json!({ "crv": "P-256", "kty": "EC", "x": x, "y": y }).to_string();
        let kid = b64(digest(&SHA256, thumb.as_bytes()).as_ref());
        Ok(Self { pkcs8, x, y, kid })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The verification key.
    pub fn decoding_key(&self) -> Result<DecodingKey, jsonwebtoken::errors::Error> {
        DecodingKey::from_ec_components(&self.x, &self.y)
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        json!({ "kty": "EC", "crv": "P-256", "x": self.x, "y": self.y, "kid": self.kid, "alg": "ES256", "use": "sig" })
    }

    /// Signs `claims` as an ES256 JWT.
    pub fn sign(&self, claims: &Value) -> Result<String, jsonwebtoken::errors::Error> {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(self.kid.clone());
        h.typ = Some("at+jwt".into());
        jsonwebtoken::encode(&h, claims, &EncodingKey::from_ec_der(&self.pkcs8))
    }
}

/// Writes a new key to `path` (owner-only) unless another process got there first, in which case
/// that key is read: the file is written under a temporary name and linked into place, which never
/// replaces an existing file, so a reader never sees half a key.
fn create(path: &Path) -> Result<Vec<u8>, String> {
    let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new())
        .map_err(|_| "key generation failed".to_owned())?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    }
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    let tmp = path.with_extension(format!("tmp-{}-{:x}", std::process::id(), u64::from_le_bytes(nonce)));
    let write = || -> std::io::Result<()> {
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(&tmp)?;
        f.write_all(doc.as_ref())?;
        f.sync_all()?;
        std::fs::hard_link(&tmp, path)
    };
    let linked = write();
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(doc.as_ref().to_vec()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(path).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

impl std::fmt::Debug for DevKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevKey").field("kid", &self.kid).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_reloaded_after_and_private() {
        let dir = std::env::temp_dir().join(format!("portcullis-devkey-{}", std::process::id()));
        let path = dir.join("k.p8");
        let a = DevKey::load_or_create(&path).unwrap();
        let b = DevKey::load_or_create(&path).unwrap();
        assert_eq!(a.kid(), b.kid());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let token = a.sign(&json!({ "sub": "x", "exp": 4_000_000_000u64, "iss": "i", "aud": "a" })).unwrap();
        let mut v = jsonwebtoken::Validation::new(Algorithm::ES256);
        v.set_audience(&["a"]);
        jsonwebtoken::decode::<Value>(&token, &b.decoding_key().unwrap(), &v).unwrap();
        assert!(!format!("{a:?}").contains(&a.x));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
