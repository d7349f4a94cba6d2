//! Configuration, in two stages: [`RawConfig`] mirrors the TOML file (unknown keys and bad values
//! are errors that name the key, line and column), and [`Config::resolve`] turns it into the
//! options the transports and engine take. With no file, the embedded default applies.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use portcullis_transport::{HttpOptions, OriginPolicy};
use serde::{Deserialize, Deserializer};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Listener and HTTP limits.
    #[serde(default)]
    pub server: ServerSection,
    /// Session limits and SSE behaviour.
    #[serde(default)]
    pub sessions: SessionsSection,
    /// Log output.
    #[serde(default)]
    pub log: LogSection,
    /// The built-in demo tools.
    #[serde(default)]
    pub demo: DemoSection,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    /// Address to listen on (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Streamable HTTP endpoint path (default `/mcp`).
    pub path: String,
    /// 2024-11-05 SSE endpoint path (default `/sse`).
    pub sse_path: String,
    /// 2024-11-05 POST endpoint path (default `/message`).
    pub message_path: String,
    /// Largest request body in bytes (default 4 MiB).
    pub max_body_bytes: usize,
    /// Deepest JSON nesting accepted (default 64).
    pub max_json_depth: usize,
    /// Host names accepted in `Host` (DNS-rebinding protection). Default: the loopback names
    /// when listening on loopback, otherwise any host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins accepted in `Origin`: full origins (`https://app.example.com`) or host names.
    /// Default: the loopback names when listening on loopback, otherwise any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// How long shutdown waits for in-flight requests (default `10s`).
    #[serde(deserialize_with = "duration")]
    pub shutdown_grace: Duration,
}

/// `[sessions]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionsSection {
    /// Sessions idle longer than this end (default `30m`).
    #[serde(deserialize_with = "duration")]
    pub idle_ttl: Duration,
    /// Most concurrent sessions (default 10000).
    pub max: usize,
    /// Interval of SSE keep-alive comments (default `15s`).
    #[serde(deserialize_with = "duration")]
    pub sse_keepalive: Duration,
    /// The SSE `retry:` hint (default `1s`).
    #[serde(deserialize_with = "duration")]
    pub sse_retry: Duration,
    /// Events kept per SSE stream for resumption (default 256).
    pub sse_buffer_events: usize,
    /// How long a tool waits for the client to answer sampling/elicitation (default `120s`).
    #[serde(deserialize_with = "duration")]
    pub client_request_timeout: Duration,
    /// Items per page of list results (default 100).
    pub page_size: usize,
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// `human` or `json`.
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,portcullis::request=warn`. `RUST_LOG` overrides it.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// `[demo]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoSection {
    /// Register the demo tools, resources and prompts (default true).
    pub enabled: bool,
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// HTTP transport options.
    pub http: HttpOptions,
    /// Shutdown deadline.
    pub shutdown_grace: Duration,
    /// Engine: items per list page.
    pub page_size: usize,
    /// Engine: wait for client answers.
    pub client_request_timeout: Duration,
    /// Log settings.
    pub log: LogSection,
    /// Demo tools on or off.
    pub demo: bool,
}

/// A configuration problem, with where it is.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or does not match the schema; the message names key, line, column.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The path.
        path: String,
        /// toml's located message.
        message: String,
    },
    /// A value is well-formed but not usable.
    #[error("invalid config: {0}")]
    Invalid(String),
}

// === defaults ===

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            path: "/mcp".into(),
            sse_path: "/sse".into(),
            message_path: "/message".into(),
            max_body_bytes: 4 * 1024 * 1024,
            max_json_depth: 64,
            allowed_hosts: None,
            allowed_origins: None,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for SessionsSection {
    fn default() -> Self {
        Self {
            idle_ttl: Duration::from_secs(30 * 60),
            max: 10_000,
            sse_keepalive: Duration::from_secs(15),
            sse_retry: Duration::from_secs(1),
            sse_buffer_events: 256,
            client_request_timeout: Duration::from_secs(120),
            page_size: 100,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".into(),
        }
    }
}

impl Default for DemoSection {
    fn default() -> Self {
        Self { enabled: true }
    }
}

// === impl RawConfig / Config ===

impl RawConfig {
    /// Parses TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }
}

impl Config {
    /// Validates and resolves `raw`.
    pub fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let s = raw.server;
        let paths = [
            ("server.path", &s.path),
            ("server.sse_path", &s.sse_path),
            ("server.message_path", &s.message_path),
        ];
        for (key, p) in paths {
            if !p.starts_with('/') || p.len() < 2 {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be an absolute path like \"/mcp\", got {p:?}"
                )));
            }
        }
        if s.path == s.sse_path || s.path == s.message_path || s.sse_path == s.message_path {
            return Err(ConfigError::Invalid(
                "server.path, server.sse_path and server.message_path must differ".into(),
            ));
        }
        let positive = [
            ("server.max_body_bytes", s.max_body_bytes),
            ("server.max_json_depth", s.max_json_depth),
            ("sessions.max", raw.sessions.max),
            ("sessions.sse_buffer_events", raw.sessions.sse_buffer_events),
            ("sessions.page_size", raw.sessions.page_size),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!(
                    "{key} must be greater than 0"
                )));
            }
        }
        if raw.sessions.sse_keepalive.is_zero() {
            return Err(ConfigError::Invalid(
                "sessions.sse_keepalive must be greater than 0".into(),
            ));
        }
        let loopback = OriginPolicy::loopback();
        let on_loopback = s.listen.ip().is_loopback();
        let origins = OriginPolicy {
            hosts: s.allowed_hosts.unwrap_or_else(|| {
                if on_loopback {
                    loopback.hosts.clone()
                } else {
                    Vec::new()
                }
            }),
            origins: s.allowed_origins.unwrap_or_else(|| {
                if on_loopback {
                    loopback.origins.clone()
                } else {
                    Vec::new()
                }
            }),
        };
        Ok(Self {
            listen: s.listen,
            http: HttpOptions {
                path: s.path,
                sse_path: s.sse_path,
                message_path: s.message_path,
                max_body_bytes: s.max_body_bytes,
                max_json_depth: s.max_json_depth,
                origins,
                session_idle_ttl: raw.sessions.idle_ttl,
                max_sessions: raw.sessions.max,
                keepalive: raw.sessions.sse_keepalive,
                sse_retry: raw.sessions.sse_retry,
                sse_buffer_events: raw.sessions.sse_buffer_events,
            },
            shutdown_grace: s.shutdown_grace,
            page_size: raw.sessions.page_size,
            client_request_timeout: raw.sessions.client_request_timeout,
            log: raw.log,
            demo: raw.demo.enabled,
        })
    }

    /// The embedded default (`portcullis serve` with no file).
    pub fn embedded() -> Self {
        // The defaults are valid by construction; resolve cannot fail on them.
        Self::resolve(RawConfig::default())
            .unwrap_or_else(|e| unreachable!("embedded default is invalid: {e}"))
    }

    /// Moves the listener, re-deriving the Host/Origin defaults for the new address.
    pub fn with_listen(mut self, listen: SocketAddr, raw_hosts_set: bool) -> Self {
        if !raw_hosts_set {
            self.http.origins = if listen.ip().is_loopback() {
                OriginPolicy::loopback()
            } else {
                OriginPolicy::default()
            };
        }
        self.listen = listen;
        self
    }
}

/// Parses `250ms`, `15s`, `30m`, `2h`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.checked_mul(60)?),
        "h" => Duration::from_secs(n.checked_mul(3600)?),
        _ => return None,
    })
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "invalid duration {s:?}: use a whole number with ms, s, m or h, like \"15s\""
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match RawConfig::parse(text, "test.toml").and_then(Config::resolve) {
            Ok(_) => panic!("expected an error for {text:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let c = Config::resolve(RawConfig::parse("", "x").unwrap()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.http.path, "/mcp");
        assert_eq!(c.http.max_body_bytes, 4 << 20);
        assert_eq!(c.http.origins.hosts, ["localhost", "127.0.0.1", "[::1]"]);
        assert!(c.demo);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = err("[server]\nlisten = \"127.0.0.1:9\"\nlisten_port = 3\n");
        assert!(
            e.contains("line 3") && e.contains("listen_port") && e.contains("test.toml"),
            "{e}"
        );
        let e = err("[sessions]\n\nidle_ttl = \"ten minutes\"\n");
        assert!(
            e.contains("line 3") && e.contains("invalid duration"),
            "{e}"
        );
        let e = err("[server]\nlisten = \"nowhere\"\n");
        assert!(e.contains("line 2") && e.contains("listen"), "{e}");
        let e = err("[serverr]\n");
        assert!(e.contains("line 1") && e.contains("serverr"), "{e}");
        let e = err("[log]\nformat = \"xml\"\n");
        assert!(e.contains("line 2") && e.contains("xml"), "{e}");
    }

    #[test]
    fn unusable_values_are_refused() {
        assert!(err("[server]\npath = \"mcp\"\n").contains("server.path"));
        assert!(err("[server]\nmax_body_bytes = 0\n").contains("server.max_body_bytes"));
        assert!(err("[server]\nsse_path = \"/mcp\"\n").contains("must differ"));
    }

    #[test]
    fn public_listeners_default_to_any_host() {
        let c =
            Config::resolve(RawConfig::parse("[server]\nlisten = \"0.0.0.0:80\"\n", "x").unwrap())
                .unwrap();
        assert!(c.http.origins.hosts.is_empty());
        let c = Config::resolve(
            RawConfig::parse(
                "[server]\nlisten = \"0.0.0.0:80\"\nallowed_hosts = [\"mcp.example.com\"]\n",
                "x",
            )
            .unwrap(),
        )
        .unwrap();
        assert_eq!(c.http.origins.hosts, ["mcp.example.com"]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30m"), Some(Duration::from_secs(1800)));
        assert_eq!(parse_duration("15"), None);
        assert_eq!(parse_duration("s"), None);
        assert_eq!(parse_duration("5d"), None);
    }
}

#[cfg(test)]
mod docs_tests {
    use super::*;

    #[test]
    fn docs_config_example_is_the_default() {
        let doc = include_str!("../docs/config.md");
        let start = doc
            .find("```toml\n")
            .expect("docs/config.md has a toml block")
            + 8;
        let end = start + doc[start..].find("```").expect("the toml block ends");
        let from_docs =
            Config::resolve(RawConfig::parse(&doc[start..end], "docs/config.md").unwrap()).unwrap();
        assert_eq!(
            format!("{from_docs:?}"),
            format!("{:?}", Config::embedded())
        );
    }
}
