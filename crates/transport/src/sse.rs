//! Server-Sent Events: resumable event streams and the HTTP bodies that read them.
//!
//! An [`EventStream`] is a bounded buffer of messages with sequence numbers. Writers (a handler's
//! forwarder task, the session outlet) append; at most one HTTP connection reads at a time. Event
//! ids are `<stream>-<seq>`, unique within a session, so `Last-Event-ID` names both the stream
//! and the position (2025-11-25 basic/transports §Resumability). A reader ends when the stream is
//! finished and drained, when the server asks it to close early (SSE polling), when another
//! connection takes the stream over, or at shutdown.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::Stream;
use tokio::sync::{Notify, watch};

use portcullis_engine::{AuthFailure, Principal, TokenVerifier};

/// Who holds a long-lived stream open, rechecked at every keep-alive: a stream outlives neither
/// its token's expiry nor its revocation (the client reconnects, gets 401, and refreshes). A
/// stream's keep-alives do not keep its session alive either: only authenticated requests do.
#[derive(Clone)]
pub(crate) struct Holder {
    pub(crate) principal: Principal,
    pub(crate) verifier: Option<Arc<dyn TokenVerifier>>,
}

impl Holder {
    /// True while the principal still holds (always without authentication).
    pub(crate) async fn holds(&self) -> bool {
        let Some(v) = &self.verifier else { return true };
        match v.recheck(&self.principal).await {
            Ok(()) => true,
            Err(AuthFailure::Invalid(why) | AuthFailure::Unavailable(why)) => {
                // Fail closed: a stream whose holder cannot be checked is closed too.
                tracing::debug!(subject = %portcullis_engine::capped(&self.principal.subject), %why, "closing a stream");
                false
            }
        }
    }
}

/// A resumable stream of one session.
pub(crate) struct EventStream {
    id: u64,
    state: Mutex<State>,
    /// Woken on every append, finish and takeover; the reader is the only waiter.
    wake: Notify,
    /// Set once any reader attached; the standalone stream buffers nothing before that.
    ever_attached: AtomicBool,
}

struct State {
    events: VecDeque<(u64, Bytes)>,
    next_seq: u64,
    capacity: usize,
    finished: bool,
    /// Bumped to end the attached reader (early close or takeover).
    generation: u64,
}

/// How a reader frames events.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Framing {
    /// `retry:` hint in milliseconds, sent with the priming event.
    pub(crate) retry: Duration,
    /// Interval of `: keepalive` comments.
    pub(crate) keepalive: Duration,
}

// === impl EventStream ===

impl EventStream {
    pub(crate) fn new(id: u64, capacity: usize) -> Self {
        Self {
            id,
            state: Mutex::new(State {
                events: VecDeque::new(),
                next_seq: 1,
                capacity: capacity.max(1),
                finished: false,
                generation: 0,
            }),
            wake: Notify::new(),
            ever_attached: AtomicBool::new(false),
        }
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Appends a message. When full, the oldest event is dropped (a reconnecting client then
    /// misses it; the buffer bound is what keeps a slow client from growing memory).
    pub(crate) fn push(&self, message: Bytes) -> bool {
        let mut s = self.lock();
        if s.finished {
            return false;
        }
        let seq = s.next_seq;
        s.next_seq += 1;
        if s.events.len() == s.capacity {
            s.events.pop_front();
        }
        s.events.push_back((seq, message));
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Pushes only if a reader has attached at least once (for the standalone GET stream).
    pub(crate) fn push_if_listened(&self, message: Bytes) -> bool {
        self.ever_attached.load(Ordering::Relaxed) && self.push(message)
    }

    /// No more events will come; readers end once drained.
    pub(crate) fn finish(&self) {
        self.lock().finished = true;
        self.wake.notify_one();
    }

    /// Ends the attached reader now; the stream itself continues (SSE polling).
    pub(crate) fn close_connection(&self) {
        self.lock().generation += 1;
        self.wake.notify_one();
    }

    /// The sequence number of the newest event (0 when none): a reader that starts here gets only
    /// what comes next.
    pub(crate) fn last_seq(&self) -> u64 {
        self.lock().next_seq - 1
    }

    /// True when finished and nothing remains for a reader at `cursor`.
    fn is_drained(&self, cursor: u64) -> bool {
        let s = self.lock();
        s.finished && s.events.back().is_none_or(|(seq, _)| *seq <= cursor)
    }

    /// Attaches a new reader after `cursor`, ending any previous one.
    fn attach(&self) -> u64 {
        self.ever_attached.store(true, Ordering::Relaxed);
        let mut s = self.lock();
        s.generation += 1;
        let generation = s.generation;
        drop(s);
        self.wake.notify_one();
        generation
    }
}

/// What a reader does next.
enum Step {
    Frames(Bytes),
    Wait,
    End,
}

/// Builds the body of an SSE response reading `stream` after `cursor`.
///
/// `priming` sends an event with an id and empty data first, plus `retry:`, so the client can
/// resume even if the connection drops before the first real event (2025-11-25 basic/transports
/// §Sending Messages to the Server). `on_end` runs when the reader stops for good (stream
/// finished and drained), e.g. to forget the stream.
pub(crate) fn reader(
    stream: Arc<EventStream>,
    cursor: u64,
    priming: bool,
    framing: Framing,
    holder: Option<Holder>,
    shutdown: watch::Receiver<bool>,
    on_end: impl FnOnce(bool) + Send + 'static,
) -> impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    let generation = stream.attach();
    let first = priming
        .then(|| Bytes::from(format!("id: {}-{cursor}\nretry: {}\ndata: \n\n", stream.id, framing.retry.as_millis())));
    let start = tokio::time::Instant::now() + framing.keepalive;
    let state = Reader {
        stream,
        holder,
        first,
        cursor,
        generation,
        keepalive: tokio::time::interval_at(start, framing.keepalive),
        shutdown,
        on_end: Some(Box::new(on_end)),
    };
    futures_util::stream::unfold(state, |mut r| async move { r.next().await.map(|b| (Ok(b), r)) })
}

/// The state of one SSE connection reading a stream.
struct Reader {
    stream: Arc<EventStream>,
    /// Rechecked at each keep-alive (GET streams); `None` for a POST's response stream, which
    /// ends with its request.
    holder: Option<Holder>,
    first: Option<Bytes>,
    cursor: u64,
    generation: u64,
    keepalive: tokio::time::Interval,
    /// Flips to true at server shutdown; the binary holds the sender.
    shutdown: watch::Receiver<bool>,
    on_end: Option<Box<dyn FnOnce(bool) + Send>>,
}

impl Reader {
    async fn next(&mut self) -> Option<Bytes> {
        if let Some(f) = self.first.take() {
            return Some(f);
        }
        self.on_end.as_ref()?;
        loop {
            let stream = self.stream.clone();
            let wake = stream.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            match step(&stream, &mut self.cursor, self.generation) {
                Step::Frames(b) => return Some(b),
                Step::End => {
                    self.end(stream.is_drained(self.cursor));
                    return None;
                }
                Step::Wait => {}
            }
            if *self.shutdown.borrow() {
                self.end(false);
                return None;
            }
            tokio::select! {
                () = &mut wake => {}
                _ = self.keepalive.tick() => {
                    if let Some(h) = &self.holder
                        && !h.holds().await
                    {
                        self.end(false);
                        return None;
                    }
                    return Some(Bytes::from_static(b": keepalive\n\n"));
                }
                _ = self.shutdown.changed() => {
                    self.end(false);
                    return None;
                }
            }
        }
    }

    fn end(&mut self, drained: bool) {
        if let Some(f) = self.on_end.take() {
            f(drained);
        }
    }
}

fn step(stream: &EventStream, cursor: &mut u64, generation: u64) -> Step {
    let s = stream.lock();
    if s.generation != generation {
        return Step::End;
    }
    let mut out = BytesMut::new();
    let after = *cursor;
    for (seq, msg) in s.events.iter().filter(|(seq, _)| *seq > after) {
        frame(&mut out, Some((stream.id, *seq)), None, msg);
        *cursor = *seq;
    }
    if !out.is_empty() {
        return Step::Frames(out.freeze());
    }
    if s.finished { Step::End } else { Step::Wait }
}

/// Writes one SSE event. JSON from serde_json never contains raw newlines, but any that slip in
/// are split into `data:` lines so a message can never forge an event boundary.
pub(crate) fn frame(out: &mut BytesMut, id: Option<(u64, u64)>, event: Option<&str>, data: &[u8]) {
    if let Some((stream, seq)) = id {
        out.put_slice(format!("id: {stream}-{seq}\n").as_bytes());
    }
    if let Some(event) = event {
        out.put_slice(b"event: ");
        out.put_slice(event.as_bytes());
        out.put_u8(b'\n');
    }
    for line in data.split(|&b| b == b'\n') {
        out.put_slice(b"data: ");
        out.put_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.put_u8(b'\n');
    }
    out.put_u8(b'\n');
}

/// Parses a `Last-Event-ID` of ours: `<stream>-<seq>`.
pub(crate) fn parse_event_id(s: &str) -> Option<(u64, u64)> {
    let (a, b) = s.trim().split_once('-')?;
    Some((a.parse().ok()?, b.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_and_ids() {
        let mut out = BytesMut::new();
        frame(&mut out, Some((3, 7)), Some("message"), b"{\"a\":1}");
        assert_eq!(&out[..], b"id: 3-7\nevent: message\ndata: {\"a\":1}\n\n");
        let mut out = BytesMut::new();
        frame(&mut out, None, None, b"x\ny");
        assert_eq!(&out[..], b"data: x\ndata: y\n\n");
        assert_eq!(parse_event_id("3-7"), Some((3, 7)));
        assert_eq!(parse_event_id("nope"), None);
    }

    #[test]
    fn buffer_is_bounded_and_finish_drains() {
        let s = EventStream::new(1, 2);
        for i in 0..5u8 {
            assert!(s.push(Bytes::from(vec![i])));
        }
        assert_eq!(s.lock().events.len(), 2);
        s.finish();
        assert!(!s.push(Bytes::from_static(b"late")));
        assert!(!s.is_drained(3));
        assert!(s.is_drained(5));
        assert!(!s.push_if_listened(Bytes::from_static(b"x")));
    }
}
