//! `portcullis`: the command line. Parses arguments, loads the configuration, sets up logging
//! (always on stderr: stdout belongs to the stdio transport) and runs the chosen transport.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use portcullis::config::{Config, LogFormat, RawConfig};
use portcullis_engine::Registry;
use portcullis_transport::StdioOptions;

/// An MCP server and gateway for teams.
#[derive(Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve MCP over Streamable HTTP and HTTP+SSE (default), or over stdio.
    Serve(ServeArgs),
    /// Check a configuration file and print the resolved settings.
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Generate a service-account API key: prints the key (give it to the service) and the
    /// `[[auth.api_keys]]` entry holding only its hash (put it in the config).
    ApiKey {
        /// The service account's name.
        #[arg(long)]
        name: String,
    },
    /// Mint a token from the local dev issuer (development only; the server must run with
    /// `[auth] mode = "dev"` and the same key file), or revoke tokens.
    Token(Box<TokenArgs>),
    /// Explain a policy decision: who may see and use which tool, resource or prompt, and why.
    Policy {
        #[command(subcommand)]
        action: PolicyCommand,
    },
    /// Inspect the audit trail: verify its hash chain, show the newest events, or search it.
    Audit {
        #[command(subcommand)]
        action: AuditCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Print the decision for one principal and target, and the rule that made it.
    Explain(ExplainArgs),
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["token_stdin", "sub"])))]
#[command(group(clap::ArgGroup::new("target").required(true).args(["tool", "resource", "prompt"])))]
struct ExplainArgs {
    /// Configuration file (default: the embedded default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Read a bearer token from stdin and verify it as the server would (it never goes on the
    /// command line).
    #[arg(long)]
    token_stdin: bool,
    /// Or describe the principal: its subject …
    #[arg(long)]
    sub: Option<String>,
    /// … its space-separated scopes …
    #[arg(long, default_value = "")]
    scope: String,
    /// … its roles (comma-separated) …
    #[arg(long, value_delimiter = ',')]
    roles: Vec<String>,
    /// … and its tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// The tool to call.
    #[arg(long)]
    tool: Option<String>,
    /// The resource URI to read.
    #[arg(long)]
    resource: Option<String>,
    /// The prompt to get.
    #[arg(long)]
    prompt: Option<String>,
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the whole hash chain; names the first bad sequence number (exit 1) if any.
    Verify {
        /// Configuration file naming [audit] (default: the embedded default).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Print the newest events, one JSON object per line.
    Tail {
        /// Configuration file naming [audit].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How many.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
    },
    /// Print matching events, oldest first, one JSON object per line.
    Query {
        /// Configuration file naming [audit].
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only this subject.
        #[arg(long)]
        subject: Option<String>,
        /// Only this tool (or prompt name, or resource URI).
        #[arg(long)]
        tool: Option<String>,
        /// Only events newer than this, e.g. 30m or 24h.
        #[arg(long)]
        since: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
struct TokenArgs {
    #[command(subcommand)]
    action: Option<TokenCommand>,
    #[command(flatten)]
    mint: MintArgs,
}

#[derive(clap::Args)]
struct MintArgs {
    /// Configuration file (default: the embedded default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// The listen address `serve` was given with `--listen` (the issuer and audience follow it).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Subject (`sub`).
    #[arg(long)]
    sub: Option<String>,
    /// Space-separated scopes.
    #[arg(long, default_value = "mcp:tools")]
    scope: String,
    /// Lifetime, e.g. 10m, 1h.
    #[arg(long, default_value = "1h")]
    ttl: String,
    /// Audience (default: the configured resource URL).
    #[arg(long)]
    aud: Option<String>,
    /// Extra claims as a JSON object; a null value removes that claim (to test how clients
    /// meet expired or mis-addressed tokens).
    #[arg(long, value_name = "JSON")]
    claims: Option<String>,
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Revoke by token id, subject or client id; a running server refuses it on its next request.
    Revoke {
        /// Configuration file naming auth.revocation_db (default: the embedded default's path).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// A token id (`jti`).
        #[arg(long, group = "what")]
        jti: Option<String>,
        /// A subject (`sub`): every token of that user.
        #[arg(long, group = "what")]
        sub: Option<String>,
        /// A client id: every token issued to that client.
        #[arg(long, group = "what")]
        client: Option<String>,
        /// Lift that revocation instead: accepted again from the next request.
        #[arg(long)]
        lift: bool,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// TOML configuration file (default: the embedded default).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address, overriding the file (e.g. 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Speak newline-delimited JSON-RPC on stdin/stdout instead of HTTP.
    #[arg(long)]
    stdio: bool,
    /// Log format, overriding the file.
    #[arg(long, value_enum)]
    log_format: Option<LogFormat>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::CheckConfig { file } => check_config(&file),
        Command::ApiKey { name } => api_key(&name),
        Command::Token(args) => match *args {
            TokenArgs { action: Some(TokenCommand::Revoke { config, jti, sub, client, lift }), .. } => {
                revoke(config.as_ref(), jti, sub, client, lift)
            }
            TokenArgs { action: None, mint } => mint_token(&mint),
        },
        Command::Audit { action } => audit(action),
        Command::Policy { action: PolicyCommand::Explain(args) } => explain(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The file (or the embedded default), with the command line's `--listen` applied.
fn load_raw(path: Option<&PathBuf>, listen: Option<SocketAddr>) -> anyhow::Result<RawConfig> {
    let raw = match path {
        Some(p) => RawConfig::load(p)?,
        None => RawConfig::default(),
    };
    Ok(match listen {
        Some(addr) => raw.listening_on(addr),
        None => raw,
    })
}

fn check_config(file: &PathBuf) -> anyhow::Result<()> {
    let config = Config::resolve(load_raw(Some(file), None)?)?;
    eprintln!("{} is valid", file.display());
    eprintln!("{config:#?}");
    Ok(())
}

fn revoke(
    config: Option<&PathBuf>,
    jti: Option<String>,
    sub: Option<String>,
    client: Option<String>,
    lift: bool,
) -> anyhow::Result<()> {
    use portcullis_auth::Revoke;
    let raw = load_raw(config, None)?;
    let what = match (jti, sub, client) {
        (Some(j), None, None) => Revoke::TokenId(j),
        (None, Some(s), None) => Revoke::Subject(s),
        (None, None, Some(c)) => Revoke::Client(c),
        _ => anyhow::bail!("give exactly one of --jti, --sub, --client"),
    };
    let store = portcullis::config::revocation_store(&raw.auth)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().context("starting the runtime")?;
    let place = match (&raw.auth.revocation_redis, &raw.auth.revocation_redis_env) {
        (None, None) => raw.auth.revocation_db.display().to_string(),
        _ => format!("Redis hash {}", raw.auth.revocation_redis_key),
    };
    if lift {
        if runtime.block_on(store.lift(&what))? {
            eprintln!("lifted the revocation of {what:?} in {place}");
        } else {
            anyhow::bail!("{what:?} is not revoked in {place}: nothing to lift");
        }
    } else {
        runtime.block_on(store.revoke(&what))?;
        eprintln!("revoked {what:?} in {place}");
    }
    Ok(())
}

fn mint_token(args: &MintArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    let sub = args.sub.as_deref().ok_or_else(|| anyhow::anyhow!("--sub is required (or use `token revoke`)"))?;
    let raw = load_raw(args.config.as_ref(), args.listen)?;
    let dev = raw.dev_mint();
    let ttl = portcullis::config::parse_duration(&args.ttl)
        .ok_or_else(|| anyhow::anyhow!("invalid --ttl {:?}: use e.g. 10m or 1h", args.ttl))?;
    let key = portcullis_auth::DevKey::load_or_create(&dev.key)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    let mut jti = [0u8; 16];
    getrandom::fill(&mut jti).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    let mut claims = serde_json::json!({
        "iss": dev.issuer,
        "sub": sub,
        "aud": args.aud.clone().unwrap_or(dev.resource),
        "iat": now,
        "exp": now + ttl.as_secs(),
        "jti": jti.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        "scope": args.scope,
        "client_id": "portcullis-cli",
    });
    if let Some(extra) = &args.claims {
        let extra: serde_json::Value =
            serde_json::from_str(extra).map_err(|e| anyhow::anyhow!("--claims is not JSON: {e}"))?;
        let serde_json::Value::Object(extra) = extra else { anyhow::bail!("--claims must be a JSON object") };
        for (k, v) in extra {
            match v {
                serde_json::Value::Null => {
                    claims.as_object_mut().map(|c| c.remove(&k));
                }
                v => claims[k] = v,
            }
        }
    }
    let token = key.sign(&claims)?;
    writeln!(std::io::stdout().lock(), "{token}")?;
    Ok(())
}

fn explain(args: &ExplainArgs) -> anyhow::Result<()> {
    use portcullis_engine::{Decision, Kind, Principal};
    let config = Config::resolve(load_raw(args.config.as_ref(), None)?)?;
    let principal = if args.token_stdin {
        let mut token = String::new();
        std::io::stdin().read_line(&mut token).context("reading the token from stdin")?;
        let auth =
            config.http.auth.as_ref().ok_or_else(|| anyhow::anyhow!("authentication is off in this configuration"))?;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        match runtime.block_on(auth.verifier.verify(token.trim())) {
            Ok(p) => p,
            Err(e) => anyhow::bail!("the token is not accepted: {e:?}"),
        }
    } else {
        Principal {
            subject: args.sub.clone().unwrap_or_default(),
            scopes: args.scope.split_ascii_whitespace().map(str::to_owned).collect(),
            roles: args.roles.clone(),
            tenant: args.tenant.clone(),
            ..Principal::anonymous()
        }
    };
    let (kind, method, target) = match (&args.tool, &args.resource, &args.prompt) {
        (Some(t), _, _) => (Kind::Tool, "tools/call", t),
        (_, Some(r), _) => (Kind::Resource, "resources/read", r),
        (_, _, Some(p)) => (Kind::Prompt, "prompts/get", p),
        _ => anyhow::bail!("name a --tool, --resource or --prompt"),
    };
    let none = || "-".to_owned();
    println!(
        "principal: sub={} tenant={} roles=[{}] scopes=[{}]",
        principal.subject,
        principal.tenant.clone().unwrap_or_else(none),
        principal.roles.join(","),
        principal.scopes.join(" ")
    );
    let decision = match kind {
        Kind::Resource => config.policy.decide_resource(&principal, target, None),
        _ => config.policy.decide(&principal, kind, target),
    };
    let verdict = match decision {
        Decision::Allow { rule } => format!("ALLOW (rule {rule})"),
        Decision::Hide { rule, reason } => {
            format!("HIDDEN (rule {rule}: {reason}); listed: no; calling it answers as unknown")
        }
        Decision::StepUp { rule, scopes } => {
            format!(
                "STEP-UP (rule {rule}): listed, but calling it needs a token with {}; HTTP 403 insufficient_scope",
                scopes.join(" ")
            )
        }
    };
    println!("{method} {target}: {verdict}");
    if config.policy.is_open() {
        println!("note: authentication is off, so the policy allows everything");
    }
    Ok(())
}

fn audit(action: AuditCommand) -> anyhow::Result<()> {
    use std::io::Write as _;
    let config = match &action {
        AuditCommand::Verify { config } | AuditCommand::Tail { config, .. } | AuditCommand::Query { config, .. } => {
            config.clone()
        }
    };
    let raw = load_raw(config.as_ref(), None)?;
    let file_sink =
        matches!(raw.audit.sink, portcullis::config::AuditSink::Sqlite | portcullis::config::AuditSink::Jsonl);
    if file_sink && !raw.audit.path.exists() {
        anyhow::bail!(
            "there is no audit log at {} (check [audit] path and the working directory)",
            raw.audit.path.display()
        );
    }
    let Some((mut store, place)) = raw.audit.open_store()? else {
        anyhow::bail!("auditing is off ([audit] sink = \"off\")")
    };
    // Durable calls whose records a crash kept from the store are in its journal: take them back
    // first, unless a running server holds the log (it did so when it started).
    if let portcullis_audit::Store::Sqlite(s) = &store {
        let db = s.path().to_owned();
        if store.lock_writer().is_ok() {
            let n = portcullis_audit::journal::replay(&db, &mut store)?;
            if n > 0 {
                eprintln!("took {n} records from the audit journal that the last run had not stored");
            }
        }
    }
    let print = |records: Vec<portcullis_audit::Record>| -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        for r in records {
            writeln!(out, "{{\"seq\":{},\"hash\":\"{}\",\"event\":{}}}", r.seq, r.hash, r.event)?;
        }
        Ok(())
    };
    match action {
        AuditCommand::Verify { .. } => {
            use std::io::IsTerminal as _;
            let tty = std::io::stderr().is_terminal();
            let mut progress = |done: u64, total: u64| {
                if tty && total > 0 {
                    let width = 40;
                    let filled = (done.min(total) * width / total) as usize;
                    eprint!("\r[{}{}] {done}/{total}", "#".repeat(filled), " ".repeat(width as usize - filled));
                }
            };
            let result = portcullis_audit::verify(&mut store, &mut progress)?;
            if tty {
                eprintln!();
            }
            match result {
                Ok(n) => {
                    println!("ok: {n} records in {place}; the hash chain is intact");
                    Ok(())
                }
                Err(b) => {
                    println!("BROKEN at seq {}: {} ({place})", b.seq, b.reason);
                    std::process::exit(1);
                }
            }
        }
        AuditCommand::Tail { lines, .. } => print(store.query(&portcullis_audit::Filter::default(), lines, true)?),
        AuditCommand::Query { subject, tool, since, limit, .. } => {
            let since_ms = match since {
                None => None,
                Some(s) => {
                    let d = portcullis::config::parse_duration(&s)
                        .ok_or_else(|| anyhow::anyhow!("invalid --since {s:?}: use e.g. 30m or 24h"))?;
                    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
                    Some(now.saturating_sub(d).as_millis() as u64)
                }
            };
            let filter = portcullis_audit::Filter { subject, target: tool, since_ms };
            print(store.query(&filter, limit, false)?)
        }
    }
}

fn api_key(name: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("pcl_{key}");
    let hash = portcullis_auth::ApiKey::hash_hex(&key);
    let mut out = std::io::stdout().lock();
    writeln!(out, "# The key: give it to the service (Authorization: Bearer <key>). It is shown only once.")?;
    writeln!(out, "{key}")?;
    writeln!(out, "# Add to the config ([auth] mode = \"jwt\"):")?;
    writeln!(out, "[[auth.api_keys]]\nname = {name:?}\nsha256 = \"{hash}\"\nscopes = [\"mcp:tools\"]")?;
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut raw = load_raw(args.config.as_ref(), args.listen)?;
    if args.stdio {
        // A pipe to one local process: nothing to authenticate (no key or revocation files), and
        // no listener, so the HTTP-only checks (loopback for dev/off modes) do not apply.
        raw.auth = portcullis::config::AuthSection {
            mode: portcullis::config::AuthMode::Off,
            ..portcullis::config::AuthSection::default()
        };
        raw.server.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    }
    let mut config = Config::resolve(raw)?;
    if let Some(format) = args.log_format {
        config.log.format = format;
    }
    init_logging(&config)?;
    let registry = Arc::new(Registry::new());
    if config.demo {
        portcullis::demo::register(&registry).context("registering the demo tools")?;
    }
    if config.demo_team {
        portcullis::demo::register_team(&registry).context("registering the team demo tools")?;
    }
    if args.stdio {
        // stdio: no listener for metrics; the configured audit trail stays, except on stdout,
        // which belongs to the protocol.
        config.metrics = None;
        if args.config.is_none() {
            // The embedded default under --stdio: every client window may spawn its own process,
            // and they cannot share one audit writer. Audit stdio servers with a config file.
            config.audit.sink = portcullis::config::AuditSink::Off;
        } else if config.audit.sink == portcullis::config::AuditSink::Jsonl && config.audit.path.as_os_str() == "-" {
            tracing::warn!("audit to stdout is off under --stdio: stdout carries the protocol");
            config.audit.sink = portcullis::config::AuditSink::Off;
        }
    }
    let portcullis::Assembled { engine, http, audit } = portcullis::assemble(registry, &config, "portcullis")?;
    config.http = http;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the runtime")?;
    runtime.block_on(async move {
        if args.stdio {
            tracing::info!("serving MCP on stdio");
            let opts = StdioOptions {
                max_message_bytes: config.http.max_body_bytes,
                max_json_depth: config.http.max_json_depth,
                max_batch_items: config.http.max_batch_items,
                grace: config.shutdown_grace,
            };
            portcullis_transport::stdio::serve(engine, tokio::io::stdin(), tokio::io::stdout(), opts)
                .await
                .context("stdio transport")?;
            return Ok(());
        }
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr().context("reading the bound address")?;
        tracing::info!(
            "listening on http://{addr}{} (Streamable HTTP) and http://{addr}{} (HTTP+SSE)",
            config.http.path,
            config.http.sse_path
        );
        if let Some(r) = &config.revocations {
            r.check_connection().await.context("the revocation store")?;
        }
        if let Some(l) = &config.limiter {
            l.check_connection().await.map_err(|e| anyhow::anyhow!("the rate limit store (Redis): {e}"))?;
        }
        match &config.http.auth {
            None => tracing::warn!("authentication is off ([auth] mode = \"off\"): this server is for local use only"),
            Some(auth) => tracing::info!(resource = %auth.resource, "authentication on: bearer tokens required"),
        }
        if config.http.extra_routes.iter().any(|r| r.name == "dev authorization server") {
            tracing::warn!(
                issuer = %auth_issuer(&config),
                "DEV ONLY: the built-in authorization server approves every login as the dev user; \
                 mint a token with `portcullis token --sub you` or let an OAuth client log in"
            );
        }
        if let Some(a) = &audit {
            tracing::info!(store = %a.place(), "audit trail on");
        }
        portcullis::serve_http(listener, engine, &config).await.context("HTTP transport")?;
        if let Some(a) = &audit
            && let Err(e) = a.flush().await
        {
            tracing::error!(error = %e.0, "the audit trail could not be flushed at shutdown");
        }
        tracing::info!("stopped");
        Ok(())
    })
}

fn auth_issuer(config: &Config) -> String {
    config.http.auth.as_ref().and_then(|a| a.authorization_servers.last().cloned()).unwrap_or_default()
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => EnvFilter::try_new(v).context("invalid RUST_LOG")?,
        _ => EnvFilter::try_new(&config.log.level)
            .with_context(|| format!("invalid log.level {:?}", config.log.level))?,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).init(),
        LogFormat::Human => builder.with_ansi(false).init(),
    }
    Ok(())
}
