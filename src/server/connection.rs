//! One client connection: frame reading, request dispatch, ordered responses.
//!
//! Every resource a connection can pin is bounded, because a client may be hostile or
//! broken: a frame's memory is reserved as its bytes arrive (a length prefix alone reserves
//! little), a frame that stops arriving half way is closed after [`FRAME_STALL_TIMEOUT_MS`],
//! a response the client stops reading is closed after [`WRITE_STALL_TIMEOUT_MS`], and at
//! most one Fetch response per connection is held unwritten (a consumer that pipelines
//! fetches and never reads would otherwise make the broker hold one response per request in
//! flight). Real clients have at most one fetch in flight per connection anyway.

use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::Task;
use kafka_protocol::messages::ApiKey;

use crate::handlers::{self, Response};
use crate::protocol::codec::{self, FrameError};
use crate::shard::Shard;
use crate::util::{timeout, Notify};

/// Read buffer of a connection; requests larger than this are read straight through.
const READ_BUFFER_BYTES: usize = 64 * 1024;
/// Memory for a frame is reserved as its bytes arrive, at most this much ahead of them, so
/// that a length prefix alone cannot make the broker reserve `--max-frame-bytes`.
const FRAME_RESERVE_AHEAD_BYTES: usize = 1024 * 1024;
/// Once a frame has begun, the longest the client may send nothing more of it (a request
/// sent half way, then stalled: slowloris). Idle time between frames is not limited.
pub const FRAME_STALL_TIMEOUT_MS: u64 = 30_000;
/// The longest a response write may make no progress (a client that stopped reading).
pub const WRITE_STALL_TIMEOUT_MS: u64 = 30_000;
/// How often a stalled read or write checks its stall timeout. A short timer re-armed is
/// used rather than one timer for the whole stall: a single glommio timer of 10 s racing a
/// pending socket write was seen never to fire, while re-armed 1 s timers always do.
const STALL_CHECK_MS: u64 = 1_000;
/// Fetch responses a connection may have dispatched and not yet written.
const FETCHES_UNWRITTEN_MAX: usize = 1;

/// The two halves of a socket shared by the reader and the writer task. Both run on this
/// shard's thread and only borrow the stream inside a poll, never across an await.
struct Half(Rc<RefCell<TcpStream>>);

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_close(cx)
    }
}

/// What the reader and the writer task share: how many Fetch responses are not yet
/// written, and whether the writer has stopped.
#[derive(Default)]
struct Outbox {
    fetches_unwritten: Cell<usize>,
    writer_done: Cell<bool>,
    changed: Notify,
}

impl Outbox {
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

/// A dispatched request, in the writer's queue.
struct InFlight {
    task: Task<Response>,
    fetch: bool,
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
    Violation(String),
    Io(std::io::Error),
}

pub async fn serve(shard: &Rc<Shard>, stream: TcpStream, peer: &str) {
    let stream = Rc::new(RefCell::new(stream));
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, Half(stream.clone()));
    let mut writer = Half(stream);
    let (queue, responses) =
        local_channel::new_bounded::<InFlight>(shard.config.max_inflight_requests.max(1));
    let outbox = Rc::new(Outbox::default());

    let done = WriterDone(outbox.clone());
    let writer_task = glommio::spawn_local(async move {
        let outbox = &done.0;
        while let Some(InFlight { task, fetch }) = responses.recv().await {
            let written = match task.await {
                Response::Bytes(bytes) => write_response(&mut writer, &bytes).await,
                Response::None => Ok(None),
                Response::Close(reason) => Ok(Some(reason)),
            };
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
        writer.flush().await.map(|_| None)
    });

    let client_host: Rc<str> = Rc::from(peer.rsplit_once(':').map(|(h, _)| h).unwrap_or(peer));
    let end = read_requests(shard, &mut reader, &queue, &outbox, &client_host).await;
    drop(queue);
    // Let in-flight requests finish and their responses go out.
    let writer_end = writer_task.await;
    match (&end, writer_end) {
        (_, Ok(Some(reason))) => {
            tracing::warn!(shard = shard.id.0, peer, "closing connection: {reason}")
        }
        (End::Violation(why), _) => {
            tracing::warn!(shard = shard.id.0, peer, "closing connection: {why}")
        }
        (End::Io(err), _) => tracing::debug!(shard = shard.id.0, peer, %err, "connection error"),
        (_, Err(err)) => tracing::debug!(shard = shard.id.0, peer, %err, "write failed"),
        (End::ClientClosed | End::Shutdown, Ok(None)) => {
            tracing::trace!(shard = shard.id.0, peer, "connection closed")
        }
    }
}

/// Writes one response; `Ok(Some(reason))` if the client stopped reading for
/// [`WRITE_STALL_TIMEOUT_MS`], which closes the connection.
async fn write_response(writer: &mut Half, mut bytes: &[u8]) -> std::io::Result<Option<String>> {
    let stall = Duration::from_millis(WRITE_STALL_TIMEOUT_MS);
    while !bytes.is_empty() {
        let since = Instant::now();
        let written = loop {
            match timeout(Duration::from_millis(STALL_CHECK_MS), writer.write(bytes)).await {
                Some(written) => break written,
                None if since.elapsed() < stall => continue,
                None => {
                    return Ok(Some(format!(
                        "the client read nothing for {WRITE_STALL_TIMEOUT_MS} ms with {} response bytes left to write",
                        bytes.len()
                    )))
                }
            }
        };
        match written {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(err) => return Err(err),
        }
    }
    Ok(None)
}

/// One read that must make progress within `stall` (`None` if it does not).
async fn read_within(
    reader: &mut BufReader<Half>,
    buf: &mut [u8],
    stall: Duration,
) -> Option<std::io::Result<usize>> {
    let since = Instant::now();
    loop {
        match timeout(Duration::from_millis(STALL_CHECK_MS), reader.read(buf)).await {
            Some(read) => return Some(read),
            None if since.elapsed() < stall => continue,
            None => return None,
        }
    }
}

async fn read_requests(
    shard: &Rc<Shard>,
    reader: &mut BufReader<Half>,
    queue: &local_channel::LocalSender<InFlight>,
    outbox: &Outbox,
    client_host: &Rc<str>,
) -> End {
    loop {
        let seen = shard.shutdown.generation();
        if shard.shutting_down.get() {
            return End::Shutdown;
        }
        if outbox.writer_done.get() {
            // The writer gave up (write error or a client that stopped reading).
            return End::ClientClosed;
        }
        let frame = futures_lite::future::or(
            async { Some(read_frame(reader, shard.config.max_frame_bytes).await) },
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
        let frame = match frame {
            None if outbox.writer_done.get() => return End::ClientClosed,
            None => return End::Shutdown,
            Some(Ok(Some(frame))) => frame,
            Some(Ok(None)) => return End::ClientClosed,
            Some(Err(end)) => return end,
        };
        // Backpressure: while the shard holds too much unflushed data, stop reading.
        shard.wait_for_flush_room().await;
        let request = match codec::parse_request(frame) {
            Ok(request) => request,
            Err(err @ FrameError::UnknownApiKey { .. }) => return End::Violation(err.to_string()),
            Err(err) => return End::Violation(err.to_string()),
        };
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
        let shard = shard.clone();
        let host = client_host.clone();
        let task =
            glommio::spawn_local(async move { handlers::dispatch(&shard, request, host).await });
        if queue.send(InFlight { task, fetch }).await.is_err() {
            return End::ClientClosed;
        }
    }
}

/// Reads one size-prefixed frame. `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    reader: &mut BufReader<Half>,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, End> {
    let stall = Duration::from_millis(FRAME_STALL_TIMEOUT_MS);
    let mut size = [0u8; 4];
    let mut filled = 0;
    while filled < size.len() {
        // Waiting for a frame to begin is idle time; once it has begun, it must keep coming.
        let read = if filled == 0 {
            Some(reader.read(&mut size).await)
        } else {
            read_within(reader, &mut size[filled..], stall).await
        };
        match read {
            None => return Err(stalled(filled, 4)),
            Some(Ok(0)) if filled == 0 => return Ok(None),
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
    if size < 0 || size as usize > max_frame_bytes {
        return Err(End::Violation(format!(
            "frame size {size} is outside 0..={max_frame_bytes} (--max-frame-bytes)"
        )));
    }
    let size = size as usize;
    let mut frame = BytesMut::new();
    while frame.len() < size {
        let start = frame.len();
        let end = size.min(start + FRAME_RESERVE_AHEAD_BYTES);
        frame.resize(end, 0);
        let mut at = start;
        while at < end {
            match read_within(reader, &mut frame[at..end], stall).await {
                None => return Err(stalled(4 + at, 4 + size)),
                Some(Ok(0)) => {
                    return Err(End::Violation(format!(
                        "connection closed inside a {size}-byte request"
                    )))
                }
                Some(Ok(n)) => at += n,
                Some(Err(err)) => return Err(End::Io(err)),
            }
        }
    }
    Ok(Some(frame.freeze()))
}

fn stalled(received: usize, expected: usize) -> End {
    End::Violation(format!(
        "no bytes for {FRAME_STALL_TIMEOUT_MS} ms inside a frame ({received} of {expected} bytes received)"
    ))
}
