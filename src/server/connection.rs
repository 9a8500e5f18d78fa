//! One client connection: frame reading, request dispatch, ordered responses.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use glommio::Task;

use crate::handlers::{self, Response};
use crate::protocol::codec::{self, FrameError};
use crate::shard::Shard;

/// Read buffer of a connection; requests larger than this are read straight through.
const READ_BUFFER_BYTES: usize = 64 * 1024;

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
        local_channel::new_bounded::<Task<Response>>(shard.config.max_inflight_requests.max(1));

    let writer_task = glommio::spawn_local(async move {
        while let Some(task) = responses.recv().await {
            match task.await {
                Response::Bytes(bytes) => {
                    writer.write_all(&bytes).await?;
                }
                Response::None => {}
                Response::Close(reason) => return Ok(Some(reason)),
            }
        }
        writer.flush().await.map(|_| None)
    });

    let client_host: Rc<str> = Rc::from(peer.rsplit_once(':').map(|(h, _)| h).unwrap_or(peer));
    let end = read_requests(shard, &mut reader, &queue, &client_host).await;
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

async fn read_requests(
    shard: &Rc<Shard>,
    reader: &mut BufReader<Half>,
    queue: &local_channel::LocalSender<Task<Response>>,
    client_host: &Rc<str>,
) -> End {
    loop {
        let seen = shard.shutdown.generation();
        if shard.shutting_down.get() {
            return End::Shutdown;
        }
        let frame = futures_lite::future::or(
            async { Some(read_frame(reader, shard.config.max_frame_bytes).await) },
            async {
                shard.shutdown.wait(seen).await;
                None
            },
        )
        .await;
        let frame = match frame {
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
        let shard = shard.clone();
        let host = client_host.clone();
        let task =
            glommio::spawn_local(async move { handlers::dispatch(&shard, request, host).await });
        if queue.send(task).await.is_err() {
            return End::ClientClosed;
        }
    }
}

/// Reads one size-prefixed frame. `Ok(None)` on a clean end of stream between frames.
async fn read_frame(
    reader: &mut BufReader<Half>,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, End> {
    let mut size = [0u8; 4];
    let mut filled = 0;
    while filled < size.len() {
        match reader.read(&mut size[filled..]).await {
            Ok(0) if filled == 0 => return Ok(None),
            Ok(0) => {
                return Err(End::Violation(
                    "connection closed inside a frame header".into(),
                ))
            }
            Ok(n) => filled += n,
            Err(err) => return Err(End::Io(err)),
        }
    }
    let size = i32::from_be_bytes(size);
    if size < 0 || size as usize > max_frame_bytes {
        return Err(End::Violation(format!(
            "frame size {size} is outside 0..={max_frame_bytes} (--max-frame-bytes)"
        )));
    }
    let mut frame = BytesMut::zeroed(size as usize);
    match reader.read_exact(&mut frame).await {
        Ok(()) => Ok(Some(frame.freeze())),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => Err(End::Violation(
            format!("connection closed inside a {size}-byte request"),
        )),
        Err(err) => Err(End::Io(err)),
    }
}
