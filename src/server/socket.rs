//! A client socket as the connection uses it: frames are read into memory that is not
//! zero-filled first, large frames straight from the socket (not through a read buffer),
//! and responses are written as pieces with vectored sends, so a Fetch response's record
//! bytes go from the log's memory to the kernel with no copy of ours.
//!
//! glommio's stream is readiness based (it tries the system call, and waits for the socket
//! to be ready only when it would block), so plain non-blocking `recv`/`sendmsg` calls on
//! its descriptor interleave with its own reads and writes without reordering anything:
//! when one of ours would block, the same read or write goes through glommio, which waits.

use std::cell::RefCell;
use std::io;
use std::mem::MaybeUninit;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use futures_lite::io::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::protocol::pieces::Piece;

/// Read buffer of a connection, for length prefixes and small requests. A frame part at
/// least this large is read straight into the frame; so at most this much of a frame (what
/// arrived together with the end of the one before) is copied once more.
pub const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Pieces given to one `sendmsg` (the kernel's limit, `IOV_MAX`, is 1024).
const IOVECS_PER_SEND: usize = 64;

/// A TLS connection: rustls over glommio's stream.
pub type TlsStream = futures_rustls::server::TlsStream<TcpStream>;

/// Most plaintext bytes one TLS read asks for: TLS reads need initialised memory, which
/// is zero-filled first, so a large frame is read in steps of this (a TLS record holds at
/// most 16 KiB anyway).
const TLS_READ_MAX: usize = 64 * 1024;

/// The socket, shared by the connection's reader and its writer task. Both run on this
/// shard's thread and only borrow the stream inside a poll or a system call, never across
/// an await. A plaintext socket is read and written with system calls on its descriptor
/// (below); a TLS one through rustls.
#[derive(Clone)]
pub enum Socket {
    Plain(Rc<RefCell<TcpStream>>),
    Tls(Rc<RefCell<TlsStream>>),
}

/// A plaintext socket (what the tests build).
#[cfg(test)]
fn plain(stream: TcpStream) -> Socket {
    Socket::Plain(Rc::new(RefCell::new(stream)))
}

impl Socket {
    /// The principal of a TLS client's certificate (mTLS), `User:CN=…`.
    pub fn certificate_principal(&self) -> Option<String> {
        match self {
            Socket::Plain(_) => None,
            Socket::Tls(s) => s
                .borrow()
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .and_then(crate::security::tls::principal_of),
        }
    }

    pub fn fd(&self) -> i32 {
        match self {
            Socket::Plain(s) => s.borrow().as_raw_fd(),
            Socket::Tls(s) => s.borrow().get_ref().0.as_raw_fd(),
        }
    }

    /// Receives into `dst` without waiting; `None` if the socket has nothing.
    fn try_recv(&self, dst: &mut [MaybeUninit<u8>]) -> Option<io::Result<usize>> {
        // SAFETY: `dst` is valid for writes of `dst.len()` bytes; recv writes at most that
        // many and says how many.
        without_waiting(|| unsafe {
            libc::recv(
                self.fd(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                libc::MSG_DONTWAIT,
            )
        })
    }

    /// Reads into memory that need not be initialised; `Ok(0)` at the end of the stream.
    /// When the socket has nothing, glommio waits for it (reading one byte, if one came).
    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        if dst.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let plain = match self {
            Socket::Plain(plain) => plain,
            Socket::Tls(tls) => {
                let len = dst.len().min(TLS_READ_MAX);
                let dst = &mut dst[..len];
                for byte in dst.iter_mut() {
                    byte.write(0);
                }
                // SAFETY: every byte of `dst` was just initialised.
                let dst: &mut [u8] =
                    unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), len) };
                return Pin::new(&mut *tls.borrow_mut()).poll_read(cx, dst);
            }
        };
        if let Some(done) = self.try_recv(dst) {
            return Poll::Ready(done);
        }
        let mut one = [0u8; 1];
        match Pin::new(&mut *plain.borrow_mut()).poll_read(cx, &mut one) {
            Poll::Ready(Ok(1)) => {
                dst[0].write(one[0]);
                Poll::Ready(Ok(1))
            }
            other => other,
        }
    }

    /// Sends as much of `pieces` (the first from `offset` on) as the socket takes without
    /// waiting; `None` if it takes nothing now.
    fn try_send(&self, pieces: &[Piece], offset: usize) -> Option<io::Result<usize>> {
        let mut iov: [libc::iovec; IOVECS_PER_SEND] = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; IOVECS_PER_SEND];
        let count = pieces.len().min(IOVECS_PER_SEND);
        for (i, piece) in pieces[..count].iter().enumerate() {
            let bytes = if i == 0 { &piece[offset..] } else { &piece[..] };
            iov[i] = libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            };
        }
        // SAFETY: a zeroed msghdr is valid; it points at `count` iovecs, each describing
        // memory the pieces keep alive for the call; sendmsg only reads them.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = count as _;
        without_waiting(|| unsafe {
            libc::sendmsg(self.fd(), &msg, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        })
    }

    /// Writes from `pieces[0][offset..]` on: without waiting if the socket has room, else
    /// through glommio, which waits until it has. Never writes nothing unless an error says
    /// why.
    pub fn poll_send(
        &self,
        cx: &mut Context<'_>,
        pieces: &[Piece],
        offset: usize,
    ) -> Poll<io::Result<usize>> {
        match self {
            Socket::Plain(plain) => {
                if let Some(done) = self.try_send(pieces, offset) {
                    return Poll::Ready(done);
                }
                Pin::new(&mut *plain.borrow_mut()).poll_write(cx, &pieces[0][offset..])
            }
            Socket::Tls(tls) => {
                let mut tls = tls.borrow_mut();
                let mut iov = [io::IoSlice::new(&[]); IOVECS_PER_SEND];
                let count = pieces.len().min(IOVECS_PER_SEND);
                for (i, piece) in pieces[..count].iter().enumerate() {
                    iov[i] = io::IoSlice::new(if i == 0 { &piece[offset..] } else { &piece[..] });
                }
                Pin::new(&mut *tls).poll_write_vectored(cx, &iov[..count])
            }
        }
    }

    pub async fn send(&self, pieces: &[Piece], offset: usize) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_send(cx, pieces, offset)).await
    }

    pub fn is_tls(&self) -> bool {
        matches!(self, Socket::Tls(_))
    }

    /// Writes out what TLS still buffers (nothing to do on a plaintext socket, whose
    /// sends go straight to the kernel).
    pub async fn flush(&self) -> io::Result<()> {
        match self {
            Socket::Plain(_) => Ok(()),
            Socket::Tls(tls) => {
                std::future::poll_fn(|cx| Pin::new(&mut *tls.borrow_mut()).poll_flush(cx)).await
            }
        }
    }

    /// Closes the TLS session (a close_notify alert) before the socket is dropped.
    pub async fn close(&self) {
        if let Socket::Tls(tls) = self {
            let _ =
                std::future::poll_fn(|cx| Pin::new(&mut *tls.borrow_mut()).poll_close(cx)).await;
        }
    }
}

/// The reading side: a small buffer for length prefixes and small requests; large reads
/// go straight from the socket into the caller's memory.
pub struct Inbound {
    socket: Socket,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Inbound {
    pub fn new(socket: Socket) -> Self {
        Inbound {
            socket,
            buf: vec![0; READ_BUFFER_BYTES].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Reads some bytes into `dst` (which need not be initialised): from the buffer if it
    /// holds any, else straight from the socket when `dst` is at least as large as the
    /// buffer, else through the buffer. `Ok(0)` at the end of the stream. Cancel-safe:
    /// bytes are taken only when the read returns them.
    pub fn poll_read(
        &mut self,
        cx: &mut Context<'_>,
        dst: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        if self.start == self.end {
            if dst.len() >= self.buf.len() {
                return self.socket.poll_recv(cx, dst);
            }
            // SAFETY: `[u8]` and `[MaybeUninit<u8>]` have the same layout, and the buffer
            // is initialised memory, which stays initialised whatever recv writes.
            let buf: &mut [MaybeUninit<u8>] = unsafe {
                std::slice::from_raw_parts_mut(self.buf.as_mut_ptr().cast(), self.buf.len())
            };
            match self.socket.poll_recv(cx, buf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Ok(0)),
                Poll::Ready(Ok(n)) => {
                    self.start = 0;
                    self.end = n;
                }
                other => return other,
            }
        }
        let n = dst.len().min(self.end - self.start);
        for (to, from) in dst[..n]
            .iter_mut()
            .zip(&self.buf[self.start..self.start + n])
        {
            to.write(*from);
        }
        self.start += n;
        Poll::Ready(Ok(n))
    }

    /// [`Self::poll_read`] into initialised memory.
    pub async fn read(&mut self, dst: &mut [u8]) -> io::Result<usize> {
        // SAFETY: initialised memory may be seen as possibly-uninitialised; poll_read
        // writes only initialised bytes into it.
        let dst: &mut [MaybeUninit<u8>] =
            unsafe { std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast(), dst.len()) };
        std::future::poll_fn(|cx| self.poll_read(cx, dst)).await
    }

    /// Reads some bytes into the spare capacity of `frame` (up to `end` bytes in all), and
    /// grows its length by what was read.
    pub async fn read_into(&mut self, frame: &mut Vec<u8>, end: usize) -> io::Result<usize> {
        let len = frame.len();
        debug_assert!(end <= frame.capacity() && len < end);
        let spare = &mut frame.spare_capacity_mut()[..end - len];
        let n = std::future::poll_fn(|cx| self.poll_read(cx, spare)).await?;
        // SAFETY: poll_read initialised the first `n` spare bytes.
        unsafe { frame.set_len(len + n) };
        Ok(n)
    }
}

/// Runs a non-blocking socket call (its `-1`/errno convention), again if a signal
/// interrupted it: the byte count, `None` if the socket was not ready, or the error.
fn without_waiting(mut call: impl FnMut() -> isize) -> Option<io::Result<usize>> {
    loop {
        let n = call();
        if n >= 0 {
            return Some(Ok(n as usize));
        }
        let err = io::Error::last_os_error();
        match err.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return None,
            _ => return Some(Err(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame written in many small TCP segments is read whole, byte for byte, through the
    /// buffer and straight into the frame alike.
    #[test]
    fn reads_a_frame_sent_in_small_segments() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let payload: Vec<u8> = (0..200_000u32).map(|i| (i * 7) as u8).collect();
                let sent = payload.clone();
                let writer = std::thread::spawn(move || {
                    use std::io::Write;
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    s.set_nodelay(true).unwrap();
                    for chunk in sent.chunks(997) {
                        s.write_all(chunk).unwrap();
                        s.flush().unwrap();
                    }
                });
                let stream = listener.accept().await.unwrap();
                let mut inbound = Inbound::new(plain(stream));
                let mut head = [0u8; 10];
                let mut at = 0;
                while at < head.len() {
                    at += inbound.read(&mut head[at..]).await.unwrap();
                }
                let mut frame = Vec::with_capacity(payload.len() - head.len());
                while frame.len() < payload.len() - head.len() {
                    let end = payload.len() - head.len();
                    assert!(inbound.read_into(&mut frame, end).await.unwrap() > 0);
                }
                writer.join().unwrap();
                assert_eq!(&head[..], &payload[..10]);
                assert_eq!(&frame[..], &payload[10..]);
            })
            .unwrap()
            .join()
            .unwrap();
    }

    /// Pieces are written in order, whole, however the socket splits them.
    #[test]
    fn writes_pieces_in_order() {
        glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let listener = glommio::net::TcpListener::bind("127.0.0.1:0").unwrap();
                let addr = listener.local_addr().unwrap();
                let pieces: Vec<Piece> = (0..300u32)
                    .map(|i| {
                        let len = 1 + (i as usize * 7919) % 20_000;
                        Piece::from(bytes::Bytes::from(vec![i as u8; len]))
                    })
                    .collect();
                let expected = crate::protocol::pieces::concat(&pieces);
                let total = expected.len();
                let reader = std::thread::spawn(move || {
                    use std::io::Read;
                    let mut s = std::net::TcpStream::connect(addr).unwrap();
                    let mut got = vec![0u8; total];
                    // Read slowly at first, so the sender meets a full socket.
                    std::thread::sleep(std::time::Duration::from_millis(200));
                    s.read_exact(&mut got).unwrap();
                    got
                });
                let stream = listener.accept().await.unwrap();
                let socket = plain(stream);
                let (mut index, mut offset) = (0, 0);
                while index < pieces.len() {
                    let mut n = socket.send(&pieces[index..], offset).await.unwrap();
                    assert!(n > 0);
                    while n > 0 {
                        let left = pieces[index].len() - offset;
                        if n >= left {
                            n -= left;
                            index += 1;
                            offset = 0;
                        } else {
                            offset += n;
                            n = 0;
                        }
                    }
                }
                assert_eq!(reader.join().unwrap(), expected.to_vec());
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
