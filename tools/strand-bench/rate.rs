//! The open-loop send schedule.
//!
//! With a target rate, message `i` of a producer is *meant* to be sent at
//! `start + i / rate`, whatever happened to the messages before it. Latency is measured
//! from that intended time, so a broker that stalls is charged for every message that
//! should have gone out during the stall — not only for the one that was waiting — which
//! is what keeps the results free of coordinated omission. Without a rate the schedule is
//! closed-loop (as fast as the producer can go) and a message's intended time is the
//! moment it is created.

/// A producer's schedule; times are nanoseconds from the start of the run.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Messages per second; `None` for as fast as possible.
    rate: Option<f64>,
    /// Messages not to exceed.
    count_max: u64,
    /// No message is meant to be sent at or after this time.
    end_ns: u64,
    /// Index of the next message to hand out.
    next: u64,
}

impl Schedule {
    pub fn new(rate: Option<f64>, count_max: u64, end_ns: u64) -> Schedule {
        if let Some(rate) = rate {
            assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        }
        Schedule {
            rate,
            count_max,
            end_ns,
            next: 0,
        }
    }

    /// Messages handed out so far.
    #[cfg(test)]
    pub fn issued(&self) -> u64 {
        self.next
    }

    /// Intended send time of message `index`, if the schedule has a rate.
    pub fn intended_ns(&self, index: u64) -> Option<u64> {
        self.rate.map(|rate| (index as f64 * 1e9 / rate) as u64)
    }

    /// True once no more messages will be handed out at or after `now_ns`.
    pub fn is_done(&self, now_ns: u64) -> bool {
        if self.next >= self.count_max {
            return true;
        }
        match self.intended_ns(self.next) {
            Some(at) => at >= self.end_ns,
            None => now_ns >= self.end_ns,
        }
    }

    /// When the next message is due (`None` when done; `now_ns` in closed loop).
    pub fn next_due_ns(&self, now_ns: u64) -> Option<u64> {
        if self.is_done(now_ns) {
            return None;
        }
        Some(self.intended_ns(self.next).unwrap_or(now_ns))
    }

    /// Hands out up to `limit` messages due at `now_ns`, returning the intended send time
    /// of each (for a closed loop: `now_ns`) through `each`. Returns how many.
    pub fn take_due(&mut self, now_ns: u64, limit: u64, mut each: impl FnMut(u64)) -> u64 {
        let mut taken = 0;
        while taken < limit && !self.is_done(now_ns) {
            let at = self.intended_ns(self.next).unwrap_or(now_ns);
            if at > now_ns {
                break;
            }
            each(at);
            self.next += 1;
            taken += 1;
        }
        taken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000_000;

    #[test]
    fn open_loop_hands_out_what_is_due_and_never_drifts() {
        let mut s = Schedule::new(Some(10_000.0), u64::MAX, 10 * SECOND);
        let mut times = Vec::new();
        assert_eq!(s.take_due(0, u64::MAX, |t| times.push(t)), 1);
        assert_eq!(s.next_due_ns(0), Some(100_000));
        // Nothing is due before its time.
        assert_eq!(s.take_due(99_999, u64::MAX, |_| ()), 0);
        // A late wake-up hands out everything that fell due, each with its own time.
        assert_eq!(s.take_due(1_000_000, u64::MAX, |t| times.push(t)), 10);
        assert_eq!(times[1..4], [100_000, 200_000, 300_000]);
        assert_eq!(*times.last().unwrap(), 1_000_000);
        // After a long stall the schedule catches up: the count tracks elapsed time.
        s.take_due(SECOND, u64::MAX, |_| ());
        assert_eq!(s.issued(), 10_001);
    }

    #[test]
    fn limit_bounds_a_single_take() {
        let mut s = Schedule::new(Some(1000.0), u64::MAX, 10 * SECOND);
        assert_eq!(s.take_due(SECOND, 7, |_| ()), 7);
        assert_eq!(s.take_due(SECOND, u64::MAX, |_| ()), 1001 - 7);
    }

    #[test]
    fn count_and_duration_end_the_schedule() {
        let mut by_count = Schedule::new(Some(1000.0), 5, u64::MAX);
        assert_eq!(by_count.take_due(SECOND, u64::MAX, |_| ()), 5);
        assert!(by_count.is_done(SECOND));
        assert_eq!(by_count.next_due_ns(SECOND), None);

        let mut by_time = Schedule::new(Some(1000.0), u64::MAX, SECOND / 10);
        assert_eq!(by_time.take_due(10 * SECOND, u64::MAX, |_| ()), 100);
        assert!(by_time.is_done(0));
    }

    #[test]
    fn closed_loop_stamps_now_and_stops_at_the_deadline() {
        let mut s = Schedule::new(None, 1_000, SECOND);
        let mut times = Vec::new();
        assert_eq!(s.take_due(500, 3, |t| times.push(t)), 3);
        assert_eq!(times, [500, 500, 500]);
        assert_eq!(s.next_due_ns(700), Some(700));
        assert_eq!(s.take_due(SECOND, 10, |_| ()), 0);
        assert!(s.is_done(SECOND));
    }
}
