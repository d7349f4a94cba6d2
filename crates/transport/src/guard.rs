//! DNS-rebinding protection (2025-11-25 basic/transports §Security Warning): the `Host` header
//! and, when present, the `Origin` header must name an allowed host. Checked before anything
//! else reads the request. The same origins are the ones CORS answers for (`http.rs`).

use http::HeaderMap;
use http::header::{HOST, ORIGIN};

/// Which `Host` and `Origin` values are accepted.
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    /// Allowed host names for `Host` (port ignored). Empty: any host.
    pub hosts: Vec<String>,
    /// Allowed origins: an entry with `://` must equal the `Origin` exactly; any other entry is a
    /// host name matched against the origin's host (any scheme and port). Empty: any origin.
    pub origins: Vec<String>,
    /// Refuse requests that came through a proxy (`Forwarded`, `X-Forwarded-*`, `Via`): set
    /// when authentication is `dev` or `off`, which are safe only for callers on this machine.
    /// A proxy or tunnel in front means the caller may be anywhere.
    pub direct_only: bool,
}

/// Which check failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    Host,
    Origin,
    Proxied,
}

// === impl OriginPolicy ===

impl OriginPolicy {
    /// The loopback names, for a server bound to loopback.
    pub fn loopback() -> Self {
        let names: Vec<String> = ["localhost", "127.0.0.1", "[::1]"].map(String::from).to_vec();
        Self { hosts: names.clone(), origins: names, direct_only: false }
    }

    pub(crate) fn check(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        if !self.hosts.is_empty() {
            let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
            if !self.hosts.iter().any(|h| h.eq_ignore_ascii_case(host_part(host))) {
                return Err(Refusal::Host);
            }
        }
        if self.direct_only
            && headers.keys().any(|k| {
                let k = k.as_str();
                k == "forwarded" || k == "via" || k.starts_with("x-forwarded-")
            })
        {
            return Err(Refusal::Proxied);
        }
        match headers.get(ORIGIN) {
            Some(origin) if !self.allows_origin(origin) => Err(Refusal::Origin),
            _ => Ok(()),
        }
    }

    /// Whether an `Origin` header value is allowed (also what CORS answers for).
    pub(crate) fn allows_origin(&self, origin: &http::HeaderValue) -> bool {
        if self.origins.is_empty() {
            return true;
        }
        let Ok(origin) = origin.to_str() else { return false };
        let host = origin.split_once("://").map(|(_, rest)| host_part(rest));
        self.origins.iter().any(|allowed| {
            if allowed.contains("://") {
                allowed.eq_ignore_ascii_case(origin)
            } else {
                host.is_some_and(|h| allowed.eq_ignore_ascii_case(h))
            }
        })
    }
}

/// `host[:port]` → `host`, keeping IPv6 brackets.
fn host_part(authority: &str) -> &str {
    let authority = authority.split('/').next().unwrap_or("");
    if authority.starts_with('[') {
        return authority.find(']').map_or(authority, |i| &authority[..=i]);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(host: &str, origin: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(HOST, HeaderValue::from_str(host).unwrap());
        if let Some(o) = origin {
            h.insert(ORIGIN, HeaderValue::from_str(o).unwrap());
        }
        h
    }

    #[test]
    fn loopback_policy() {
        let p = OriginPolicy::loopback();
        assert_eq!(p.check(&headers("localhost:8080", None)), Ok(()));
        assert_eq!(p.check(&headers("127.0.0.1:8080", Some("http://localhost:3000"))), Ok(()));
        assert_eq!(p.check(&headers("[::1]:8080", Some("http://[::1]:9"))), Ok(()));
        assert_eq!(p.check(&headers("evil.example.com", None)), Err(Refusal::Host));
        assert_eq!(p.check(&headers("localhost", Some("http://evil.example.com"))), Err(Refusal::Origin));
        assert_eq!(p.check(&headers("localhost", Some("null"))), Err(Refusal::Origin));
    }

    #[test]
    fn a_direct_only_policy_refuses_what_came_through_a_proxy() {
        let p = OriginPolicy { direct_only: true, ..OriginPolicy::loopback() };
        assert_eq!(p.check(&headers("localhost:8080", None)), Ok(()));
        for h in ["forwarded", "x-forwarded-for", "x-forwarded-host", "X-Forwarded-Proto", "via"] {
            let mut with = headers("localhost:8080", None);
            with.insert(http::HeaderName::from_bytes(h.as_bytes()).unwrap(), HeaderValue::from_static("1.2.3.4"));
            assert_eq!(p.check(&with), Err(Refusal::Proxied), "{h}");
            assert_eq!(OriginPolicy::loopback().check(&with), Ok(()), "only when direct_only: {h}");
        }
    }

    #[test]
    fn exact_origins_and_open_policy() {
        let p = OriginPolicy { hosts: vec![], origins: vec!["https://app.example.com".into()], direct_only: false };
        assert_eq!(p.check(&headers("anything", Some("https://app.example.com"))), Ok(()));
        assert_eq!(p.check(&headers("anything", Some("http://app.example.com"))), Err(Refusal::Origin));
        assert_eq!(OriginPolicy::default().check(&headers("x", Some("http://y"))), Ok(()));
    }
}
