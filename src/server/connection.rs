//! One client connection: frame reading, request dispatch, ordered responses.
//!
//! Every resource a connection can pin is bounded, because a client may be hostile or
//! broken: a frame's memory is reserved from the shard's [`RequestBudget`] as its bytes
//! arrive (a length prefix alone reserves [`FRAME_FIRST_CHUNK_BYTES`]; a connection that
//! cannot reserve stops reading), a frame that stops arriving half way is closed after
//! [`FRAME_STALL_TIMEOUT_MS`] and one that takes longer than `--frame-read-timeout-ms` from
//! its first byte is closed however it trickles, a connection with no request for
//! `--connections-max-idle-ms` is closed (idle sockets would otherwise use up
//! `--max-connections-per-shard`), a response the client stops reading is closed after
//! [`WRITE_STALL_TIMEOUT_MS`], and at most one Fetch response per connection is held
//! unwritten (a consumer that pipelines fetches and never reads would otherwise make the
//! broker hold one response per request in flight). Real clients have at most one fetch in
//! flight per connection anyway.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use glommio::channels::local_channel;
use glommio::Task;
use kafka_protocol::messages::{
    ApiKey, SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest,
    SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, StrBytes};

use super::budget::{RequestBudget, Reservation};
use super::socket::{Inbound, Socket};
use super::ListenerCtx;
use crate::handlers::{self, Response};
use crate::protocol::codec::{self, FrameError, RequestFrame};
use crate::protocol::errors::{
    ILLEGAL_SASL_STATE, NONE, SASL_AUTHENTICATION_FAILED, UNSUPPORTED_SASL_MECHANISM,
};
use crate::protocol::pieces::Piece;
use crate::protocol::versions;
use crate::security::sasl::{Authenticator, Mechanism, Outcome};
use crate::shard::Shard;
use crate::util::{timeout, Notify};

/// The largest frame a SASL listener reads before the client has authenticated (Kafka's
/// `SaslServerAuthenticator.MAX_RECEIVE_SIZE`): an unauthenticated client cannot make
/// the broker hold more.
pub const SASL_PRE_AUTH_FRAME_MAX: usize = 524_288;

/// What a length prefix alone reserves (or the whole frame, if smaller): most requests but
/// Produce fit in it, and a thousand bare prefixes hold 16 MiB, not a gigabyte.
pub const FRAME_FIRST_CHUNK_BYTES: usize = 16 * 1024;
/// Memory for a frame is reserved as its bytes arrive, doubling from the first chunk and at
/// most this much ahead of them, so that a length prefix cannot make the broker reserve
/// `--max-frame-bytes`.
const FRAME_RESERVE_AHEAD_BYTES: usize = 1024 * 1024;
/// A frame up to this size gets its whole buffer allocated when its length arrives, so
/// that growing it never copies what was read (a produce request's bytes are copied once,
/// at flush). The allocation is address space, not memory: pages are touched only as bytes
/// arrive, and the request budget above still counts (and limits) those. Larger frames
/// grow as they arrive.
const FRAME_ALLOCATE_AHEAD_MAX: usize = 16 * 1024 * 1024;
/// Once a frame has begun, the longest the client may send nothing more of it (a request
/// sent half way, then stalled: slowloris). The frame as a whole is bounded by
/// `--frame-read-timeout-ms`; idle time between frames by `--connections-max-idle-ms`.
pub const FRAME_STALL_TIMEOUT_MS: u64 = 30_000;
/// The longest a response write may make no progress (a client that stopped reading).
pub const WRITE_STALL_TIMEOUT_MS: u64 = 30_000;
/// How often a stalled read or write checks its stall timeout. A short timer re-armed is
/// used rather than one timer for the whole stall: a single glommio timer of 10 s racing a
/// pending socket write was seen never to fire, while re-armed 1 s timers always do.
const STALL_CHECK_MS: u64 = 1_000;
/// Fetch responses a connection may have dispatched and not yet written.
const FETCHES_UNWRITTEN_MAX: usize = 1;

/// What the reader and the writer task share: how many requests and Fetch responses are
/// not yet answered, when the connection last did something, and whether the writer has
/// stopped.
struct Outbox {
    fetches_unwritten: Cell<usize>,
    /// Requests read and not yet answered: while there are any, the connection is not idle.
    unanswered: Cell<usize>,
    /// The end of the last request read or response written.
    last_active: Cell<Instant>,
    writer_done: Cell<bool>,
    changed: Notify,
    /// The client id of the last request read that had one (log lines about the
    /// connection name it).
    client_id: RefCell<Rc<str>>,
    /// Who the client authenticated as (SASL, or its TLS certificate): Kafka's
    /// `User:ANONYMOUS` until then.
    principal: RefCell<Rc<str>>,
}

impl Outbox {
    fn new() -> Self {
        Outbox {
            fetches_unwritten: Cell::new(0),
            unanswered: Cell::new(0),
            last_active: Cell::new(Instant::now()),
            writer_done: Cell::new(false),
            changed: Notify::default(),
            client_id: RefCell::new(Rc::from("")),
            principal: RefCell::new(Rc::from(ANONYMOUS)),
        }
    }

    /// Remembers the client id a request carried (no allocation when it did not change;
    /// a request without one keeps the last).
    fn saw_client_id(&self, id: Option<&str>) {
        let Some(id) = id.filter(|id| !id.is_empty()) else {
            return;
        };
        if *self.client_id.borrow().as_ref() != *id {
            *self.client_id.borrow_mut() = Rc::from(id);
        }
    }

    async fn wait_writer_done(&self) {
        loop {
            let seen = self.changed.generation();
            if self.writer_done.get() {
                return;
            }
            self.changed.wait(seen).await;
        }
    }
}

/// A dispatched request, in the writer's queue. Its frame's [`Reservation`] is held by the
/// handler task and released when the task ends.
struct InFlight {
    task: Task<Response>,
    fetch: bool,
}

/// Runs one request on a task of its own, as the connection's client and principal;
/// `held` (the request's share of the shard's budget) goes back when it is done.
fn spawn_request<H: 'static>(
    shard: &Rc<Shard>,
    request: RequestFrame,
    client_host: &Rc<str>,
    outbox: &Outbox,
    listener: &ListenerCtx,
    held: H,
) -> Task<Response> {
    let shard = shard.clone();
    let client = (client_host.clone(), outbox.principal.borrow().clone());
    let index = listener.index;
    glommio::spawn_local(async move {
        let response = handlers::dispatch(&shard, request, client, index).await;
        drop(held);
        response
    })
}

/// Marks the writer as done however it ends, so a reader waiting on it never hangs.
struct WriterDone(Rc<Outbox>);

impl Drop for WriterDone {
    fn drop(&mut self) {
        self.0.writer_done.set(true);
        self.0.changed.notify_all();
    }
}

/// Why a connection ended (for the log line).
enum End {
    ClientClosed,
    Shutdown,
    /// No request for `--connections-max-idle-ms`.
    Idle,
    Violation(String),
    Io(std::io::Error),
}

/// The limits frame reading applies, from the flags.
struct FrameLimits {
    max_frame_bytes: usize,
    read_timeout: Duration,
    idle_timeout: Duration,
}

/// Where a connection of a SASL listener stands before it has authenticated.
/// Kafka's principal of a client that did not authenticate.
pub const ANONYMOUS: &str = "User:ANONYMOUS";

struct SaslState {
    authenticated: bool,
    /// The mechanism SaslHandshake chose, and whether its tokens come as bare frames
    /// (SaslHandshake v0) rather than in SaslAuthenticate requests.
    handshake: Option<(Authenticator, bool)>,
    /// Set when a SASL exchange succeeded: who the client is now.
    principal: Option<Rc<str>>,
}

pub async fn serve(
    shard: &Rc<Shard>,
    budget: &Rc<RequestBudget>,
    socket: Socket,
    peer: &str,
    listener: &ListenerCtx,
) {
    let closer = socket.clone();
    let outbox = Rc::new(Outbox::new());
    if let Some(principal) = socket.certificate_principal() {
        *outbox.principal.borrow_mut() = Rc::from(principal.as_str());
    }
    let mut reader = Inbound::new(socket.clone());
    let writer = socket;
    let (queue, responses) =
        local_channel::new_bounded::<InFlight>(shard.config.max_inflight_requests.max(1));

    let done = WriterDone(outbox.clone());
    let writer_task = glommio::spawn_local(async move {
        let outbox = &done.0;
        while let Some(InFlight { task, fetch }) = responses.recv().await {
            let written = match task.await {
                Response::Bytes(bytes) => write_response(&writer, &[Piece::from(bytes)]).await,
                Response::Pieces(pieces) => write_response(&writer, &pieces).await,
                Response::None => Ok(None),
                Response::Close(reason) => Ok(Some(reason)),
            };
            outbox.unanswered.set(outbox.unanswered.get() - 1);
            outbox.last_active.set(Instant::now());
            if fetch {
                outbox
                    .fetches_unwritten
                    .set(outbox.fetches_unwritten.get() - 1);
                outbox.changed.notify_all();
            }
            if let Some(reason) = written? {
                return Ok(Some(reason));
            }
        }
        Ok::<_, std::io::Error>(None)
    });

    let client_host: Rc<str> = Rc::from(peer.rsplit_once(':').map(|(h, _)| h).unwrap_or(peer));
    let mut sasl = SaslState {
        authenticated: !listener.protocol.sasl(),
        handshake: None,
        principal: None,
    };
    let end = read_requests(
        shard,
        budget,
        (&mut reader, &queue, &outbox),
        &client_host,
        listener,
        &mut sasl,
    )
    .await;
    drop(queue);
    // Let in-flight requests finish and their responses go out.
    let writer_end = writer_task.await;
    // A TLS session ends with its close_notify alert (bounded: the client may be gone).
    if closer.is_tls() {
        let _ = timeout(Duration::from_millis(STALL_CHECK_MS), closer.close()).await;
    }
    match (&end, writer_end) {
        (_, Ok(Some(reason))) => log_close(shard.id.0, peer, &client_host, &outbox, &reason),
        (End::Violation(why), _) => log_close(shard.id.0, peer, &client_host, &outbox, why),
        (End::Io(err), _) => tracing::debug!(shard = shard.id.0, peer, %err, "connection error"),
        (End::Idle, Ok(None)) => tracing::debug!(
            shard = shard.id.0,
            peer,
            idle_ms = shard.config.connections_max_idle_ms,
            "closing idle connection (--connections-max-idle-ms)"
        ),
        (_, Err(err)) => tracing::debug!(shard = shard.id.0, peer, %err, "write failed"),
        (End::ClientClosed | End::Shutdown, Ok(None)) => {
            tracing::trace!(shard = shard.id.0, peer, "connection closed")
        }
    }
}

/// Writes one response, its pieces in order; `Ok(Some(reason))` if the client stopped
/// reading for [`WRITE_STALL_TIMEOUT_MS`], which closes the connection.
async fn write_response(writer: &Socket, pieces: &[Piece]) -> std::io::Result<Option<String>> {
    let stall = Duration::from_millis(WRITE_STALL_TIMEOUT_MS);
    let (mut index, mut offset) = (0, 0);
    loop {
        while index < pieces.len() && offset == pieces[index].len() {
            index += 1;
            offset = 0;
        }
        if index == pieces.len() {
            if !writer.is_tls() {
                return Ok(None);
            }
            // TLS may still hold the end of the response.
            return match timeout(stall, writer.flush()).await {
                Some(flushed) => flushed.map(|()| None),
                None => Ok(Some(format!(
                    "the client read nothing for {WRITE_STALL_TIMEOUT_MS} ms with a response left to write"
                ))),
            };
        }
        let since = Instant::now();
        let written = loop {
            let send = writer.send(&pieces[index..], offset);
            match timeout(Duration::from_millis(STALL_CHECK_MS), send).await {
                Some(written) => break written,
                None if since.elapsed() < stall => continue,
                None => {
                    let left = crate::protocol::pieces::total_len(&pieces[index..]) - offset;
                    return Ok(Some(format!(
                        "the client read nothing for {WRITE_STALL_TIMEOUT_MS} ms with {left} response bytes left to write"
                    )));
                }
            }
        };
        let mut n = match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(err) => return Err(err),
        };
        while n > 0 {
            let left = pieces[index].len() - offset;
            if n < left {
                offset += n;
                break;
            }
            n -= left;
            index += 1;
            offset = 0;
        }
    }
}

/// Waits for the first byte of the next frame; `None` once the connection has been idle
/// (no request unanswered, nothing read or written) for `idle`.
async fn read_first(
    reader: &mut Inbound,
    buf: &mut [u8],
    outbox: &Outbox,
    idle: Duration,
) -> Option<std::io::Result<usize>> {
    loop {
        let idle_for = outbox.last_active.get().elapsed();
        let check = if outbox.unanswered.get() > 0 {
            Duration::from_millis(STALL_CHECK_MS)
        } else if idle_for >= idle {
            return None;
        } else {
            (idle - idle_for).min(Duration::from_millis(STALL_CHECK_MS))
        };
        if let Some(read) = timeout(check, reader.read(buf)).await {
            return Some(read);
        }
    }
}

/// One read inside a frame: it must make progress within [`FRAME_STALL_TIMEOUT_MS`] and
/// before `deadline` (`None` if it does not).
async fn read_within(
    reader: &mut Inbound,
    buf: &mut [u8],
    deadline: Instant,
) -> Option<std::io::Result<usize>> {
    let since = Instant::now();
    let stall = Duration::from_millis(FRAME_STALL_TIMEOUT_MS);
    loop {
        let now = Instant::now();
        let left = deadline
            .saturating_duration_since(now)
            .min(stall.saturating_sub(since.elapsed()));
        if left.is_zero() {
            return None;
        }
        let check = left.min(Duration::from_millis(STALL_CHECK_MS));
        if let Some(read) = timeout(check, reader.read(buf)).await {
            return Some(read);
        }
    }
}

/// [`read_within`] into the spare capacity of `frame`, up to `end` bytes in all.
async fn read_within_frame(
    reader: &mut Inbound,
    frame: &mut Vec<u8>,
    end: usize,
    deadline: Instant,
) -> Option<std::io::Result<usize>> {
    let since = Instant::now();
    let stall = Duration::from_millis(FRAME_STALL_TIMEOUT_MS);
    loop {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .min(stall.saturating_sub(since.elapsed()));
        if left.is_zero() {
            return None;
        }
        let check = left.min(Duration::from_millis(STALL_CHECK_MS));
        if let Some(read) = timeout(check, reader.read_into(frame, end)).await {
            return Some(read);
        }
    }
}

async fn read_requests(
    shard: &Rc<Shard>,
    budget: &Rc<RequestBudget>,
    (reader, queue, outbox): (&mut Inbound, &local_channel::LocalSender<InFlight>, &Outbox),
    client_host: &Rc<str>,
    listener: &ListenerCtx,
    sasl: &mut SaslState,
) -> End {
    let max_frame_bytes = shard.config.max_frame_bytes;
    let mut limits = FrameLimits {
        max_frame_bytes: shard.config.max_frame_bytes,
        read_timeout: Duration::from_millis(shard.config.frame_read_timeout_ms),
        idle_timeout: Duration::from_millis(shard.config.connections_max_idle_ms),
    };
    loop {
        let seen = shard.shutdown.generation();
        if shard.shutting_down.get() {
            return End::Shutdown;
        }
        if outbox.writer_done.get() {
            // The writer gave up (write error or a client that stopped reading).
            return End::ClientClosed;
        }
        limits.max_frame_bytes = if sasl.authenticated {
            max_frame_bytes
        } else {
            max_frame_bytes.min(SASL_PRE_AUTH_FRAME_MAX)
        };
        let frame = futures_lite::future::or(
            async { Some(read_frame(reader, budget, outbox, &limits).await) },
            futures_lite::future::or(
                async {
                    shard.shutdown.wait(seen).await;
                    None
                },
                async {
                    outbox.wait_writer_done().await;
                    None
                },
            ),
        )
        .await;
        let (frame, held) = match frame {
            None if outbox.writer_done.get() => return End::ClientClosed,
            None => return End::Shutdown,
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) => return End::ClientClosed,
            Some(Err(end)) => return end,
        };
        outbox.last_active.set(Instant::now());
        // Backpressure: while the shard holds too much unflushed data, stop reading.
        shard.wait_for_flush_room().await;
        if !sasl.authenticated {
            let pre_auth = before_authentication(shard, listener, sasl, frame);
            if let Some(principal) = sasl.principal.take() {
                *outbox.principal.borrow_mut() = principal;
            }
            let request = match pre_auth {
                PreAuth::Dispatch(request) => request,
                PreAuth::Answer {
                    response,
                    delay,
                    close,
                } => {
                    let task = glommio::spawn_local(async move {
                        if let Some(delay) = delay {
                            glommio::timer::sleep(delay).await;
                        }
                        response
                    });
                    outbox.unanswered.set(outbox.unanswered.get() + 1);
                    if queue.send(InFlight { task, fetch: false }).await.is_err() {
                        return End::ClientClosed;
                    }
                    if let Some(reason) = close {
                        return End::Violation(reason);
                    }
                    continue;
                }
                PreAuth::Close(reason) => return End::Violation(reason),
            };
            outbox.saw_client_id(request.header.client_id.as_deref());
            let task = spawn_request(shard, request, client_host, outbox, listener, held);
            outbox.unanswered.set(outbox.unanswered.get() + 1);
            if queue.send(InFlight { task, fetch: false }).await.is_err() {
                return End::ClientClosed;
            }
            continue;
        }
        let request = match codec::parse_request(frame) {
            Ok(request) => request,
            Err(err @ FrameError::UnknownApiKey { .. }) => return End::Violation(err.to_string()),
            Err(err) => return End::Violation(err.to_string()),
        };
        outbox.saw_client_id(request.header.client_id.as_deref());
        let fetch = request.api_key == ApiKey::Fetch;
        if fetch {
            // Hold back a further fetch until the previous response is written.
            while outbox.fetches_unwritten.get() >= FETCHES_UNWRITTEN_MAX {
                let seen = outbox.changed.generation();
                let shutdown_seen = shard.shutdown.generation();
                if outbox.writer_done.get() {
                    return End::ClientClosed;
                }
                if shard.shutting_down.get() {
                    return End::Shutdown;
                }
                futures_lite::future::or(
                    outbox.changed.wait(seen),
                    shard.shutdown.wait(shutdown_seen),
                )
                .await;
            }
            outbox
                .fetches_unwritten
                .set(outbox.fetches_unwritten.get() + 1);
        }
        let task = spawn_request(shard, request, client_host, outbox, listener, held);
        outbox.unanswered.set(outbox.unanswered.get() + 1);
        if queue.send(InFlight { task, fetch }).await.is_err() {
            return End::ClientClosed;
        }
    }
}

/// Reads one size-prefixed frame, reserving its bytes from `budget` as they arrive.
/// `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    reader: &mut Inbound,
    budget: &Rc<RequestBudget>,
    outbox: &Outbox,
    limits: &FrameLimits,
) -> Result<Option<(Bytes, Reservation)>, End> {
    let mut size = [0u8; 4];
    // Waiting for a frame to begin is idle time; once it has begun, it must keep coming
    // and be complete by its deadline.
    let mut filled = match read_first(reader, &mut size, outbox, limits.idle_timeout).await {
        None => return Err(End::Idle),
        Some(Ok(0)) => return Ok(None),
        Some(Ok(n)) => n,
        Some(Err(err)) => return Err(End::Io(err)),
    };
    let deadline = Instant::now() + limits.read_timeout;
    while filled < size.len() {
        match read_within(reader, &mut size[filled..], deadline).await {
            None => return Err(stalled(filled, 4, deadline, limits)),
            Some(Ok(0)) => {
                return Err(End::Violation(
                    "connection closed inside a frame header".into(),
                ))
            }
            Some(Ok(n)) => filled += n,
            Some(Err(err)) => return Err(End::Io(err)),
        }
    }
    let size = i32::from_be_bytes(size);
    let max_frame_bytes = limits.max_frame_bytes;
    if size < 0 || size as usize > max_frame_bytes {
        return Err(End::Violation(format!(
            "frame size {size} is outside 0..={max_frame_bytes} (--max-frame-bytes; at most {SASL_PRE_AUTH_FRAME_MAX} before SASL authentication)"
        )));
    }
    let size = size as usize;
    if size > budget.capacity_bytes() {
        return Err(End::Violation(format!(
            "a {size}-byte frame is larger than the shard's whole request budget of {} bytes (--queued-max-request-bytes)",
            budget.capacity_bytes()
        )));
    }
    let mut held = budget.start_frame();
    // Read into memory that is not zero-filled first: the socket's bytes are the first
    // ones written to it.
    let mut frame: Vec<u8> = Vec::new();
    if size <= FRAME_ALLOCATE_AHEAD_MAX {
        // An allocation failure is not an error: the loop below grows the buffer instead.
        let _ = frame.try_reserve_exact(size);
    }
    while frame.len() < size {
        let start = frame.len();
        let step = (size - start)
            .min(start.max(FRAME_FIRST_CHUNK_BYTES))
            .min(FRAME_RESERVE_AHEAD_BYTES);
        // Waiting for the budget counts against the frame's deadline too: otherwise frames
        // stalled by their clients would hold the budget one wave after another.
        if !reserve_within(budget, &mut held, step, deadline).await {
            return Err(stalled(4 + start, 4 + size, deadline, limits));
        }
        let end = start + step;
        frame.reserve_exact(step);
        while frame.len() < end {
            match read_within_frame(reader, &mut frame, end, deadline).await {
                None => return Err(stalled(4 + frame.len(), 4 + size, deadline, limits)),
                Some(Ok(0)) => {
                    return Err(End::Violation(format!(
                        "connection closed inside a {size}-byte request"
                    )))
                }
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(End::Io(err)),
            }
        }
    }
    debug_assert_eq!(held.bytes(), size);
    Ok(Some((Bytes::from(frame), held)))
}

/// Reserves `bytes` more for a frame before its `deadline`; false if the budget stayed full.
async fn reserve_within(
    budget: &RequestBudget,
    held: &mut Reservation,
    bytes: usize,
    deadline: Instant,
) -> bool {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let check = left.min(Duration::from_millis(STALL_CHECK_MS));
        if timeout(check, budget.grow(held, bytes)).await.is_some() {
            return true;
        }
    }
}

/// Why a frame that stopped arriving is closed: its deadline, or no bytes for a while.
fn stalled(received: usize, expected: usize, deadline: Instant, limits: &FrameLimits) -> End {
    if Instant::now() >= deadline {
        End::Violation(format!(
            "frame not complete {} ms after its first byte (--frame-read-timeout-ms; {received} of {expected} bytes received)",
            limits.read_timeout.as_millis()
        ))
    } else {
        End::Violation(format!(
            "no bytes for {FRAME_STALL_TIMEOUT_MS} ms inside a frame ({received} of {expected} bytes received)"
        ))
    }
}

/// What a SASL listener does with a frame that arrives before authentication.
enum PreAuth {
    /// A request the handlers answer (ApiVersions).
    Dispatch(RequestFrame),
    /// Answered here, after `delay` if any; then the connection is closed if `close`.
    Answer {
        response: Response,
        delay: Option<Duration>,
        close: Option<String>,
    },
    /// Closed without an answer.
    Close(String),
}

/// Kafka's SaslServerAuthenticator: before authentication only ApiVersions, SaslHandshake
/// and then the mechanism's tokens (in SaslAuthenticate requests, or bare frames after a
/// v0 handshake) are accepted; anything else closes the connection (ILLEGAL_SASL_STATE).
fn before_authentication(
    shard: &Shard,
    listener: &ListenerCtx,
    sasl: &mut SaslState,
    frame: Bytes,
) -> PreAuth {
    let delay = Some(Duration::from_millis(
        shard.config.connection_failed_authentication_delay_ms,
    ));
    if let Some((auth, true)) = &mut sasl.handshake {
        // SaslHandshake v0: the frame is the token itself, the answer a bare frame.
        let mechanism = auth.mechanism();
        let outcome = auth.step(&frame, listener.security.users.borrow_mut().current());
        return match token_outcome(shard, listener, sasl, mechanism, outcome) {
            Ok(token) => PreAuth::Answer {
                response: Response::Bytes(size_prefixed(&token)),
                delay: None,
                close: None,
            },
            Err(reason) => PreAuth::Answer {
                response: Response::None,
                delay,
                close: Some(reason),
            },
        };
    }
    let request = match codec::parse_request(frame) {
        Ok(request) => request,
        Err(err) => return PreAuth::Close(err.to_string()),
    };
    let (api, version) = (request.api_key, request.version);
    let correlation_id = request.header.correlation_id;
    let respond = |body: &dyn EncodeBody| -> Response {
        match body.encode_with(correlation_id, api, version) {
            Ok(bytes) => Response::Bytes(bytes),
            Err(err) => Response::Close(err),
        }
    };
    match api {
        ApiKey::ApiVersions => PreAuth::Dispatch(request),
        _ if !versions::is_supported(api, version) => {
            PreAuth::Close(format!("unsupported request {api:?} v{version} before SASL authentication"))
        }
        ApiKey::SaslHandshake if sasl.handshake.is_none() => {
            let mut body = request.body.clone();
            let Ok(handshake) = SaslHandshakeRequest::decode(&mut body, version) else {
                return PreAuth::Close("SaslHandshake request does not decode".into());
            };
            let enabled = &listener.security.mechanisms;
            let names = enabled
                .iter()
                .map(|m| StrBytes::from_static_str(m.name()))
                .collect();
            let chosen = Mechanism::parse(&handshake.mechanism).filter(|m| enabled.contains(m));
            let mut response = SaslHandshakeResponse::default().with_mechanisms(names);
            match chosen {
                Some(m) => {
                    sasl.handshake = Some((Authenticator::new(m), version == 0));
                    response.error_code = NONE;
                    PreAuth::Answer {
                        response: respond(&response),
                        delay: None,
                        close: None,
                    }
                }
                None => {
                    response.error_code = UNSUPPORTED_SASL_MECHANISM;
                    PreAuth::Answer {
                        response: respond(&response),
                        delay: None,
                        close: Some(format!(
                            "UNSUPPORTED_SASL_MECHANISM: the client asked for {:?}; enabled: {}",
                            handshake.mechanism.as_str(),
                            shard.config.sasl_enabled_mechanisms
                        )),
                    }
                }
            }
        }
        ApiKey::SaslAuthenticate if sasl.handshake.is_some() => {
            let mut body = request.body.clone();
            let Ok(authenticate) = SaslAuthenticateRequest::decode(&mut body, version) else {
                return PreAuth::Close("SaslAuthenticate request does not decode".into());
            };
            let Some((auth, _)) = &mut sasl.handshake else {
                unreachable!("checked by the match guard");
            };
            let mechanism = auth.mechanism();
            let outcome = auth.step(
                &authenticate.auth_bytes,
                listener.security.users.borrow_mut().current(),
            );
            match token_outcome(shard, listener, sasl, mechanism, outcome) {
                Ok(token) => PreAuth::Answer {
                    response: respond(
                        &SaslAuthenticateResponse::default().with_auth_bytes(Bytes::from(token)),
                    ),
                    delay: None,
                    close: None,
                },
                Err(reason) => PreAuth::Answer {
                    response: respond(
                        &SaslAuthenticateResponse::default()
                            .with_error_code(SASL_AUTHENTICATION_FAILED)
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                                mechanism.name()
                            )))),
                    ),
                    delay,
                    close: Some(reason),
                },
            }
        }
        ApiKey::SaslAuthenticate => PreAuth::Answer {
            response: respond(
                &SaslAuthenticateResponse::default()
                    .with_error_code(ILLEGAL_SASL_STATE)
                    .with_error_message(Some(StrBytes::from_static_str(
                        "SaslAuthenticate before SaslHandshake",
                    ))),
            ),
            delay: None,
            close: Some("ILLEGAL_SASL_STATE: SaslAuthenticate before SaslHandshake".into()),
        },
        _ => PreAuth::Close(format!(
            "ILLEGAL_SASL_STATE: a {api:?} request before SASL authentication (only ApiVersions, SaslHandshake and SaslAuthenticate are accepted until then)"
        )),
    }
}

/// Records a token's outcome: `Ok(token to send)` while going on or on success, `Err(why)`
/// (logged when the connection is closed) on failure. Logins are counted.
fn token_outcome(
    shard: &Shard,
    listener: &ListenerCtx,
    sasl: &mut SaslState,
    mechanism: Mechanism,
    outcome: Outcome,
) -> Result<Vec<u8>, String> {
    match outcome {
        Outcome::Continue(token) => Ok(token),
        Outcome::Authenticated { user, response } => {
            shard.metrics.authentication(true);
            sasl.authenticated = true;
            sasl.principal = Some(Rc::from(format!("User:{user}")));
            sasl.handshake = None;
            tracing::debug!(
                shard = shard.id.0,
                listener = listener.protocol.name(),
                mechanism = mechanism.name(),
                principal = %format!("User:{user}"),
                "authenticated"
            );
            Ok(response)
        }
        Outcome::Failed(why) => {
            shard.metrics.authentication(false);
            Err(format!(
                "SASL authentication failed ({}): {why}",
                mechanism.name()
            ))
        }
    }
}

/// A response body of any API, encodable behind a reference.
trait EncodeBody {
    fn encode_with(&self, correlation_id: i32, api: ApiKey, version: i16) -> Result<Bytes, String>;
}

impl<T: kafka_protocol::protocol::Encodable> EncodeBody for T {
    fn encode_with(&self, correlation_id: i32, api: ApiKey, version: i16) -> Result<Bytes, String> {
        codec::encode_response(correlation_id, api, version, self)
    }
}

/// A bare size-prefixed frame (SASL tokens after a v0 handshake).
fn size_prefixed(token: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(4 + token.len());
    out.put_i32(token.len() as i32);
    out.put_slice(token);
    out.freeze()
}

/// Logs why the broker closed a connection: one line, and at most
/// [`crate::util::CLIENT_LOG_LINES_MAX`] per client host per interval on this shard, so a client
/// that reconnects and sends garbage in a loop cannot flood the log.
fn log_close(shard: u16, peer: &str, client_host: &str, outbox: &Outbox, reason: &str) {
    let client_id = outbox.client_id.borrow().clone();
    let principal = outbox.principal.borrow().clone();
    log_refused(shard, peer, client_host, (&client_id, &principal), reason);
}

/// [`log_close`] for a connection closed before it sent a request (a failed TLS
/// handshake), or with the client id it had.
pub(super) fn log_refused(
    shard: u16,
    peer: &str,
    client_host: &str,
    (client_id, principal): (&str, &str),
    reason: &str,
) {
    let crate::util::LogVerdict::Log {
        suppressed_before,
        last,
    } = crate::util::client_log_verdict(client_host)
    else {
        return;
    };
    if suppressed_before > 0 {
        tracing::warn!(
            shard,
            peer,
            client_id,
            "suppressed {suppressed_before} similar lines about this client (at most {} per {} ms are logged)",
            crate::util::CLIENT_LOG_LINES_MAX,
            crate::util::CLIENT_LOG_INTERVAL_MS
        );
    }
    let more = if last {
        " (further lines about this client suppressed for the rest of the interval)"
    } else {
        ""
    };
    tracing::warn!(
        shard,
        peer,
        client_id,
        principal,
        "closing connection: {}{more}",
        crate::util::one_line(reason)
    );
}
