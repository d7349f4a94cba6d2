//! Measures token verification cost, and mints test tokens for the auth benchmark.
//!
//! `cargo run --release --example jwt_bench -- verify [N]` prints uncached RS256 and ES256
//! verifications per second on one core (a full `Issuer::verify`: header, key, signature, claims)
//! and the cached path (`Authenticator` hit). `... -- mint AUD` prints an RS256 token for AUD
//! signed by the test key in tests/fixtures (valid one hour). Test keys only.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, encode};
use portcullis_auth::{Authenticator, ClaimMapping, Issuer, IssuerKeys};
use serde_json::json;

const ISS: &str = "https://bench.test";
const RSA_KEY: &[u8] = include_bytes!("../tests/fixtures/rsa-a.key.pem");
const RSA_PUB: &[u8] = include_bytes!("../tests/fixtures/rsa-a.pub.pem");
const EC_KEY: &[u8] = include_bytes!("../tests/fixtures/ec.key.pem");
const EC_PUB: &[u8] = include_bytes!("../tests/fixtures/ec.pub.pem");

fn token(alg: Algorithm, key: &EncodingKey, aud: &str) -> anyhow::Result<String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let claims = json!({ "iss": ISS, "sub": "bench", "aud": aud, "exp": now + 3600, "iat": now, "scope": "mcp:tools" });
    Ok(encode(&Header::new(alg), &claims, key)?)
}

fn issuer(alg: Algorithm, key: DecodingKey, aud: &str) -> anyhow::Result<Issuer> {
    Ok(Issuer::new(
        ISS.into(),
        vec![aud.into()],
        vec![alg],
        Duration::from_secs(5),
        IssuerKeys::Pem(vec![key]),
        ClaimMapping::default(),
    )?)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.first().map(String::as_str) {
        Some("mint") => {
            let aud = args.get(1).ok_or_else(|| anyhow::anyhow!("usage: jwt_bench mint AUD"))?;
            println!("{}", token(Algorithm::RS256, &EncodingKey::from_rsa_pem(RSA_KEY)?, aud)?);
        }
        Some("verify") => {
            let n: u32 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
            let aud = "http://bench.test/mcp";
            let cases = [
                ("RS256", Algorithm::RS256, EncodingKey::from_rsa_pem(RSA_KEY)?, DecodingKey::from_rsa_pem(RSA_PUB)?),
                ("ES256", Algorithm::ES256, EncodingKey::from_ec_pem(EC_KEY)?, DecodingKey::from_ec_pem(EC_PUB)?),
            ];
            for (name, alg, enc, dec) in cases {
                let t = token(alg, &enc, aud)?;
                let is = issuer(alg, dec.clone(), aud)?;
                let start = Instant::now();
                for _ in 0..n {
                    rt.block_on(is.verify(&t))?;
                }
                let per = start.elapsed() / n;
                println!(
                    "{name} uncached verify: {:.1} µs, {:.0}/s on one core",
                    per.as_nanos() as f64 / 1000.0,
                    1e9 / per.as_nanos() as f64
                );
                let auth = Authenticator::new(vec![issuer(alg, dec, aud)?], Duration::from_secs(300), 10_000);
                rt.block_on(auth.authenticate(&t)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                let start = Instant::now();
                for _ in 0..n {
                    rt.block_on(auth.authenticate(&t)).map_err(|e| anyhow::anyhow!("{e:?}"))?;
                }
                let per = start.elapsed() / n;
                println!(
                    "{name} cached authenticate: {:.2} µs, {:.0}/s on one core",
                    per.as_nanos() as f64 / 1000.0,
                    1e9 / per.as_nanos() as f64
                );
            }
        }
        _ => anyhow::bail!("usage: jwt_bench verify [N] | jwt_bench mint AUD"),
    }
    Ok(())
}
