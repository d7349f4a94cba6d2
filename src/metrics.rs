//! Prometheus metrics at `/metrics` (text exposition format), fed by the same events the audit
//! trail gets — every call, denial, rate-limit hit and authentication failure passes through
//! [`Observed`] on its way to the audit log — plus gauges read at scrape time (open sessions,
//! audit queue). Labels are bounded: a method from a fixed set, a tool name only when it is
//! registered, a policy or rate rule from the configuration, an outcome class. Never a session
//! id, a subject or an argument.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderMap, StatusCode};
use portcullis_engine::{AuditEvent, AuditUnavailable, Auditor, BoxFuture, Engine};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    tool: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
}

/// The metric families.
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    denials: Family<RuleLabels, Counter>,
    rate_limited: Family<RuleLabels, Counter>,
    auth_failures: Counter,
    sessions: Gauge,
    audit_queue: Gauge,
    audit_written: Gauge,
    audit_batches: Gauge,
    audit_write_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    audit_failures: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("portcullis");
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "tools/call, resources/read and prompts/get by method, tool and outcome",
            calls.clone(),
        );
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        registry.register("call_duration_seconds", "Time from dispatch to the response being ready", latency.clone());
        let denials = Family::<RuleLabels, Counter>::default();
        registry.register("denials", "Calls the policy hid or asked to step up, by deciding rule", denials.clone());
        let rate_limited = Family::<RuleLabels, Counter>::default();
        registry.register("rate_limited", "Calls refused by a rate limit, by rule", rate_limited.clone());
        let auth_failures = Counter::default();
        registry.register("auth_failures", "Requests with a credential that was refused", auth_failures.clone());
        let sessions = Gauge::default();
        registry.register("sessions_open", "Initialized MCP sessions", sessions.clone());
        let audit_queue = Gauge::default();
        registry.register("audit_queue_depth", "Audit events waiting to be written", audit_queue.clone());
        let audit_written = Gauge::default();
        registry.register("audit_events_written", "Audit events written since start", audit_written.clone());
        let audit_batches = Gauge::default();
        registry.register(
            "audit_batches_written",
            "Durable audit writes (group commits) since start",
            audit_batches.clone(),
        );
        let audit_write_seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "audit_write_seconds",
            "Total time spent in durable audit writes since start (divide by batches for the mean)",
            audit_write_seconds.clone(),
        );
        let audit_failures = Gauge::default();
        registry.register("audit_write_failures", "Audit writes that failed since start", audit_failures.clone());
        Self {
            registry,
            calls,
            latency,
            denials,
            rate_limited,
            auth_failures,
            sessions,
            audit_queue,
            audit_written,
            audit_batches,
            audit_write_seconds,
            audit_failures,
        }
    }
}

/// What one event adds to the metrics, worked out before the event goes to the audit log (which
/// takes it) and added later (see [`Observed`]).
pub struct Observation {
    auth_failure: bool,
    rate_limited: Option<String>,
    denied: Option<String>,
    call: Option<CallLabels>,
    /// Seconds, for the latency histogram (calls only).
    latency: Option<f64>,
}

impl Metrics {
    /// The labels `e` counts under.
    pub fn observation(e: &AuditEvent, engine: Option<&Engine>) -> Observation {
        let rule = || e.rule.clone().unwrap_or_default();
        let mut o = Observation {
            auth_failure: e.kind == "auth-failure",
            rate_limited: (e.kind == "rate-limited").then(rule),
            denied: (e.kind == "denial").then(rule),
            call: None,
            latency: None,
        };
        if !matches!(e.kind, "call" | "denial") {
            return o;
        }
        let method = match e.method.as_str() {
            m @ ("tools/call" | "resources/read" | "prompts/get") => m,
            _ => "other",
        };
        // Tool and prompt names only when registered: a client cannot mint label values.
        let registered = |name: &str| {
            engine.is_some_and(|en| {
                let catalog = en.registry().snapshot();
                match method {
                    "tools/call" => catalog.tool(name).is_some(),
                    "prompts/get" => catalog.prompt(name).is_some(),
                    _ => false,
                }
            })
        };
        let tool = match e.target.as_deref() {
            Some(t) if registered(t) => t.to_owned(),
            Some(_) if method == "resources/read" => String::new(),
            _ => "unknown".to_owned(),
        };
        let outcome = match e.outcome.as_str() {
            o @ ("ok" | "tool-error" | "denied" | "cancelled") => o.to_owned(),
            o if o.starts_with("error:") => "error".to_owned(),
            _ => "other".to_owned(),
        };
        let outcome = if e.decision == "step-up" { "step-up".to_owned() } else { outcome };
        o.call = Some(CallLabels { method: method.to_owned(), tool, outcome });
        if e.kind == "call" {
            o.latency = Some(e.latency_us as f64 / 1e6);
        }
        o
    }

    /// Adds `o`. When the audit write failed (`audited` false) the caller got an error instead
    /// of its result: such a call counts with the outcome `withheld`, whatever it produced.
    pub fn count(&self, o: Observation, audited: bool) {
        if o.auth_failure {
            self.auth_failures.inc();
        }
        if let Some(rule) = o.rate_limited {
            self.rate_limited.get_or_create(&RuleLabels { rule }).inc();
        }
        if let Some(rule) = o.denied {
            self.denials.get_or_create(&RuleLabels { rule }).inc();
        }
        if let Some(mut call) = o.call {
            if !audited {
                call.outcome = "withheld".to_owned();
            }
            if let Some(seconds) = o.latency {
                self.latency.get_or_create(&MethodLabels { method: call.method.clone() }).observe(seconds);
            }
            self.calls.get_or_create(&call).inc();
        }
    }
}

/// An auditor that counts every event into [`Metrics`] and hands it to the audit log (if any):
/// calls once the log has answered, everything else at once.
pub struct Observed {
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The audit log.
    pub inner: Option<Arc<dyn Auditor>>,
    /// The engine, for registered names (set once it exists).
    pub engine: std::sync::OnceLock<std::sync::Weak<Engine>>,
}

impl Auditor for Observed {
    /// Counts a call once the audit log has answered, so that the metrics tell what the client
    /// got: a call whose record could not be written counts as `withheld`. If the future is
    /// dropped unawaited (shutdown; an interrupted call's record) the call counts as it is.
    /// Other events (denials, step-ups, refusals) count at once: the client gets its refusal
    /// either way.
    fn record(&self, event: AuditEvent) -> BoxFuture<'static, Result<(), AuditUnavailable>> {
        let engine = self.engine.get().and_then(std::sync::Weak::upgrade);
        let observation = Metrics::observation(&event, engine.as_deref());
        match &self.inner {
            Some(a) if event.kind == "call" => {
                let written = a.record(event);
                let mut uncounted = Uncounted { metrics: self.metrics.clone(), observation: Some(observation) };
                Box::pin(async move {
                    let result = written.await;
                    if let Some(o) = uncounted.observation.take() {
                        uncounted.metrics.count(o, result.is_ok());
                    }
                    result
                })
            }
            inner => {
                self.metrics.count(observation, true);
                match inner {
                    Some(a) => a.record(event),
                    None => Box::pin(std::future::ready(Ok(()))),
                }
            }
        }
    }

    /// Counted at once, every one: the audit log may keep only some (its per-source budget),
    /// the metrics count them all.
    fn note(&self, event: AuditEvent) {
        let engine = self.engine.get().and_then(std::sync::Weak::upgrade);
        self.metrics.count(Metrics::observation(&event, engine.as_deref()), true);
        if let Some(a) = &self.inner {
            a.note(event);
        }
    }
}

/// A call's observation until it is counted; counted on drop if its future never finished.
struct Uncounted {
    metrics: Arc<Metrics>,
    observation: Option<Observation>,
}

impl Drop for Uncounted {
    fn drop(&mut self) {
        if let Some(o) = self.observation.take() {
            self.metrics.count(o, true);
        }
    }
}

struct Scrape {
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    audit: Option<Arc<portcullis_audit::AuditLog>>,
    /// SHA-256 of the scrape token, when one is required.
    token_hash: Option<Vec<u8>>,
}

/// The `/metrics` route.
pub fn router(
    metrics: Arc<Metrics>,
    engine: Arc<Engine>,
    audit: Option<Arc<portcullis_audit::AuditLog>>,
    path: &str,
    token: Option<String>,
) -> Router {
    let token_hash =
        token.map(|t| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.as_bytes()).as_ref().to_vec());
    Router::new().route(path, get(scrape)).with_state(Arc::new(Scrape { metrics, engine, audit, token_hash }))
}

async fn scrape(State(s): State<Arc<Scrape>>, headers: HeaderMap) -> Response {
    if let Some(expected) = &s.token_hash {
        let given = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, t.trim().as_bytes()));
        let ok = given.is_some_and(|g| aws_lc_rs::constant_time::verify_slices_are_equal(g.as_ref(), expected).is_ok());
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(http::header::WWW_AUTHENTICATE, "Bearer")],
                "metrics need the scrape token\n",
            )
                .into_response();
        }
    }
    let m = &s.metrics;
    m.sessions.set(s.engine.registry().open_sessions() as i64);
    if let Some(a) = &s.audit {
        let st = a.stats();
        m.audit_queue.set(st.queued.load(Ordering::Relaxed) as i64);
        m.audit_written.set(st.written.load(Ordering::Relaxed) as i64);
        m.audit_batches.set(st.batches.load(Ordering::Relaxed) as i64);
        m.audit_write_seconds.set(st.write_us.load(Ordering::Relaxed) as f64 / 1e6);
        m.audit_failures.set(st.failures.load(Ordering::Relaxed) as i64);
    }
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, &m.registry).is_err() {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    }
    ([(http::header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], out).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Unavailable;

    impl Auditor for Unavailable {
        fn record(&self, _: AuditEvent) -> BoxFuture<'static, Result<(), AuditUnavailable>> {
            Box::pin(std::future::ready(Err(AuditUnavailable("disk full".into()))))
        }
    }

    fn text(m: &Metrics) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        out
    }

    #[tokio::test]
    async fn a_call_counts_as_the_client_saw_it_after_the_audit_write() {
        let mut call = AuditEvent::new("call", None, "resources/read");
        call.outcome = "ok".into();
        let observed = |inner: Option<Arc<dyn Auditor>>| Observed {
            metrics: Arc::new(Metrics::default()),
            inner,
            engine: std::sync::OnceLock::new(),
        };
        let unaudited = observed(None);
        unaudited.record(call.clone()).await.unwrap();
        assert!(text(&unaudited.metrics).contains(r#"outcome="ok""#), "{}", text(&unaudited.metrics));
        let dropped = observed(Some(Arc::new(Unavailable)));
        drop(dropped.record(call.clone()));
        assert!(text(&dropped.metrics).contains(r#"outcome="ok""#), "a dropped call still counts");
        let failing = observed(Some(Arc::new(Unavailable)));
        assert!(failing.record(call).await.is_err());
        let t = text(&failing.metrics);
        assert!(t.contains(r#"outcome="withheld""#) && !t.contains(r#"outcome="ok""#), "{t}");
    }
}
