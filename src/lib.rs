//! The `portcullis` binary's library half: configuration, the demo tools, and the wiring that
//! builds an engine from a registry and runs it on a transport. Examples and tests use it the
//! same way `main.rs` does.
//!
//! This crate is the only one that reads files, environment variables and signals; the libraries
//! under `crates/` take what they need as arguments.

pub mod admin;
pub mod config;
pub mod demo;
pub mod metrics;

use std::sync::Arc;

use portcullis_engine::{Engine, EngineOptions, Registry, ServerInfo};
use portcullis_transport::{HttpOptions, MemoryStore};
use tokio::net::TcpListener;

pub use config::Config;

/// The engine for `registry` with the resolved settings (no audit trail).
pub fn engine(registry: Arc<Registry>, config: &Config, name: &str) -> Arc<Engine> {
    engine_with(registry, config, name, None)
}

/// The engine for `registry`, recording every call with `auditor`.
pub fn engine_with(
    registry: Arc<Registry>,
    config: &Config,
    name: &str,
    auditor: Option<Arc<dyn portcullis_engine::Auditor>>,
) -> Arc<Engine> {
    let engine = Engine::new(
        registry,
        ServerInfo {
            name: name.to_owned(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            title: Some("Portcullis".to_owned()),
            instructions: None,
        },
        EngineOptions { page_size: config.page_size, client_request_timeout: config.client_request_timeout },
    )
    .with_policy(config.policy.clone())
    .with_guards(config.guards.clone());
    let engine = match &config.limiter {
        Some(l) => engine.with_rate_limiter(l.clone()),
        None => engine,
    };
    Arc::new(match auditor {
        Some(a) => engine.with_auditor(a),
        None => engine,
    })
}

/// Everything `portcullis serve` runs: the engine with policy, rate limits, audit trail and
/// metrics wired in, and the HTTP options with the metrics route added.
pub struct Assembled {
    /// The engine.
    pub engine: Arc<Engine>,
    /// The HTTP options to serve with.
    pub http: HttpOptions,
    /// The audit log, when on.
    pub audit: Option<Arc<portcullis_audit::AuditLog>>,
}

/// Builds the engine for `registry` from `config`: starts the audit trail, puts metrics in front
/// of it, and adds the `/metrics` route.
pub fn assemble(registry: Arc<Registry>, config: &Config, name: &str) -> Result<Assembled, config::ConfigError> {
    let audit = config.audit.start()?;
    let log = audit.clone().map(|a| a as Arc<dyn portcullis_engine::Auditor>);
    let mut http = config.http.clone();
    let Some(settings) = &config.metrics else {
        return Ok(Assembled { engine: engine_with(registry, config, name, log), http, audit });
    };
    let metrics = Arc::new(metrics::Metrics::default());
    let observed = Arc::new(metrics::Observed { metrics: metrics.clone(), inner: log, engine: Default::default() });
    let engine = engine_with(registry, config, name, Some(observed.clone()));
    let _ = observed.engine.set(Arc::downgrade(&engine));
    http.extra_routes.push(portcullis_transport::ExtraRoutes {
        name: "metrics",
        router: metrics::router(metrics, engine.clone(), audit.clone(), &settings.path, settings.token.clone()),
    });
    Ok(Assembled { engine, http, audit })
}

/// Serves Streamable HTTP and HTTP+SSE on `listener` until SIGINT/SIGTERM, then shuts down
/// within the configured grace period.
pub async fn serve_http(listener: TcpListener, engine: Arc<Engine>, config: &Config) -> std::io::Result<()> {
    serve_http_until(listener, engine, config.http.clone(), config.shutdown_grace, shutdown_signal()).await
}

/// Like [`serve_http`] with an explicit shutdown future (tests).
pub async fn serve_http_until(
    listener: TcpListener,
    engine: Arc<Engine>,
    http: HttpOptions,
    grace: std::time::Duration,
    signal: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = Arc::new(MemoryStore::new(http.max_sessions).with_owner_limit(http.max_sessions_per_principal));
    portcullis_transport::serve(listener, engine, store, http, signal, grace).await
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
