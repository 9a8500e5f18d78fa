//! Small single-threaded primitives shared by the shard's tasks.
//!
//! Everything here lives inside one shard (one thread), so the primitives use `Cell` and
//! `RefCell` rather than atomics or locks. [`Notify`] is how one event (a flush cycle
//! completing, data becoming visible) wakes many waiters at once: one wake-up for many
//! produce acks or long-polling fetches, instead of a timer loop per waiter.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A generation counter with a list of wakers. A waiter records the generation it has seen,
/// checks its condition, then waits for the generation to move; no notification between
/// the check and the wait can be lost.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    waiters: RefCell<Vec<Waker>>,
}

impl Notify {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Wakes every current waiter.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Resolves once the generation differs from `seen`.
    pub fn wait(&self, seen: u64) -> NotifyWait<'_> {
        NotifyWait { notify: self, seen }
    }
}

pub struct NotifyWait<'a> {
    notify: &'a Notify,
    seen: u64,
}

impl Future for NotifyWait<'_> {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen {
            return Poll::Ready(());
        }
        self.notify.waiters.borrow_mut().push(cx.waker().clone());
        Poll::Pending
    }
}

/// Runs `fut` for at most `limit`; `None` when the limit passed first.
pub async fn timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    futures_lite::future::or(async { Some(fut.await) }, async {
        glommio::timer::sleep(limit).await;
        None
    })
    .await
}

/// Milliseconds since the Unix epoch (Kafka's timestamp unit).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
