//! The stdio transport (2025-11-25 basic/transports §stdio): one JSON-RPC message per line on
//! stdin, one per line on stdout, nothing else on stdout (logs go to stderr, which the binary
//! arranges). Requests run concurrently; on stdin EOF the server stops reading, lets in-flight
//! requests finish within `grace`, flushes and returns.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use portcullis_engine::{Dispatch, Engine, Outlet, Principal, Session, Sink, new_session_id};
use portcullis_protocol::{Body as RpcBody, Message, ParseError, ProtocolVersion, RpcError, parse_body, write_error};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// stdio limits.
#[derive(Debug, Clone)]
pub struct StdioOptions {
    /// Longest accepted line.
    pub max_message_bytes: usize,
    /// Deepest accepted JSON nesting.
    pub max_json_depth: usize,
    /// Most messages in one batch (2025-03-26 sessions); a larger one is refused whole.
    pub max_batch_items: usize,
    /// How long in-flight requests may run after stdin closes.
    pub grace: Duration,
}

struct Writer(mpsc::Sender<Bytes>);

impl Outlet for Writer {
    fn push(&self, message: Bytes) -> bool {
        self.0.try_send(message).is_ok()
    }
}

/// Serves one client on `input`/`output` until `input` ends.
pub async fn serve<R, W>(engine: Arc<Engine>, input: R, mut output: W, opts: StdioOptions) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(1024);
    // The only task writing to stdout; every message is one line.
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            output.write_all(&m).await?;
            output.write_all(b"\n").await?;
            if rx.is_empty() {
                output.flush().await?;
            }
        }
        output.flush().await
    });
    let session = Arc::new(Session::new(new_session_id(), Arc::new(Writer(tx.clone()))));
    let mut tasks = JoinSet::new();
    let mut reader = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        match read_line(&mut reader, &mut line, opts.max_message_bytes).await? {
            Line::Eof => break,
            Line::TooLong => {
                let e =
                    RpcError::invalid_request(format!("message exceeds the limit of {} bytes", opts.max_message_bytes));
                let _ = tx.send(Bytes::from(write_error(None, &e))).await;
            }
            Line::Ok if line.iter().all(u8::is_ascii_whitespace) => {}
            Line::Ok => match parse_body(&line, opts.max_json_depth) {
                Err(e) => {
                    let (id, err) = match e {
                        ParseError::Parse(m) => (None, RpcError::parse(m)),
                        ParseError::Invalid(id, m) => (id, RpcError::invalid_request(m)),
                    };
                    let _ = tx.send(Bytes::from(write_error(id.as_ref(), &err))).await;
                }
                Ok(RpcBody::Single(m)) => handle(&engine, &session, m, &tx, &mut tasks).await,
                Ok(RpcBody::Batch(items)) => {
                    if !session.version().is_some_and(ProtocolVersion::allows_batch) {
                        let e = RpcError::invalid_request("JSON-RPC batches are only accepted on 2025-03-26 sessions");
                        let _ = tx.send(Bytes::from(write_error(None, &e))).await;
                        continue;
                    }
                    if items.len() > opts.max_batch_items {
                        let limit = opts.max_batch_items;
                        let e = RpcError::invalid_request(format!(
                            "a JSON-RPC batch may hold at most {limit} messages; send fewer at a time"
                        ));
                        let _ = tx.send(Bytes::from(write_error(None, &e))).await;
                        continue;
                    }
                    for item in items {
                        match item {
                            Ok(m) => handle(&engine, &session, m, &tx, &mut tasks).await,
                            Err((id, e)) => {
                                let _ = tx.send(Bytes::from(write_error(id.as_ref(), &e))).await;
                            }
                        }
                    }
                }
            },
        }
        while tasks.try_join_next().is_some() {}
    }
    // stdin closed: the client is leaving. Give running handlers a short grace, then stop.
    let _ = tokio::time::timeout(opts.grace, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    engine.close_session(&session);
    drop(session);
    drop(tx);
    // Every queued message is flushed unless something still holds a sender past the grace
    // (a handler's own spawned task): then stop anyway rather than hang.
    match tokio::time::timeout(opts.grace, writer).await {
        Ok(done) => done.unwrap_or(Ok(())),
        Err(_) => Ok(()),
    }
}

async fn handle(
    engine: &Engine,
    session: &Arc<Session>,
    m: Message<'_>,
    tx: &mpsc::Sender<Bytes>,
    tasks: &mut JoinSet<()>,
) {
    let anonymous = Principal::anonymous();
    match m {
        Message::Request(req)
            if let Some(check) = engine.admit(session, &anonymous, &req)
                && let Err((error, _)) = check.await =>
        {
            let _ = tx.send(Bytes::from(error)).await;
        }
        // A pipe to one local process: the caller is the anonymous principal.
        Message::Request(req) => match engine.request(session, &Principal::anonymous(), &req, Sink::Session) {
            Dispatch::Ready(b) | Dispatch::StepUp { error: b, .. } => {
                let _ = tx.send(Bytes::from(b)).await;
            }
            Dispatch::Pending(fut) => {
                let tx = tx.clone();
                tasks.spawn(async move {
                    if let Some(b) = fut.await {
                        let _ = tx.send(Bytes::from(b)).await;
                    }
                });
            }
        },
        Message::Notification(n) => engine.notification(session, &n),
        Message::Response(r) => {
            engine.response(session, &r);
        }
    }
}

enum Line {
    Ok,
    Eof,
    TooLong,
}

/// Reads one line into `buf` without ever holding more than `limit` bytes of it; an overlong
/// line is consumed and reported.
async fn read_line<R: AsyncRead + Unpin>(
    r: &mut BufReader<R>,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    let mut too_long = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                Line::Eof
            } else if too_long {
                Line::TooLong
            } else {
                Line::Ok
            });
        }
        let (chunk, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], Some(i + 1)),
            None => (available, None),
        };
        if !too_long {
            if buf.len() + chunk.len() > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(chunk);
            }
        }
        let consumed = done.unwrap_or(available.len());
        r.consume(consumed);
        if done.is_some() {
            return Ok(if too_long { Line::TooLong } else { Line::Ok });
        }
    }
}
