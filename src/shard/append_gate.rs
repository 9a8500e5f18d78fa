//! The append gate of one partition: keeps produce appends in arrival order when one of
//! them must wait before appending.
//!
//! A produce normally appends synchronously, before its handler's first `.await` (see
//! [`crate::server`] on ordering). Two checks cannot: verifying a transactional batch with
//! a transaction coordinator on another shard (KIP-890), and reading the keys of a large
//! compressed batch for a compacted topic off the event loop. Such a produce takes a
//! ticket — synchronously, in arrival order — and appends when its turn comes; while any
//! ticket is out, later produces to the partition take tickets too instead of appending at
//! once, so no later append overtakes a waiting one. Every ticket of a request is taken
//! before the request awaits anything, so tickets on different partitions are ordered the
//! same way and no two requests wait for each other.
//!
//! The gate also counts the transaction markers written to the partition: a verification
//! answered by a remote coordinator is stale if a marker landed while it was in flight.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use crate::util::Notify;

#[derive(Default)]
pub struct AppendGate {
    /// The next ticket to hand out.
    next: Cell<u64>,
    /// The ticket whose turn it is (== `next` when no ticket is out).
    serving: Cell<u64>,
    /// Tickets dropped before their turn came.
    released: RefCell<BTreeSet<u64>>,
    turn: Notify,
    /// Transaction markers written to the partition.
    markers: Cell<u64>,
    /// Tickets handed out since start (for tests and metrics).
    tickets_total: Cell<u64>,
}

impl AppendGate {
    /// No ticket is out: an append may go ahead at once.
    pub fn is_idle(&self) -> bool {
        self.next.get() == self.serving.get()
    }

    /// A place in the queue; appends behind it wait until it is dropped.
    pub fn ticket(self: &Rc<Self>) -> Ticket {
        let number = self.next.get();
        self.next.set(number + 1);
        self.tickets_total.set(self.tickets_total.get() + 1);
        Ticket {
            gate: self.clone(),
            number,
        }
    }

    pub fn tickets_out(&self) -> u64 {
        self.next.get() - self.serving.get()
    }

    pub fn tickets_total(&self) -> u64 {
        self.tickets_total.get()
    }

    pub fn marker_written(&self) {
        self.markers.set(self.markers.get() + 1);
    }

    pub fn markers_written(&self) -> u64 {
        self.markers.get()
    }
}

/// A place in a partition's append queue.
pub struct Ticket {
    gate: Rc<AppendGate>,
    number: u64,
}

impl Ticket {
    /// Resolves when every ticket taken before this one has been dropped.
    pub async fn turn(&self) {
        loop {
            let seen = self.gate.turn.generation();
            if self.gate.serving.get() == self.number {
                return;
            }
            self.gate.turn.wait(seen).await;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let gate = &self.gate;
        let mut released = gate.released.borrow_mut();
        released.insert(self.number);
        let mut serving = gate.serving.get();
        while released.remove(&serving) {
            serving += 1;
        }
        drop(released);
        gate.serving.set(serving);
        gate.turn.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_are_served_in_order_whatever_order_they_drop_in() {
        let gate = Rc::new(AppendGate::default());
        assert!(gate.is_idle());
        let a = gate.ticket();
        let b = gate.ticket();
        let c = gate.ticket();
        assert_eq!(gate.tickets_out(), 3);
        assert_eq!(gate.serving.get(), a.number);
        // b gives up first (its request was cancelled): a still holds the head.
        drop(b);
        assert_eq!(gate.serving.get(), a.number);
        drop(a);
        assert_eq!(gate.serving.get(), c.number);
        drop(c);
        assert!(gate.is_idle());
        assert!(gate.released.borrow().is_empty());
        assert_eq!(gate.tickets_total(), 3);
    }
}
