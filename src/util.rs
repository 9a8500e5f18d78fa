//! Small single-threaded primitives shared by the shard's tasks.
//!
//! Everything here lives inside one shard (one thread), so the primitives use `Cell` and
//! `RefCell` rather than atomics or locks. [`Notify`] is how one event (a flush cycle
//! completing, data becoming visible) wakes many waiters at once: one wake-up for many
//! produce acks or long-polling fetches, instead of a timer loop per waiter.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// A generation counter with the wakers of its current waiters. A waiter records the
/// generation it has seen, checks its condition, then waits for the generation to move; no
/// notification between the check and the wait can be lost.
///
/// Each [`NotifyWait`] holds at most one registered waker, replaced in place when it is
/// polled again and removed when it is dropped, so a task that waits in a loop (say, for
/// shutdown while reading requests) or gives up on a timeout leaves nothing behind: the
/// waiter list is bounded by the waits in progress.
#[derive(Default)]
pub struct Notify {
    generation: Cell<u64>,
    next_key: Cell<u64>,
    waiters: RefCell<HashMap<u64, Waker>>,
}

impl Notify {
    pub fn generation(&self) -> u64 {
        self.generation.get()
    }

    /// Wakes every current waiter.
    pub fn notify_all(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for (_, waker) in waiters {
            waker.wake();
        }
    }

    /// Resolves once the generation differs from `seen`.
    pub fn wait(&self, seen: u64) -> NotifyWait<'_> {
        NotifyWait {
            notify: self,
            seen,
            key: None,
        }
    }

    /// Wakers registered now (for tests and metrics).
    pub fn waiter_count(&self) -> usize {
        self.waiters.borrow().len()
    }
}

pub struct NotifyWait<'a> {
    notify: &'a Notify,
    seen: u64,
    key: Option<u64>,
}

impl Future for NotifyWait<'_> {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.notify.generation.get() != self.seen {
            if let Some(key) = self.key.take() {
                self.notify.waiters.borrow_mut().remove(&key);
            }
            return Poll::Ready(());
        }
        let notify = self.notify;
        let mut waiters = notify.waiters.borrow_mut();
        match self.key.and_then(|key| waiters.get_mut(&key)) {
            Some(waker) => {
                if !waker.will_wake(cx.waker()) {
                    *waker = cx.waker().clone();
                }
            }
            None => {
                let key = notify.next_key.get();
                notify.next_key.set(key.wrapping_add(1));
                waiters.insert(key, cx.waker().clone());
                drop(waiters);
                self.key = Some(key);
            }
        }
        Poll::Pending
    }
}

impl Drop for NotifyWait<'_> {
    fn drop(&mut self) {
        if let Some(key) = self.key {
            self.notify.waiters.borrow_mut().remove(&key);
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{RawWaker, RawWakerVTable};

    fn noop_waker() -> Waker {
        const VTABLE: RawWakerVTable = RawWakerVTable::new(
            |_| RawWaker::new(std::ptr::null(), &VTABLE),
            |_| {},
            |_| {},
            |_| {},
        );
        // SAFETY: the vtable's functions do nothing with the null data pointer.
        unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
    }

    #[test]
    fn waits_in_a_loop_leave_no_waker_behind() {
        let notify = Notify::default();
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        // A task that waits, is polled again and again, then gives up (a timeout), many
        // times over: the list holds at most the one live wait.
        for _ in 0..100_000 {
            let mut wait = notify.wait(notify.generation());
            for _ in 0..3 {
                assert!(Pin::new(&mut wait).poll(&mut cx).is_pending());
            }
            assert_eq!(notify.waiter_count(), 1);
        }
        assert_eq!(notify.waiter_count(), 0);
        // A notification wakes and clears the live waits.
        let mut a = notify.wait(notify.generation());
        let mut b = notify.wait(notify.generation());
        assert!(Pin::new(&mut a).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut b).poll(&mut cx).is_pending());
        notify.notify_all();
        assert_eq!(notify.waiter_count(), 0);
        assert!(Pin::new(&mut a).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut b).poll(&mut cx).is_ready());
    }
}
