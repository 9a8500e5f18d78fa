//! The shard's memory budget for requests in flight (`--queued-max-request-bytes`, after
//! Kafka's `queued.max.request.bytes`): every byte of a request frame, from the moment it
//! is read until its handler has answered, is reserved here, across all the shard's
//! connections.
//!
//! Per-connection limits alone do not bound a shard: thousands of connections, each within
//! its own limits, together hold what they like. So a frame reserves from this budget as
//! its bytes arrive (a length prefix alone reserves only a small first chunk) and a
//! connection that cannot reserve stops reading — the client meets TCP back-pressure, the
//! broker allocates nothing. A frame larger than the whole budget can never fit and is
//! refused by the reader.
//!
//! Frames that wait on each other cannot deadlock: when the budget is full, the oldest
//! waiting frame may go past it, one frame at a time (the overdraft is held until that
//! request is done). So the memory held is at most the budget plus one frame, and the
//! oldest waiter always makes progress while its client sends.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use crate::util::Notify;

/// One shard's budget; shared (`Rc`) by its connections, used only on its thread.
pub struct RequestBudget {
    capacity_bytes: usize,
    used_bytes: Cell<usize>,
    next_frame: Cell<u64>,
    /// Frames waiting to reserve, by age (ids are handed out in order of first byte).
    waiting: RefCell<BTreeSet<u64>>,
    /// The one frame allowed past the budget, until its reservation is released.
    overdrawn_by: Cell<Option<u64>>,
    /// Bytes were released or a waiter left: waiters check again.
    changed: Notify,
}

/// The bytes one frame holds; released when dropped (the request is done, or the frame
/// was abandoned half way).
pub struct Reservation {
    budget: Rc<RequestBudget>,
    frame: u64,
    bytes: usize,
}

impl RequestBudget {
    pub fn new(capacity_bytes: usize) -> Rc<RequestBudget> {
        Rc::new(RequestBudget {
            capacity_bytes,
            used_bytes: Cell::new(0),
            next_frame: Cell::new(0),
            waiting: RefCell::new(BTreeSet::new()),
            overdrawn_by: Cell::new(None),
            changed: Notify::default(),
        })
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Bytes reserved now.
    pub fn used_bytes(&self) -> usize {
        self.used_bytes.get()
    }

    /// An empty reservation for a frame whose first byte just arrived.
    pub fn start_frame(self: &Rc<Self>) -> Reservation {
        let frame = self.next_frame.get();
        self.next_frame.set(frame + 1);
        Reservation {
            budget: self.clone(),
            frame,
            bytes: 0,
        }
    }

    /// Reserves `bytes` more for `held` if the budget allows it now.
    fn try_grow(&self, held: &mut Reservation, bytes: usize) -> bool {
        let fits = self.used_bytes.get() + bytes <= self.capacity_bytes;
        let may_overdraw = match self.overdrawn_by.get() {
            Some(frame) => frame == held.frame,
            None => self
                .waiting
                .borrow()
                .first()
                .is_none_or(|&oldest| oldest >= held.frame),
        };
        if !fits && !may_overdraw {
            return false;
        }
        if !fits {
            self.overdrawn_by.set(Some(held.frame));
        }
        self.used_bytes.set(self.used_bytes.get() + bytes);
        held.bytes += bytes;
        true
    }

    /// Reserves `bytes` more for `held`, waiting while the budget is full. Dropping the
    /// future while it waits leaves the budget as it was.
    pub async fn grow(&self, held: &mut Reservation, bytes: usize) {
        if self.try_grow(held, bytes) {
            return;
        }
        let _in_line = InLine::join(self, held.frame);
        loop {
            let seen = self.changed.generation();
            if self.try_grow(held, bytes) {
                return;
            }
            self.changed.wait(seen).await;
        }
    }
}

/// A frame's place among the waiters; leaving (served or abandoned) lets the next one check.
struct InLine<'a> {
    budget: &'a RequestBudget,
    frame: u64,
}

impl<'a> InLine<'a> {
    fn join(budget: &'a RequestBudget, frame: u64) -> Self {
        budget.waiting.borrow_mut().insert(frame);
        InLine { budget, frame }
    }
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        self.budget.waiting.borrow_mut().remove(&self.frame);
        self.budget.changed.notify_all();
    }
}

impl Reservation {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let budget = &self.budget;
        debug_assert!(budget.used_bytes.get() >= self.bytes);
        budget.used_bytes.set(budget.used_bytes.get() - self.bytes);
        if budget.overdrawn_by.get() == Some(self.frame) {
            budget.overdrawn_by.set(None);
        }
        budget.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll};

    use crate::util::noop_waker;

    fn ready<F: Future>(fut: F) -> bool {
        let waker = noop_waker();
        let mut cx = Context::from_waker(&waker);
        matches!(pin!(fut).poll(&mut cx), Poll::Ready(_))
    }

    #[test]
    fn reservations_are_released_when_dropped() {
        let budget = RequestBudget::new(100);
        let mut a = budget.start_frame();
        assert!(ready(budget.grow(&mut a, 60)));
        assert!(ready(budget.grow(&mut a, 40)));
        assert_eq!(budget.used_bytes(), 100);
        drop(a);
        assert_eq!(budget.used_bytes(), 0);
    }

    #[test]
    fn a_full_budget_lets_only_the_oldest_waiter_past_it_one_frame_at_a_time() {
        let budget = RequestBudget::new(100);
        let mut held = budget.start_frame();
        assert!(budget.try_grow(&mut held, 100));
        let mut older = budget.start_frame();
        let mut younger = budget.start_frame();
        // The younger frame waits; the older one is not waiting yet, but it is older.
        let _line = InLine::join(&budget, younger.frame);
        assert!(budget.try_grow(&mut older, 10), "the oldest may overdraw");
        assert!(
            !budget.try_grow(&mut younger, 10),
            "only one frame overdraws"
        );
        assert!(budget.try_grow(&mut older, 10), "the owner keeps growing");
        assert_eq!(budget.used_bytes(), 120);
        drop(older);
        assert!(budget.try_grow(&mut younger, 10), "overdraft freed");
        assert!(budget.used_bytes() <= budget.capacity_bytes() + younger.bytes());
    }

    #[test]
    fn a_younger_frame_does_not_overdraw_ahead_of_an_older_waiter() {
        let budget = RequestBudget::new(10);
        let mut full = budget.start_frame();
        assert!(budget.try_grow(&mut full, 10));
        let older = budget.start_frame();
        let mut younger = budget.start_frame();
        let _line = InLine::join(&budget, older.frame);
        assert!(!budget.try_grow(&mut younger, 1));
        drop(full);
        assert!(budget.try_grow(&mut younger, 1), "it fits again");
    }

    #[test]
    fn an_abandoned_wait_leaves_nothing_behind() {
        let budget = RequestBudget::new(10);
        let mut full = budget.start_frame();
        assert!(budget.try_grow(&mut full, 10));
        let mut a = budget.start_frame();
        let mut b = budget.start_frame();
        // `a` overdraws; `b` must wait, and gives up.
        assert!(ready(budget.grow(&mut a, 5)));
        assert!(!ready(budget.grow(&mut b, 5)));
        assert!(budget.waiting.borrow().is_empty());
        drop(b);
        drop(a);
        drop(full);
        assert_eq!(budget.used_bytes(), 0);
        assert_eq!(budget.overdrawn_by.get(), None);
    }
}
