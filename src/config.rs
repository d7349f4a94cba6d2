//! Configuration, in two stages: [`RawConfig`] mirrors the TOML file (unknown keys and bad values
//! are errors that name the key, line and column), and [`Config::resolve`] turns it into the
//! options the transports and engine take. With no file, the embedded default applies.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use std::sync::Arc;

use portcullis_auth::Revocations;
use portcullis_transport::{ExtraRoutes, HttpAuth, HttpOptions, OriginPolicy};
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
    /// Authentication (OAuth 2.1 resource server).
    #[serde(default)]
    pub auth: AuthSection,
    /// Who may see and use which tools, resources and prompts.
    #[serde(default)]
    pub policy: PolicySection,
    /// The audit trail.
    #[serde(default)]
    pub audit: AuditSection,
    /// Rate limits.
    #[serde(default)]
    pub limits: LimitsSection,
    /// Prometheus metrics.
    #[serde(default)]
    pub metrics: MetricsSection,
    /// Size limits and prompt-injection screening around every call.
    #[serde(default)]
    pub guards: GuardsSection,
}

/// `[guards]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuardsSection {
    /// Largest `tools/call` params, in bytes (default 256 KiB).
    pub max_argument_bytes: usize,
    /// Largest tool or resource result, in bytes (default 4 MiB); larger ones are refused with a
    /// hint to ask for a smaller page.
    pub max_result_bytes: usize,
    /// Prompt-injection screening of results: `off`, `annotate` (default: `_meta` and an audit
    /// flag) or `block`.
    pub injection: String,
    /// Per tool name (or resource URI): the injection mode.
    pub tools: std::collections::BTreeMap<String, String>,
}

impl Default for GuardsSection {
    fn default() -> Self {
        let g = portcullis_engine::Guards::default();
        Self {
            max_argument_bytes: g.max_argument_bytes,
            max_result_bytes: g.max_result_bytes,
            injection: "annotate".into(),
            tools: Default::default(),
        }
    }
}

impl GuardsSection {
    fn build(&self) -> Result<portcullis_engine::Guards, ConfigError> {
        use portcullis_engine::InjectionMode;
        let mode = |key: &str, v: &str| match v {
            "off" => Ok(InjectionMode::Off),
            "annotate" => Ok(InjectionMode::Annotate),
            "block" => Ok(InjectionMode::Block),
            other => Err(ConfigError::Invalid(format!("{key}: {other:?}: use \"off\", \"annotate\" or \"block\""))),
        };
        if self.max_argument_bytes == 0 || self.max_result_bytes == 0 {
            return Err(ConfigError::Invalid("guards.max_argument_bytes and max_result_bytes must be > 0".into()));
        }
        let mut per_target = std::collections::HashMap::new();
        for (name, v) in &self.tools {
            per_target.insert(name.clone(), mode(&format!("guards.tools.{name}"), v)?);
        }
        Ok(portcullis_engine::Guards {
            max_argument_bytes: self.max_argument_bytes,
            max_result_bytes: self.max_result_bytes,
            injection: mode("guards.injection", &self.injection)?,
            per_target,
        })
    }
}

/// `[metrics]`: Prometheus text at `path` on the server's listener.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve metrics (default true).
    pub enabled: bool,
    /// The path (default `/metrics`).
    pub path: String,
    /// Environment variable holding a bearer token scrapers must send. Required when listening
    /// on a non-loopback address (metrics name tools and rules).
    pub token_env: Option<String>,
}

impl Default for MetricsSection {
    fn default() -> Self {
        Self { enabled: true, path: "/metrics".into(), token_env: None }
    }
}

/// The resolved `[metrics]` section.
#[derive(Clone)]
pub struct MetricsSettings {
    /// The path.
    pub path: String,
    /// The scrape token, if one is required.
    pub token: Option<String>,
}

impl std::fmt::Debug for MetricsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("path", &self.path)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// `[limits]`: GCRA rate limits on tools, resources and prompts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Redis for rules with `backend = "redis"`: the URL without a password.
    pub redis: Option<String>,
    /// Or an environment variable holding the whole URL.
    pub redis_env: Option<String>,
    /// Prefix of the Redis keys (default `{portcullis:rl}:`). The braces are a Redis Cluster hash
    /// tag: every counter lands in one slot, so one script can check several limits atomically.
    pub redis_key_prefix: String,
    /// `[[limits.rules]]`.
    pub rules: Vec<LimitRuleSection>,
}

/// `[[limits.rules]]`: targets and the limits that apply to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitRuleSection {
    /// The rule's name.
    pub name: String,
    /// Tool name patterns.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource URI patterns.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt name patterns.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// `local` (default) or `redis`.
    #[serde(default = "default_backend")]
    pub backend: String,
    /// Redis rules when Redis cannot answer: `deny` (default, fail closed) or `allow`.
    #[serde(default = "default_on_error")]
    pub on_error: String,
    /// The limits: `{ per = ["subject"], max = 10, window = "1m" }`; all must allow.
    pub limits: Vec<LimitSection>,
}

/// One limit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitSection {
    /// Counted separately per: any of `tenant`, `subject`, `client`, `tool`; empty: one counter.
    #[serde(default)]
    pub per: Vec<String>,
    /// Calls per window (and the burst).
    pub max: u32,
    /// The window, e.g. `1m`.
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
}

fn default_backend() -> String {
    "local".into()
}
fn default_on_error() -> String {
    "deny".into()
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self { redis: None, redis_env: None, redis_key_prefix: "{portcullis:rl}:".into(), rules: Vec::new() }
    }
}

impl LimitsSection {
    /// The limiter (`None` without rules).
    pub fn build(&self) -> Result<Option<Arc<portcullis_limits::Limiter>>, ConfigError> {
        use portcullis_limits::{Backend, KeyPart, Limit, Limiter, OnError, Rule};
        // Checked even without rules: a password written here is refused either way.
        let url = url_or_env(
            "limits.redis",
            self.redis.as_deref(),
            self.redis_env.as_deref(),
            "put the whole URL in an environment variable named by limits.redis_env",
        )?;
        if self.rules.is_empty() {
            return Ok(None);
        }
        let mut rules = Vec::new();
        for (i, r) in self.rules.iter().enumerate() {
            let at = format!("limits.rules[{i}] ({})", r.name);
            let backend = match r.backend.as_str() {
                "local" => Backend::Local,
                "redis" => Backend::Redis,
                other => {
                    return Err(ConfigError::Invalid(format!("{at}: backend {other:?}: use \"local\" or \"redis\"")));
                }
            };
            let on_error = match r.on_error.as_str() {
                "deny" => OnError::Deny,
                "allow" => OnError::Allow,
                other => {
                    return Err(ConfigError::Invalid(format!("{at}: on_error {other:?}: use \"deny\" or \"allow\"")));
                }
            };
            let mut limits = Vec::new();
            for l in &r.limits {
                let per = l
                    .per
                    .iter()
                    .map(|p| match p.as_str() {
                        "tenant" => Ok(KeyPart::Tenant),
                        "subject" => Ok(KeyPart::Subject),
                        "client" => Ok(KeyPart::Client),
                        "tool" => Ok(KeyPart::Tool),
                        other => Err(ConfigError::Invalid(format!(
                            "{at}: per {other:?}: use tenant, subject, client or tool"
                        ))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                limits.push(Limit { per, max: l.max, window: l.window });
            }
            rules.push(Rule {
                name: r.name.clone(),
                targets: targets(&r.tools, &r.resources, &r.prompts),
                limits,
                backend,
                on_error,
            });
        }
        let limiter = Limiter::new(rules, url.as_deref().map(|u| (u, self.redis_key_prefix.as_str())))
            .map_err(|e| ConfigError::Invalid(format!("limits: {e}")))?;
        Ok(Some(Arc::new(limiter)))
    }
}

/// `[audit]`: where the hash-chained audit trail goes and when results wait for it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// `sqlite` (default), `postgres`, `jsonl`, or `off`.
    pub sink: AuditSink,
    /// `sqlite`: the database file; `jsonl`: the file, or `-` for stdout.
    pub path: std::path::PathBuf,
    /// `postgres`: the connection URL, without a password (`postgres://user@host:5432/db`).
    pub postgres_url: Option<String>,
    /// `postgres`: environment variable holding the URL (may include a password).
    pub postgres_url_env: Option<String>,
    /// `postgres`: the table (default `audit_log`).
    pub postgres_table: String,
    /// `durable` (default): a result is released once its record is on disk (group commit);
    /// `async`: at once, the record follows within one batch.
    pub durability: AuditDurability,
    /// Argument keys whose values are recorded as `"[redacted]"` (patterns, case-insensitive,
    /// any depth). A SHA-256 of the original arguments is always kept.
    pub redact: Vec<String>,
    /// Most events waiting to be written; beyond it calls are refused (never audited late).
    pub max_queue: usize,
    /// Key file for the arguments' HMAC (32 random bytes, created on first use, owner-only):
    /// the log then cannot be used to confirm guesses of redacted values. Keep it apart from the
    /// log; `audit verify` does not need it.
    pub hash_key_file: std::path::PathBuf,
}

/// `[audit] sink`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    /// No audit trail.
    Off,
    /// SQLite file.
    Sqlite,
    /// PostgreSQL table `audit_log`.
    Postgres,
    /// JSON lines.
    Jsonl,
}

/// `[audit] durability`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditDurability {
    /// Results wait for their record.
    Durable,
    /// Results do not wait.
    Async,
}

impl Default for AuditSection {
    fn default() -> Self {
        let d = portcullis_audit::AuditOptions::default();
        Self {
            sink: AuditSink::Sqlite,
            path: ".portcullis/audit.db".into(),
            postgres_url: None,
            postgres_url_env: None,
            postgres_table: "audit_log".into(),
            durability: AuditDurability::Durable,
            redact: d.redact,
            max_queue: d.max_queue,
            hash_key_file: ".portcullis/audit-hash.key".into(),
        }
    }
}

impl AuditSection {
    /// Opens the configured store (`None` when `sink = "off"`).
    pub fn open_store(&self) -> Result<Option<(portcullis_audit::Store, String)>, ConfigError> {
        use portcullis_audit::{JsonlStore, PostgresStore, SqliteStore, Store};
        let bad = |e: portcullis_audit::StoreError| ConfigError::Invalid(format!("audit: {e}"));
        Ok(Some(match self.sink {
            AuditSink::Off => return Ok(None),
            AuditSink::Sqlite => {
                (Store::Sqlite(SqliteStore::open(&self.path).map_err(bad)?), self.path.display().to_string())
            }
            AuditSink::Jsonl => {
                (Store::Jsonl(JsonlStore::open(&self.path).map_err(bad)?), self.path.display().to_string())
            }
            AuditSink::Postgres => {
                // Both or neither: one message for either mistake.
                let url = if self.postgres_url.is_some() != self.postgres_url_env.is_some() {
                    url_or_env(
                        "audit.postgres_url",
                        self.postgres_url.as_deref(),
                        self.postgres_url_env.as_deref(),
                        "name an environment variable in audit.postgres_url_env",
                    )?
                } else {
                    None
                };
                let Some(url) = url else {
                    return Err(ConfigError::Invalid(
                        "audit.sink = \"postgres\" needs exactly one of audit.postgres_url, audit.postgres_url_env"
                            .into(),
                    ));
                };
                let place = portcullis_audit::store::postgres_place(&url);
                (
                    Store::Postgres(Box::new(PostgresStore::connect(&url, &self.postgres_table, &place).map_err(bad)?)),
                    place,
                )
            }
        }))
    }

    /// Starts the audit log (its writer thread) on the configured store.
    pub fn start(&self) -> Result<Option<Arc<portcullis_audit::AuditLog>>, ConfigError> {
        let Some((store, place)) = self.open_store()? else { return Ok(None) };
        let opts = portcullis_audit::AuditOptions {
            durability: match self.durability {
                AuditDurability::Durable => portcullis_audit::Durability::Durable,
                AuditDurability::Async => portcullis_audit::Durability::Async,
            },
            redact: self.redact.clone(),
            max_queue: self.max_queue.max(1),
            hash_key: Some(secret_file(&self.hash_key_file).map_err(|e| {
                ConfigError::Invalid(format!("audit.hash_key_file {}: {e}", self.hash_key_file.display()))
            })?),
            ..portcullis_audit::AuditOptions::default()
        };
        portcullis_audit::AuditLog::start(store, opts, place)
            .map(|l| Some(Arc::new(l)))
            .map_err(|e| ConfigError::Invalid(format!("audit: {e}")))
    }
}

/// `[policy]`: roles, tenants and required scopes, compiled into the engine's `Policy`.
/// Deny by default; ignored (everything allowed) when `auth.mode = "off"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySection {
    /// `[[policy.roles]]`: what each role may reach; the role `*` applies to everyone.
    /// Default: one role `*` allowing everything.
    pub roles: Vec<PolicyTargets>,
    /// `[[policy.tenants]]`: targets only that tenant's principals see.
    pub tenants: Vec<PolicyTargets>,
    /// Tool name pattern → scopes a token needs to call it (all of them; every matching pattern
    /// counts). Default: `"*" = ["mcp:tools"]`.
    pub tool_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// Resource URI pattern → scopes needed to read it.
    pub resource_scopes: std::collections::BTreeMap<String, Vec<String>>,
    /// Prompt name pattern → scopes needed to get it.
    pub prompt_scopes: std::collections::BTreeMap<String, Vec<String>>,
}

/// A role or tenant and the target patterns (`*` any run of characters, `?` one) it covers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyTargets {
    /// The role or tenant name as tokens carry it.
    pub name: String,
    /// Tool name patterns.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Resource URI (and URI template) patterns.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Prompt name patterns.
    #[serde(default)]
    pub prompts: Vec<String>,
}

/// The engine's form of a config section's `tools`, `resources` and `prompts` lists.
fn targets(tools: &[String], resources: &[String], prompts: &[String]) -> portcullis_engine::policy::Targets {
    portcullis_engine::policy::Targets {
        tools: tools.to_vec(),
        resources: resources.to_vec(),
        prompts: prompts.to_vec(),
    }
}

impl Default for PolicySection {
    fn default() -> Self {
        let all = vec!["*".to_owned()];
        Self {
            roles: vec![PolicyTargets { name: "*".into(), tools: all.clone(), resources: all.clone(), prompts: all }],
            tenants: Vec::new(),
            tool_scopes: [("*".to_owned(), vec!["mcp:tools".to_owned()])].into(),
            resource_scopes: Default::default(),
            prompt_scopes: Default::default(),
        }
    }
}

impl PolicySection {
    /// The engine's policy.
    pub fn compile(&self) -> portcullis_engine::Policy {
        use portcullis_engine::policy::{Kind, Role, ScopeRule, Tenant};
        let roles = self
            .roles
            .iter()
            .map(|r| Role { name: r.name.clone(), targets: targets(&r.tools, &r.resources, &r.prompts) })
            .collect();
        let tenants = self
            .tenants
            .iter()
            .map(|t| Tenant { name: t.name.clone(), targets: targets(&t.tools, &t.resources, &t.prompts) })
            .collect();
        let mut scopes = Vec::new();
        for (kind, map) in [
            (Kind::Tool, &self.tool_scopes),
            (Kind::Resource, &self.resource_scopes),
            (Kind::Prompt, &self.prompt_scopes),
        ] {
            for (pattern, needed) in map {
                scopes.push(ScopeRule { kind, pattern: pattern.clone(), scopes: needed.clone() });
            }
        }
        portcullis_engine::Policy::new(roles, tenants, scopes)
    }
}

/// `[auth]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `dev` (default: local use with the built-in dev authorization server), `jwt` (your
    /// identity provider) or `off` (no authentication, loopback only).
    pub mode: AuthMode,
    /// The canonical URL of the MCP endpoint: PRM `resource` and the audience tokens must name
    /// (default `http://<listen><path>`).
    pub resource: Option<String>,
    /// Authorization servers advertised in PRM (default: the issuers).
    pub authorization_servers: Option<Vec<String>>,
    /// Scopes advertised in PRM and requested in 401 challenges.
    pub scopes_supported: Vec<String>,
    /// How long a verified token is trusted without re-verification (never past its `exp`).
    #[serde(deserialize_with = "duration")]
    pub cache_ttl: Duration,
    /// Most verified tokens cached.
    pub cache_entries: usize,
    /// Trusted token issuers (`[[auth.issuers]]`).
    pub issuers: Vec<IssuerSection>,
    /// Service-account API keys (`[[auth.api_keys]]`), stored as SHA-256 hashes only.
    pub api_keys: Vec<ApiKeySection>,
    /// RFC 7662 introspection for opaque access tokens (`[auth.introspection]`).
    pub introspection: Option<IntrospectionSection>,
    /// SQLite file of revoked token ids, subjects and clients (`portcullis token revoke` writes it).
    pub revocation_db: std::path::PathBuf,
    /// Keep revocations in Redis instead, shared by every replica: the URL, without a password
    /// (`redis://host:6379/0`). A URL with a password goes in `revocation_redis_env`.
    pub revocation_redis: Option<String>,
    /// Environment variable holding the Redis URL (may include a password).
    pub revocation_redis_env: Option<String>,
    /// The Redis hash holding revocations (default `portcullis:revocations`).
    pub revocation_redis_key: String,
    /// Scope a token needs for the admin API (`POST /admin/revocations`).
    pub admin_scope: String,
    /// `mode = "dev"`: the dev issuer's signing key, created on first use (owner-only file).
    pub dev_key: std::path::PathBuf,
    /// `mode = "dev"`: the dev issuer's `iss` (default `http://<listen>`).
    pub dev_issuer: Option<String>,
    /// `mode = "dev"`: the subject the dev authorization server approves every login as.
    pub dev_user: String,
    /// `mode = "dev"`: lifetime of access tokens from the dev authorization server.
    #[serde(deserialize_with = "duration")]
    pub dev_token_ttl: Duration,
}

/// `[auth.introspection]`: where opaque tokens are checked, and Portcullis's client credentials
/// there. The secret comes from the environment or a file, never inline.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntrospectionSection {
    /// The introspection endpoint URL.
    pub endpoint: String,
    /// Portcullis's client id at the authorization server.
    pub client_id: String,
    /// Environment variable holding the client secret.
    pub client_secret_env: Option<String>,
    /// File holding the client secret; a trailing newline is ignored.
    pub client_secret_file: Option<std::path::PathBuf>,
    /// Accepted `aud` values (default: the resource URL).
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Claim holding the tenant.
    pub tenant_claim: Option<String>,
    /// Claims holding roles (default `["roles"]`).
    #[serde(default = "default_role_claims")]
    pub role_claims: Vec<String>,
    /// Claims holding scopes (default `["scope", "scp"]`).
    #[serde(default = "default_scope_claims")]
    pub scope_claims: Vec<String>,
}

/// `[[auth.api_keys]]`: one service account. `portcullis api-key` prints a new key and its hash.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeySection {
    /// The service account's name; it becomes the principal's subject and client id.
    pub name: String,
    /// Hex SHA-256 of the key. The key itself never appears in configuration.
    pub sha256: String,
    /// Scopes granted to the key.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Roles granted to the key.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Tenant of the service account.
    pub tenant: Option<String>,
}

/// Authentication mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// No authentication: every caller is anonymous. Only for loopback.
    Off,
    /// Bearer JWTs from the configured issuers.
    Jwt,
    /// Like `jwt`, plus the built-in dev authorization server and tokens from the local dev
    /// issuer that `portcullis token` mints. Development only: loopback addresses only.
    Dev,
}

/// `[[auth.issuers]]`: one trusted issuer. Exactly one key source: `jwks_url`,
/// `public_key_files`, `secret_env` or `secret_file` (secrets never inline).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSection {
    /// The exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values (default: the resource URL). Add e.g. a trailing-slash variant here.
    #[serde(default)]
    pub audiences: Vec<String>,
    /// Allowed `alg` values, e.g. `["RS256"]`; `none` is never accepted.
    pub algorithms: Vec<String>,
    /// JWKS URL.
    pub jwks_url: Option<String>,
    /// PEM public key files (RSA, EC or Ed25519).
    #[serde(default)]
    pub public_key_files: Vec<std::path::PathBuf>,
    /// Environment variable holding the HMAC secret (HS*).
    pub secret_env: Option<String>,
    /// File holding the HMAC secret (HS*); a trailing newline is ignored.
    pub secret_file: Option<std::path::PathBuf>,
    /// Clock skew allowed on `exp`/`nbf` (default `30s`).
    #[serde(default = "default_leeway", deserialize_with = "duration")]
    pub leeway: Duration,
    /// JWKS cache cap (default `10m`; shorter when the server's Cache-Control says so).
    #[serde(default = "default_jwks_max_age", deserialize_with = "duration")]
    pub jwks_max_age: Duration,
    /// At most one JWKS fetch per this interval, unknown `kid`s included (default `30s`).
    #[serde(default = "default_jwks_min_refetch", deserialize_with = "duration")]
    pub jwks_min_refetch: Duration,
    /// Claim holding the tenant (e.g. `tid`).
    pub tenant_claim: Option<String>,
    /// Claims holding roles (default `["roles"]`; Keycloak: `realm_access.roles`).
    #[serde(default = "default_role_claims")]
    pub role_claims: Vec<String>,
    /// Claims holding scopes (default `["scope", "scp"]`).
    #[serde(default = "default_scope_claims")]
    pub scope_claims: Vec<String>,
}

fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_jwks_max_age() -> Duration {
    Duration::from_secs(600)
}
fn default_jwks_min_refetch() -> Duration {
    Duration::from_secs(30)
}
fn default_role_claims() -> Vec<String> {
    vec!["roles".into()]
}
fn default_scope_claims() -> Vec<String> {
    vec!["scope".into(), "scp".into()]
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            mode: AuthMode::Dev,
            resource: None,
            authorization_servers: None,
            scopes_supported: vec!["mcp:tools".into()],
            cache_ttl: Duration::from_secs(300),
            cache_entries: 10_000,
            issuers: Vec::new(),
            api_keys: Vec::new(),
            introspection: None,
            revocation_db: ".portcullis/revocations.db".into(),
            revocation_redis: None,
            revocation_redis_env: None,
            revocation_redis_key: "portcullis:revocations".into(),
            admin_scope: "portcullis:admin".into(),
            dev_key: ".portcullis/dev-signing-key.p8".into(),
            dev_issuer: None,
            dev_user: "dev".into(),
            dev_token_ttl: Duration::from_secs(3600),
        }
    }
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
    /// Most messages in one JSON-RPC batch (2025-03-26 sessions only; default 100). A larger
    /// batch is refused whole with -32600.
    pub max_batch_items: usize,
    /// Most connections open at once (default 10000); past it a connection gets an immediate
    /// 503 and is closed.
    pub max_connections: usize,
    /// How long a connection may take to send a complete request head, from when it starts
    /// waiting for one; also the keep-alive idle timeout (default `10s`).
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// How long a request body may take to arrive (default `30s`; 408 past it).
    #[serde(deserialize_with = "duration")]
    pub body_read_timeout: Duration,
    /// Host names accepted in `Host` (DNS-rebinding protection). Default: the loopback names
    /// when listening on loopback, otherwise any host.
    pub allowed_hosts: Option<Vec<String>>,
    /// Origins accepted in `Origin`: full origins (`https://app.example.com`) or host names.
    /// Default: the loopback names when listening on loopback, otherwise any origin.
    pub allowed_origins: Option<Vec<String>>,
    /// Answer CORS for the allowed origins, so browser-based clients can read responses
    /// (default `true`; without credentials mode).
    pub cors: bool,
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
    /// Most concurrent sessions of one authenticated principal (default 1000); beyond it `initialize`
    /// gets 429. Anonymous sessions (authentication off) are not counted per principal.
    pub max_per_principal: usize,
    /// Interval of SSE keep-alive comments (default `15s`).
    #[serde(deserialize_with = "duration")]
    pub sse_keepalive: Duration,
    /// The SSE `retry:` hint (default `1s`).
    #[serde(deserialize_with = "duration")]
    pub sse_retry: Duration,
    /// Events kept per SSE stream for resumption (default 256).
    pub sse_buffer_events: usize,
    /// Answers a 2024-11-05 HTTP+SSE session may have in flight or unread on its stream
    /// (default 128); past it a POST gets 429 until the client reads its stream.
    pub legacy_in_flight: usize,
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
    /// Also register the seed S001 team tools (`get_jira_issue`, `create_jira_issue`,
    /// `trigger_pipeline`, `query_database`) with canned answers (default false).
    pub team: bool,
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
    /// The team demo tools on or off.
    pub demo_team: bool,
    /// The revocation list, when authentication is on.
    pub revocations: Option<Arc<Revocations>>,
    /// Who may see and use what (allow-all when authentication is off).
    pub policy: portcullis_engine::Policy,
    /// The audit trail settings (started by the server, not by resolving).
    pub audit: AuditSection,
    /// Rate limits (`None` without rules).
    pub limiter: Option<Arc<portcullis_limits::Limiter>>,
    /// Metrics (`None` when disabled).
    pub metrics: Option<MetricsSettings>,
    /// Guards around every call.
    pub guards: portcullis_engine::Guards,
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
            max_batch_items: 100,
            max_connections: portcullis_transport::ConnOptions::default().max_connections,
            header_read_timeout: portcullis_transport::ConnOptions::default().header_read_timeout,
            body_read_timeout: Duration::from_secs(30),
            allowed_hosts: None,
            allowed_origins: None,
            cors: true,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for SessionsSection {
    fn default() -> Self {
        Self {
            idle_ttl: Duration::from_secs(30 * 60),
            max: 10_000,
            max_per_principal: 1000,
            sse_keepalive: Duration::from_secs(15),
            sse_retry: Duration::from_secs(1),
            sse_buffer_events: 256,
            legacy_in_flight: 128,
            client_request_timeout: Duration::from_secs(120),
            page_size: 100,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

impl Default for DemoSection {
    fn default() -> Self {
        Self { enabled: true, team: false }
    }
}

// === impl RawConfig / Config ===

impl RawConfig {
    /// Parses TOML text; `path` is only used in messages.
    ///
    /// Errors name the line, column and key but never quote the offending line: it may hold a
    /// secret someone pasted inline.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: located(text, &e) })
    }

    /// Reads and parses a file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::parse(&text, &shown)
    }
}

impl Config {
    /// Validates and resolves `raw`.
    pub fn resolve(raw: RawConfig) -> Result<Self, ConfigError> {
        let s = raw.server;
        let paths =
            [("server.path", &s.path), ("server.sse_path", &s.sse_path), ("server.message_path", &s.message_path)];
        for (key, p) in paths {
            if !p.starts_with('/') || p.len() < 2 {
                return Err(ConfigError::Invalid(format!("{key} must be an absolute path like \"/mcp\", got {p:?}")));
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
            ("server.max_batch_items", s.max_batch_items),
            ("server.max_connections", s.max_connections),
            ("sessions.max", raw.sessions.max),
            ("sessions.max_per_principal", raw.sessions.max_per_principal),
            ("sessions.sse_buffer_events", raw.sessions.sse_buffer_events),
            ("sessions.legacy_in_flight", raw.sessions.legacy_in_flight),
            ("sessions.page_size", raw.sessions.page_size),
        ];
        for (key, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid(format!("{key} must be greater than 0")));
            }
        }
        // Scopes end up in WWW-Authenticate headers: RFC 6749 §3.3 scope-token characters only.
        let scope_ok = |v: &str| {
            !v.is_empty() && v.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
        };
        let policy_scopes = [&raw.policy.tool_scopes, &raw.policy.resource_scopes, &raw.policy.prompt_scopes];
        let all_scopes = raw
            .auth
            .scopes_supported
            .iter()
            .chain(std::iter::once(&raw.auth.admin_scope))
            .chain(policy_scopes.iter().flat_map(|m| m.values().flatten()));
        for scope in all_scopes {
            if !scope_ok(scope) {
                return Err(ConfigError::Invalid(format!(
                    "scope {scope:?} is not a valid OAuth scope (visible ASCII without spaces, quotes or backslashes)"
                )));
            }
        }
        if raw.auth.dev_token_ttl > Duration::from_secs(7 * 24 * 3600) || raw.auth.dev_token_ttl.is_zero() {
            return Err(ConfigError::Invalid("auth.dev_token_ttl must be between 1s and 7 days".into()));
        }
        for (key, d) in [
            ("sessions.sse_keepalive", raw.sessions.sse_keepalive),
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid(format!("{key} must be greater than 0")));
            }
        }
        let loopback = OriginPolicy::loopback();
        let on_loopback = s.listen.ip().is_loopback();
        let origins = OriginPolicy {
            hosts: s.allowed_hosts.unwrap_or_else(|| if on_loopback { loopback.hosts.clone() } else { Vec::new() }),
            origins: s
                .allowed_origins
                .unwrap_or_else(|| if on_loopback { loopback.origins.clone() } else { Vec::new() }),
            direct_only: matches!(raw.auth.mode, AuthMode::Dev | AuthMode::Off),
        };
        let dev_issuer = raw.auth.dev_issuer.clone().unwrap_or_else(|| format!("http://{}", s.listen));
        if matches!(raw.auth.mode, AuthMode::Dev | AuthMode::Off) && s.listen.ip().is_loopback() {
            // A loopback bind is not enough: a proxy or tunnel could still bring the internet in.
            let mode = if raw.auth.mode == AuthMode::Dev { "dev" } else { "off" };
            if origins.hosts.is_empty() || !origins.hosts.iter().all(|h| is_loopback_host(h)) {
                return Err(ConfigError::Invalid(format!(
                    "auth.mode = \"{mode}\" accepts only loopback Host names in server.allowed_hosts (localhost, 127.0.0.1, [::1]); use mode = \"jwt\" to serve other names"
                )));
            }
            let urls = [("auth.dev_issuer", Some(&dev_issuer)), ("auth.resource", raw.auth.resource.as_ref())];
            for (key, url) in urls {
                if let Some(url) = url
                    && !url_host(url).is_some_and(is_loopback_host)
                {
                    return Err(ConfigError::Invalid(format!(
                        "{key} must be a loopback URL with auth.mode = \"{mode}\", got {url:?}; use mode = \"jwt\" for anything else"
                    )));
                }
            }
        }
        let resolved = resolve_auth(raw.auth, s.listen, &format!("http://{}{}", s.listen, s.path), &dev_issuer)?;
        // Without authentication every caller is the same anonymous principal: nothing to tell apart.
        let policy =
            if resolved.auth.is_some() { raw.policy.compile() } else { portcullis_engine::Policy::allow_all() };
        Ok(Self {
            listen: s.listen,
            http: HttpOptions {
                path: s.path,
                sse_path: s.sse_path,
                message_path: s.message_path,
                max_body_bytes: s.max_body_bytes,
                max_json_depth: s.max_json_depth,
                max_batch_items: s.max_batch_items,
                body_read_timeout: s.body_read_timeout,
                conn: portcullis_transport::ConnOptions {
                    max_connections: s.max_connections,
                    header_read_timeout: s.header_read_timeout,
                },
                origins,
                cors: s.cors,
                session_idle_ttl: raw.sessions.idle_ttl,
                max_sessions: raw.sessions.max,
                max_sessions_per_principal: raw.sessions.max_per_principal,
                legacy_in_flight: raw.sessions.legacy_in_flight,
                keepalive: raw.sessions.sse_keepalive,
                sse_retry: raw.sessions.sse_retry,
                sse_buffer_events: raw.sessions.sse_buffer_events,
                auth: resolved.auth,
                extra_routes: resolved.routes,
            },
            shutdown_grace: s.shutdown_grace,
            page_size: raw.sessions.page_size,
            client_request_timeout: raw.sessions.client_request_timeout,
            log: raw.log,
            demo: raw.demo.enabled,
            demo_team: raw.demo.team,
            policy,
            audit: raw.audit,
            limiter: raw.limits.build()?,
            metrics: resolve_metrics(&raw.metrics, s.listen)?,
            guards: raw.guards.build()?,
            revocations: resolved.revocations,
        })
    }

    /// The embedded default (`portcullis serve` with no file): dev authentication, whose key and
    /// revocation files are created under `.portcullis/` in the working directory.
    pub fn embedded() -> Result<Self, ConfigError> {
        Self::resolve(RawConfig::default())
    }
}

impl RawConfig {
    /// The embedded default with authentication off: for examples and tests on loopback.
    pub fn unauthenticated() -> Self {
        let mut raw = Self::default();
        raw.auth.mode = AuthMode::Off;
        raw
    }

    /// Listens on `listen` (the command line's `--listen`); everything derived from the address
    /// (Host/Origin defaults, resource URL, dev issuer) follows it.
    #[must_use]
    pub fn listening_on(mut self, listen: SocketAddr) -> Self {
        self.server.listen = listen;
        self
    }
}

fn resolve_metrics(m: &MetricsSection, listen: SocketAddr) -> Result<Option<MetricsSettings>, ConfigError> {
    if !m.enabled {
        return Ok(None);
    }
    if !m.path.starts_with('/') {
        return Err(ConfigError::Invalid(format!("metrics.path must start with /, got {:?}", m.path)));
    }
    let token =
        match &m.token_env {
            None => None,
            Some(var) => Some(std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!("metrics.token_env: environment variable {var} is not set"))
            })?),
        };
    if token.is_none() && !listen.ip().is_loopback() {
        return Err(ConfigError::Invalid(
            "metrics on a non-loopback address need a scrape token: set metrics.token_env, or metrics.enabled = false"
                .into(),
        ));
    }
    Ok(Some(MetricsSettings { path: m.path.clone(), token }))
}

/// 32 random bytes kept in `path` (created owner-only on first use, concurrent first uses agree).
fn secret_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    match std::fs::read(path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => return Err(std::io::Error::other("shorter than 32 bytes")),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        Err(_) => {}
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => {
            f.write_all(&key)?;
            f.sync_all()?;
            Ok(key.to_vec())
        }
        // Another process created it first: use theirs once it is complete.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::thread::sleep(std::time::Duration::from_millis(50));
            std::fs::read(path)
        }
        Err(e) => Err(e),
    }
}

/// Keys and token verdicts must come over TLS: `https://`, or `http://` to a loopback host only.
fn secure_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let loopback_http = url.starts_with("http://") && url_host(url).is_some_and(is_loopback_host);
    if url.starts_with("https://") || loopback_http {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} must be an https:// URL (http:// only to a loopback host), got {url:?}"
        )))
    }
}

/// `localhost`, `127.x.y.z` or `[::1]`.
fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The host of an `http(s)://host[:port]/…` URL.
fn url_host(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if authority.starts_with('[') {
        return authority.find(']').map(|i| &authority[..=i]);
    }
    Some(authority.rsplit_once(':').map_or(authority, |(h, _)| h))
}

/// What the `[auth]` section resolves to.
struct ResolvedAuth {
    auth: Option<HttpAuth>,
    routes: Vec<ExtraRoutes>,
    revocations: Option<Arc<Revocations>>,
}

/// Builds the resource-server settings: keys loaded, secrets read from the environment or files;
/// in dev mode also the dev authorization server.
fn resolve_auth(
    a: AuthSection,
    listen: SocketAddr,
    default_resource: &str,
    dev_issuer: &str,
) -> Result<ResolvedAuth, ConfigError> {
    use portcullis_auth::{Authenticator, ClaimMapping, Issuer, IssuerKeys, Jwks, JwksOptions};
    if a.mode == AuthMode::Off {
        if !a.issuers.is_empty() || !a.api_keys.is_empty() || a.introspection.is_some() {
            return Err(ConfigError::Invalid(
                "auth.issuers or auth.api_keys is set but auth.mode is \"off\"; set mode = \"jwt\"".into(),
            ));
        }
        if !listen.ip().is_loopback() {
            return Err(ConfigError::Invalid(format!(
                "auth.mode = \"off\" serves every caller as anonymous and is allowed only on a loopback address, not {listen}; use mode = \"jwt\""
            )));
        }
        return Ok(ResolvedAuth { auth: None, routes: Vec::new(), revocations: None });
    }
    if a.mode == AuthMode::Dev && !listen.ip().is_loopback() {
        return Err(ConfigError::Invalid(format!(
            "auth.mode = \"dev\" approves every login automatically and is allowed only on a loopback address, not {listen}; use mode = \"jwt\" with your identity provider"
        )));
    }
    if a.mode == AuthMode::Jwt && a.issuers.is_empty() && a.api_keys.is_empty() && a.introspection.is_none() {
        return Err(ConfigError::Invalid(
            "auth.mode = \"jwt\" needs [[auth.issuers]], [[auth.api_keys]] or [auth.introspection]".into(),
        ));
    }
    let mut api_keys = Vec::new();
    for (i, k) in a.api_keys.iter().enumerate() {
        let principal = portcullis_engine::Principal {
            issuer: None,
            tenant: k.tenant.clone(),
            subject: k.name.clone(),
            client_id: Some(k.name.clone()),
            scopes: k.scopes.clone(),
            roles: k.roles.clone(),
            token_id: None,
            expires_at: None,
            method: portcullis_engine::AuthMethod::ApiKey,
        };
        api_keys.push(
            portcullis_auth::ApiKey::new(&k.sha256, principal)
                .map_err(|e| ConfigError::Invalid(format!("auth.api_keys[{i}] ({}): {e}", k.name)))?,
        );
    }
    // Clients compare the metadata's `resource` with the URL they connect to; a wildcard address
    // can never be that URL, so the operator must say what it is.
    let wildcard = default_resource.starts_with("http://0.0.0.0") || default_resource.starts_with("http://[::]");
    let resource = match a.resource.clone() {
        Some(r) => r,
        None if wildcard => {
            return Err(ConfigError::Invalid(
                "auth.resource is required when listening on a wildcard address: set it to the URL clients use, e.g. \"https://mcp.example.com/mcp\"".into(),
            ));
        }
        None => default_resource.to_owned(),
    };
    if !(resource.starts_with("http://") || resource.starts_with("https://")) || resource.contains('#') {
        return Err(ConfigError::Invalid(format!(
            "auth.resource must be an absolute http(s) URL without a fragment, got {resource:?}"
        )));
    }
    let client = portcullis_auth::http_client()
        .map_err(|e| ConfigError::Invalid(format!("cannot build the HTTP client for JWKS: {e}")))?;
    let mut issuers = Vec::new();
    for (i, is) in a.issuers.iter().enumerate() {
        let at = format!("auth.issuers[{i}] ({})", is.issuer);
        let mut algorithms = Vec::new();
        for name in &is.algorithms {
            if name.eq_ignore_ascii_case("none") {
                return Err(ConfigError::Invalid(format!("{at}: algorithm \"none\" is never accepted")));
            }
            algorithms.push(name.parse::<jsonwebtoken::Algorithm>().map_err(|_| {
                ConfigError::Invalid(format!(
                    "{at}: unknown algorithm {name:?}; use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA"
                ))
            })?);
        }
        let sources = usize::from(is.jwks_url.is_some())
            + usize::from(!is.public_key_files.is_empty())
            + usize::from(is.secret_env.is_some())
            + usize::from(is.secret_file.is_some());
        if sources != 1 {
            return Err(ConfigError::Invalid(format!(
                "{at}: set exactly one of jwks_url, public_key_files, secret_env, secret_file"
            )));
        }
        let keys = if let Some(url) = &is.jwks_url {
            secure_url(&format!("{at}: jwks_url"), url)?;
            let opts = JwksOptions {
                max_age: is.jwks_max_age,
                min_refetch: is.jwks_min_refetch,
                timeout: Duration::from_secs(5),
            };
            IssuerKeys::Jwks(std::sync::Arc::new(Jwks::new(url.clone(), client.clone(), opts)))
        } else if let Some(var) = &is.secret_env {
            let secret = std::env::var(var).map_err(|_| {
                ConfigError::Invalid(format!("{at}: environment variable {var} (secret_env) is not set"))
            })?;
            IssuerKeys::Secret(secret_key(secret.as_bytes(), &at)?)
        } else if let Some(file) = &is.secret_file {
            let secret = std::fs::read(file)
                .map_err(|e| ConfigError::Invalid(format!("{at}: cannot read secret_file {}: {e}", file.display())))?;
            let trimmed = secret.strip_suffix(b"\n").unwrap_or(&secret);
            IssuerKeys::Secret(secret_key(trimmed, &at)?)
        } else {
            let mut keys = Vec::new();
            for f in &is.public_key_files {
                let pem = std::fs::read(f)
                    .map_err(|e| ConfigError::Invalid(format!("{at}: cannot read {}: {e}", f.display())))?;
                let key = jsonwebtoken::DecodingKey::from_rsa_pem(&pem)
                    .or_else(|_| jsonwebtoken::DecodingKey::from_ec_pem(&pem))
                    .or_else(|_| jsonwebtoken::DecodingKey::from_ed_pem(&pem))
                    .map_err(|_| {
                        ConfigError::Invalid(format!(
                            "{at}: {} is not an RSA, EC or Ed25519 public key in PEM",
                            f.display()
                        ))
                    })?;
                keys.push(key);
            }
            IssuerKeys::Pem(keys)
        };
        let audiences = if is.audiences.is_empty() { vec![resource.clone()] } else { is.audiences.clone() };
        let claims = ClaimMapping {
            tenant: is.tenant_claim.clone(),
            roles: is.role_claims.clone(),
            scopes: is.scope_claims.clone(),
        };
        issuers.push(
            Issuer::new(is.issuer.clone(), audiences, algorithms, is.leeway, keys, claims)
                .map_err(|e| ConfigError::Invalid(format!("{at}: {e}")))?,
        );
    }
    let revocations = Arc::new(revocation_store(&a)?);
    let mut routes = Vec::new();
    if a.mode == AuthMode::Dev {
        let key = portcullis_auth::DevKey::load_or_create(&a.dev_key)
            .map_err(|e| ConfigError::Invalid(format!("auth.dev_key: {e}")))?;
        let key = Arc::new(key);
        let mut opts = portcullis_authserver::DevServerOptions::new(
            dev_issuer.to_owned(),
            resource.clone(),
            a.scopes_supported.clone(),
        );
        opts.user = a.dev_user.clone();
        opts.access_ttl = a.dev_token_ttl;
        let server = portcullis_authserver::DevAuthServer::new(key.clone(), opts, Some(revocations.clone()))
            .map_err(|e| ConfigError::Invalid(format!("auth.dev_issuer: {e}")))?;
        routes.push(ExtraRoutes { name: "dev authorization server", router: server.router() });
        let decoding = key.decoding_key().map_err(|e| ConfigError::Invalid(format!("auth.dev_key: {e}")))?;
        issuers.push(
            Issuer::new(
                dev_issuer.to_owned(),
                vec![resource.clone()],
                vec![jsonwebtoken::Algorithm::ES256],
                Duration::from_secs(30),
                IssuerKeys::Pem(vec![decoding]),
                // `portcullis token --claims '{"tenant": "acme", "roles": ["viewer"]}'` sets both.
                ClaimMapping { tenant: Some("tenant".into()), ..ClaimMapping::default() },
            )
            .map_err(|e| ConfigError::Invalid(format!("dev issuer: {e}")))?,
        );
    }
    let mut authenticator = Authenticator::new(issuers, a.cache_ttl, a.cache_entries)
        .with_api_keys(api_keys)
        .with_revocations(revocations.clone());
    if let Some(is) = &a.introspection {
        let at = "auth.introspection";
        secure_url(&format!("{at}: endpoint"), &is.endpoint)?;
        let secret = match (&is.client_secret_env, &is.client_secret_file) {
            (Some(var), None) => std::env::var(var)
                .map_err(|_| ConfigError::Invalid(format!("{at}: environment variable {var} is not set")))?,
            (None, Some(file)) => std::fs::read_to_string(file)
                .map_err(|e| ConfigError::Invalid(format!("{at}: cannot read {}: {e}", file.display())))?
                .trim_end_matches(['\n', '\r'])
                .to_owned(),
            _ => {
                return Err(ConfigError::Invalid(format!(
                    "{at}: set exactly one of client_secret_env, client_secret_file"
                )));
            }
        };
        let audiences = if is.audiences.is_empty() { vec![resource.clone()] } else { is.audiences.clone() };
        let claims = ClaimMapping {
            tenant: is.tenant_claim.clone(),
            roles: is.role_claims.clone(),
            scopes: is.scope_claims.clone(),
        };
        authenticator = authenticator.with_introspection(portcullis_auth::Introspection::new(
            is.endpoint.clone(),
            is.client_id.clone(),
            secret,
            audiences,
            claims,
            client.clone(),
        ));
    }
    let authorization_servers = a.authorization_servers.unwrap_or_else(|| {
        let mut list: Vec<String> = a.issuers.iter().map(|i| i.issuer.clone()).collect();
        if a.mode == AuthMode::Dev {
            list.push(dev_issuer.to_owned());
        }
        list
    });
    let verifier: Arc<dyn portcullis_engine::TokenVerifier> = Arc::new(authenticator);
    routes.push(ExtraRoutes {
        name: "admin API",
        router: crate::admin::router(verifier.clone(), revocations.clone(), a.admin_scope.clone()),
    });
    Ok(ResolvedAuth {
        auth: Some(HttpAuth { verifier, resource, authorization_servers, scopes_supported: a.scopes_supported }),
        routes,
        revocations: Some(revocations),
    })
}

/// What `portcullis token` needs to mint a dev token that `serve` with the same file accepts.
pub struct DevMint {
    /// The `iss` to put in tokens.
    pub issuer: String,
    /// The default audience: the resource URL.
    pub resource: String,
    /// The signing key file.
    pub key: std::path::PathBuf,
}

impl RawConfig {
    /// The dev issuer, resource and key file this configuration implies.
    pub fn dev_mint(&self) -> DevMint {
        let s = &self.server;
        DevMint {
            issuer: self.auth.dev_issuer.clone().unwrap_or_else(|| format!("http://{}", s.listen)),
            resource: self.auth.resource.clone().unwrap_or_else(|| format!("http://{}{}", s.listen, s.path)),
            key: self.auth.dev_key.clone(),
        }
    }
}

/// The revocation store `[auth]` names: Redis when `revocation_redis[_env]` is set, else the
/// SQLite file.
pub fn revocation_store(a: &AuthSection) -> Result<Revocations, ConfigError> {
    let Some(url) = url_or_env(
        "auth.revocation_redis",
        a.revocation_redis.as_deref(),
        a.revocation_redis_env.as_deref(),
        "put the whole URL in an environment variable named by auth.revocation_redis_env",
    )?
    else {
        return open_revocations(&a.revocation_db);
    };
    Revocations::redis(&url, &a.revocation_redis_key)
        .map_err(|e| ConfigError::Invalid(format!("auth.revocation_redis: {e}")))
}

/// Opens the revocation database, creating its directory.
pub fn open_revocations(path: &std::path::Path) -> Result<Revocations, ConfigError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| ConfigError::Invalid(format!("auth.revocation_db: cannot create {}: {e}", dir.display())))?;
    }
    portcullis_auth::Revocations::open(path).map_err(|e| ConfigError::Invalid(format!("auth.revocation_db: {e}")))
}

/// A URL written in the file under `key`, or read from the environment variable named under
/// `{key}_env`; `None` when neither is set, an error when both are.
///
/// A URL written inline with a password is refused — configuration files get copied, committed
/// and pasted into tickets: "`key` must not hold a password; `password_advice`".
fn url_or_env(
    key: &str,
    url: Option<&str>,
    env: Option<&str>,
    password_advice: &str,
) -> Result<Option<String>, ConfigError> {
    match (url, env) {
        (None, None) => Ok(None),
        (Some(url), None) if has_password(url) => {
            Err(ConfigError::Invalid(format!("{key} must not hold a password; {password_advice}")))
        }
        (Some(url), None) => Ok(Some(url.to_owned())),
        (None, Some(var)) => std::env::var(var)
            .map(Some)
            .map_err(|_| ConfigError::Invalid(format!("{key}_env: environment variable {var} is not set"))),
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!("set one of {key} and {key}_env, not both"))),
    }
}

/// True when `url` may carry a password: user info with a `:` before the first `@` (where the
/// PostgreSQL and Redis parsers end it, even past a `/`), or a `password`/`pass` parameter in a
/// query or a PostgreSQL key=value string (spaces around `=` and percent-encoding allowed). When
/// in doubt it says yes: the remedy, the environment variable, always works.
fn has_password(url: &str) -> bool {
    let in_userinfo = url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'));
    let decoded = url::form_urlencoded::parse(url.as_bytes())
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
        .to_ascii_lowercase();
    let squeezed: String = decoded.chars().filter(|c| !c.is_whitespace()).collect();
    in_userinfo || squeezed.contains("password=") || squeezed.contains("pass=")
}

fn secret_key(secret: &[u8], at: &str) -> Result<jsonwebtoken::DecodingKey, ConfigError> {
    // RFC 7518 §3.2: an HS256 key must be at least as long as the hash output.
    if secret.len() < 32 {
        return Err(ConfigError::Invalid(format!("{at}: the HMAC secret must be at least 32 bytes")));
    }
    Ok(jsonwebtoken::DecodingKey::from_secret(secret))
}

/// "line L, column C, key `k`: message", from toml's error, without echoing the source.
fn located(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().trim();
    let Some(span) = e.span() else { return msg.to_owned() };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let key = text
        .lines()
        .nth(line - 1)
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !k.starts_with('['));
    match key {
        Some(k) => format!("line {line}, column {column}, key `{k}`: {msg}"),
        None => format!("line {line}, column {column}: {msg}"),
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
        serde::de::Error::custom(format!("invalid duration {s:?}: use a whole number with ms, s, m or h, like \"15s\""))
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

    /// A scratch directory for state files (keys, revocation databases).
    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("portcullis-cfg-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn empty_file_is_the_embedded_default() {
        let mut raw = RawConfig::parse("", "x").unwrap();
        assert_eq!(format!("{raw:?}"), format!("{:?}", RawConfig::default()));
        let dir = scratch("empty");
        raw.auth.dev_key = dir.join("key.p8");
        raw.auth.revocation_db = dir.join("rev.db");
        let c = Config::resolve(raw).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.http.path, "/mcp");
        assert_eq!(c.http.max_body_bytes, 4 << 20);
        assert_eq!(c.http.origins.hosts, ["localhost", "127.0.0.1", "[::1]"]);
        assert!(c.demo);
        // Dev authentication: tokens required, the dev authorization server and admin API served.
        let auth = c.http.auth.unwrap();
        assert_eq!(auth.authorization_servers, ["http://127.0.0.1:8080"]);
        let routes: Vec<&str> = c.http.extra_routes.iter().map(|r| r.name).collect();
        assert_eq!(routes, ["dev authorization server", "admin API"]);
        assert!(dir.join("key.p8").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let e = err("[server]\nlisten = \"127.0.0.1:9\"\nlisten_port = 3\n");
        assert!(e.contains("line 3") && e.contains("listen_port") && e.contains("test.toml"), "{e}");
        let e = err("[sessions]\n\nidle_ttl = \"ten minutes\"\n");
        assert!(e.contains("line 3") && e.contains("invalid duration"), "{e}");
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
    fn public_listeners_default_to_any_host_and_need_real_authentication() {
        let dir = scratch("public");
        let auth = format!(
            "[metrics]\nenabled = false\n[auth]\nmode = \"jwt\"\nresource = \"https://mcp.example.com/mcp\"\nrevocation_db = {:?}\n[[auth.api_keys]]\nname = \"a\"\nsha256 = \"{}\"\n",
            dir.join("rev.db").display().to_string(),
            "0".repeat(64)
        );
        let c = Config::resolve(RawConfig::parse(&format!("[server]\nlisten = \"0.0.0.0:80\"\n{auth}"), "x").unwrap())
            .unwrap();
        assert!(c.http.origins.hosts.is_empty());
        let text = format!("[server]\nlisten = \"0.0.0.0:80\"\nallowed_hosts = [\"mcp.example.com\"]\n{auth}");
        let c = Config::resolve(RawConfig::parse(&text, "x").unwrap()).unwrap();
        assert_eq!(c.http.origins.hosts, ["mcp.example.com"]);
        // The dev authorization server and no authentication are loopback-only.
        assert!(err("[server]\nlisten = \"0.0.0.0:80\"\n").contains("only on a loopback address"));
        let public_metrics =
            format!("[server]\nlisten = \"0.0.0.0:80\"\n{}", auth.replace("[metrics]\nenabled = false\n", ""));
        assert!(err(&public_metrics).contains("need a scrape token"));
        assert!(
            err("[server]\nlisten = \"0.0.0.0:80\"\n[auth]\nmode = \"off\"\n").contains("only on a loopback address")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn auth_config_is_checked() {
        assert!(err("[auth]\nmode = \"jwt\"\n").contains("needs [[auth.issuers]]"));
        let base = "[auth]\nmode = \"jwt\"\n[[auth.issuers]]\nissuer = \"https://idp\"\n";
        assert!(
            err(&format!("{base}algorithms = [\"none\"]\njwks_url = \"https://idp/jwks\"\n"))
                .contains("never accepted")
        );
        assert!(err(&format!("{base}algorithms = [\"RS256\"]\n")).contains("exactly one"));
        assert!(
            err(&format!("{base}algorithms = [\"RS256\"]\njwks_url = \"http://idp.example.com/jwks\"\n"))
                .contains("must be an https:// URL")
        );
        assert!(
            err(&format!("{base}algorithms = [\"HS256\"]\njwks_url = \"https://idp/jwks\"\n"))
                .contains("shared secret")
        );
        assert!(
            err(&format!("{base}algorithms = [\"RS256\"]\nsecret_env = \"PORTCULLIS_TEST_UNSET_VAR\"\n"))
                .contains("is not set")
        );
        assert!(
            err(&format!("{base}algorithms = [\"RS256\"]\njwks_url = \"https://idp/jwks\"\nsecret = \"inline\"\n"))
                .contains("secret")
        );
        let db = std::env::temp_dir().join(format!("portcullis-cfg-rev-{}.db", std::process::id()));
        let ok = format!(
            "[auth]\nmode = \"jwt\"\nrevocation_db = {:?}\n[[auth.issuers]]\nissuer = \"https://idp\"\nalgorithms = [\"RS256\"]\njwks_url = \"https://idp/jwks\"\n",
            db.display().to_string()
        );
        let c = Config::resolve(RawConfig::parse(&ok, "x").unwrap()).unwrap();
        let auth = c.http.auth.unwrap();
        assert_eq!(auth.resource, "http://127.0.0.1:8080/mcp");
        assert_eq!(auth.metadata_url(), "http://127.0.0.1:8080/.well-known/oauth-protected-resource/mcp");
        assert_eq!(auth.authorization_servers, ["https://idp"]);
        let _ = std::fs::remove_file(&db);
    }

    #[test]
    fn a_wildcard_listener_needs_an_explicit_resource() {
        let hash = "0".repeat(64);
        let e = err(&format!(
            "[server]\nlisten = \"0.0.0.0:80\"\n[auth]\nmode = \"jwt\"\n[[auth.api_keys]]\nname = \"a\"\nsha256 = \"{hash}\"\n"
        ));
        assert!(e.contains("auth.resource is required"), "{e}");
    }

    #[test]
    fn errors_never_echo_the_offending_line() {
        let e = err("[auth]\nclient_secret = \"hunter2-very-secret\"\n");
        assert!(e.contains("line 2") && e.contains("client_secret"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn urls_come_inline_or_from_the_environment_never_with_an_inline_password() {
        let e = |r: Result<Option<String>, ConfigError>| r.expect_err("an error").to_string();
        let advice = "use k_env";
        assert_eq!(url_or_env("k", None, None, advice).ok(), Some(None));
        let plain = "redis://user@host:6379/0";
        assert_eq!(url_or_env("k", Some(plain), None, advice).ok(), Some(Some(plain.to_owned())));
        let secret = "redis://user:hunter2@host:6379/0";
        assert!(e(url_or_env("k", Some(secret), None, advice)).ends_with("k must not hold a password; use k_env"));
        for secret in [
            "postgres://audit@127.0.0.1:5432/db?password=hunter2",
            "host=127.0.0.1 user=audit password=hunter2",
            "redis://:hunter2@host:6379",
        ] {
            assert!(e(url_or_env("k", Some(secret), None, advice)).contains("must not hold a password"), "{secret}");
        }
        for secret in [
            "redis+unix:///run/redis.sock?pass=hunter2",
            "host=127.0.0.1 user=audit password = hunter2",
            "postgres://audit@127.0.0.1/db?pass%77ord=hunter2",
            "postgres://u:p/ss@h/db",
        ] {
            assert!(e(url_or_env("k", Some(secret), None, advice)).contains("must not hold a password"), "{secret}");
        }
        // A user without a password is fine.
        let user_only = "postgres://audit@127.0.0.1:5432/db";
        assert_eq!(url_or_env("k", Some(user_only), None, advice).ok(), Some(Some(user_only.to_owned())));
        let unset = e(url_or_env("k", None, Some("PORTCULLIS_TEST_UNSET_VAR"), advice));
        assert!(unset.ends_with("k_env: environment variable PORTCULLIS_TEST_UNSET_VAR is not set"), "{unset}");
        assert!(e(url_or_env("k", Some(plain), Some("V"), advice)).ends_with("set one of k and k_env, not both"));
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
    fn the_team_example_is_the_seed_scenario() {
        use portcullis_engine::{Decision, Kind, Principal};
        let raw = RawConfig::parse(include_str!("../examples/team.toml"), "examples/team.toml").unwrap();
        assert!(raw.demo.team && !raw.demo.enabled);
        let policy = raw.policy.compile();
        let who = |roles: &[&str], scopes: &str| Principal {
            roles: roles.iter().map(|r| r.to_string()).collect(),
            scopes: scopes.split(' ').map(str::to_owned).collect(),
            ..Principal::anonymous()
        };
        let viewer = who(&["viewer"], "mcp:tools jira.read db.read");
        assert!(matches!(policy.decide(&viewer, Kind::Tool, "get_jira_issue"), Decision::Allow { .. }));
        assert!(!policy.decide(&viewer, Kind::Tool, "trigger_pipeline").visible());
        let cicd = who(&["cicd"], "mcp:tools jira.read");
        let Decision::StepUp { scopes, rule } = policy.decide(&cicd, Kind::Tool, "trigger_pipeline") else {
            panic!("a cicd token without cicd.trigger must be asked to step up")
        };
        assert_eq!(
            (scopes, &*rule),
            (vec!["mcp:tools".to_owned(), "cicd.trigger".to_owned()], "scope:trigger_pipeline")
        );
    }

    #[test]
    fn docs_config_example_is_the_default() {
        let doc = include_str!("../docs/config.md");
        let start = doc.find("```toml\n").expect("docs/config.md has a toml block") + 8;
        let end = start + doc[start..].find("```").expect("the toml block ends");
        let from_docs = RawConfig::parse(&doc[start..end], "docs/config.md").unwrap();
        assert_eq!(format!("{from_docs:?}"), format!("{:?}", RawConfig::default()));
    }
}
