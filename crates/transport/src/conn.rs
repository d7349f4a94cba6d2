//! Connections: the accept loop, the global connection cap and each connection's HTTP/1 server
//! (hyper, with its timer installed so the header-read timeout holds).
//!
//! What one client can hold here, and for how long:
//! - a connection slot: at most [`ConnOptions::max_connections`] at once; past it a connection
//!   gets an immediate `503` with a JSON-RPC error and is closed (never queued unanswered);
//! - a connection that sends no complete request head: [`ConnOptions::header_read_timeout`] from
//!   when the connection starts waiting for a request (accepted, or its previous response sent),
//!   so the same timer is the keep-alive idle timeout — a slowloris gets nothing longer;
//! - a body that trickles in: the body-read timeout ([`crate::HttpOptions::body_read_timeout`],
//!   applied where bodies are read).
//!
//! An SSE response stream is a response being written, not an idle connection: no timeout here
//! ends it (the session's idle TTL and shutdown do).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// Connection limits.
#[derive(Debug, Clone)]
pub struct ConnOptions {
    /// Most connections open at once.
    pub max_connections: usize,
    /// How long a connection may take to send a complete request head, counted from when it
    /// starts waiting for one; also the keep-alive idle timeout.
    pub header_read_timeout: Duration,
}

impl Default for ConnOptions {
    fn default() -> Self {
        Self { max_connections: 10_000, header_read_timeout: Duration::from_secs(10) }
    }
}

/// Serves `app` on `listener` until `stop` flips to true; then stops accepting and asks every
/// connection to finish its current request and close. Returns once every connection is gone,
/// or at `grace` after the stop, whichever is first.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    opts: &ConnOptions,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(opts.max_connections));
    // Every connection task holds a receiver; `closed()` resolves when the last one is gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors (or the like): wait instead of spinning; the
                // connections open now go on being served.
                tracing::error!(error = %e, "accept failed; retrying in 100 ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Nagle's algorithm plus delayed ACKs costs 40 ms per small response.
        let _ = tcp.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refuse(&tcp, peer);
            continue;
        };
        let app = app.clone();
        let stop = stop.clone();
        let open = open_rx.clone();
        let header_read_timeout = opts.header_read_timeout;
        tokio::spawn(async move {
            connection(tcp, app, header_read_timeout, stop).await;
            drop(slot);
            drop(open);
        });
    }
    drop(open_rx);
    tokio::select! {
        () = open_tx.closed() => {}
        () = tokio::time::sleep(grace) => {
            tracing::warn!(grace_ms = grace.as_millis() as u64, "shutdown: deadline passed with requests still in flight");
        }
    }
    Ok(())
}

/// One connection, HTTP/1.1 with keep-alive, until it closes, fails or times out.
async fn connection(tcp: TcpStream, app: Router, header_read_timeout: Duration, mut stop: watch::Receiver<bool>) {
    let service = TowerToHyperService::new(app);
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_read_timeout).keep_alive(true);
    let conn = builder.serve_connection(TokioIo::new(tcp), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stop.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Past the connection cap: a complete `503` written without waiting (the socket's send buffer
/// is empty), then the connection is closed.
fn refuse(tcp: &TcpStream, peer: SocketAddr) {
    const BODY: &str =
        r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32603,"message":"too many connections; try again later"}}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = tcp.try_write(response.as_bytes());
    // One line a second at most: a flood of connections must not become a flood of log lines.
    static LOGGED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    use std::sync::atomic::Ordering::Relaxed;
    let refused = REFUSED.fetch_add(1, Relaxed) + 1;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    if LOGGED.swap(now, Relaxed) != now {
        tracing::warn!(%peer, refused_so_far = refused, "connection refused: the connection limit is reached");
    }
}
