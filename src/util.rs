//! Small single-threaded primitives shared by the shard's tasks.
//!
//! Everything here lives inside one shard (one thread), so the primitives use `Cell` and
//! `RefCell` rather than atomics or locks. [`Notify`] is how one event (a flush cycle
//! completing, data becoming visible) wakes many waiters at once: one wake-up for many
//! produce acks or long-polling fetches, instead of a timer loop per waiter.
//!
//! Also here: what keeps the log readable when clients send garbage. [`one_line`] makes
//! any text (a decoder's message, a client's string) safe inside one log line, and
//! [`client_log_verdict`] rate-limits the lines about one client on a shard, so a client
//! that reconnects and misbehaves in a loop cannot flood the log.
//!
//! [`raft_log`]: the `slog` logger raft-rs is given, which forwards to `tracing`.

pub mod raft_log;

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

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

/// `text` as one log line: line breaks and other control characters escaped (`\n`,
/// `\r`, `\t`, `\u{1b}`), trailing whitespace dropped. Some decoder errors end in a
/// newline (kafka-protocol's "Not enough bytes remaining in buffer!"), and client strings
/// can hold anything; a log line must stay one line so that a line is one event.
pub fn one_line(text: &str) -> Cow<'_, str> {
    let text = text.trim_end();
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Lines about one client a shard logs per [`CLIENT_LOG_INTERVAL_MS`]; more are counted
/// and reported in one line when the next interval begins.
pub const CLIENT_LOG_LINES_MAX: u32 = 10;
pub const CLIENT_LOG_INTERVAL_MS: u64 = 10_000;
/// Clients a shard's limiter keeps count of; past it, the clients it cannot track share
/// one allowance (so the table, and the log, stay bounded under many source addresses).
pub const CLIENT_LOG_CLIENTS_MAX: usize = 1024;
/// The key shared by clients the limiter has no room for.
pub const CLIENT_LOG_OVERFLOW_KEY: &str = "(other clients)";

/// What to do with one more log line about a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogVerdict {
    /// Log it. `suppressed_before` lines about this client were dropped in its previous
    /// interval (say so first); `last`: it is the last one this interval (say so in it).
    Log { suppressed_before: u64, last: bool },
    /// Drop it (it is counted).
    Suppress,
}

/// At most `lines_max` lines per client per `interval`, for a bounded number of clients.
/// Single-threaded: one per shard.
pub struct LogLimiter {
    lines_max: u32,
    interval: Duration,
    clients_max: usize,
    clients: HashMap<String, LogWindow>,
}

struct LogWindow {
    start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogLimiter {
    pub fn new(lines_max: u32, interval: Duration, clients_max: usize) -> LogLimiter {
        assert!(lines_max > 0 && clients_max > 0);
        LogLimiter {
            lines_max,
            interval,
            clients_max,
            clients: HashMap::new(),
        }
    }

    pub fn check(&mut self, client: &str, now: Instant) -> LogVerdict {
        let mut key = client;
        if !self.clients.contains_key(key) && self.clients.len() >= self.clients_max {
            // Forget clients whose interval is over (and what they had suppressed); if
            // every one is still active, the newcomer shares the overflow allowance.
            let interval = self.interval;
            self.clients
                .retain(|_, w| now.saturating_duration_since(w.start) < interval);
            if self.clients.len() >= self.clients_max {
                key = CLIENT_LOG_OVERFLOW_KEY;
            }
        }
        let window = self
            .clients
            .entry(key.to_string())
            .or_insert_with(|| LogWindow {
                start: now,
                logged: 0,
                suppressed: 0,
            });
        let mut suppressed_before = 0;
        if now.saturating_duration_since(window.start) >= self.interval {
            suppressed_before = std::mem::take(&mut window.suppressed);
            window.start = now;
            window.logged = 0;
        }
        if window.logged >= self.lines_max {
            window.suppressed += 1;
            return LogVerdict::Suppress;
        }
        window.logged += 1;
        LogVerdict::Log {
            suppressed_before,
            last: window.logged == self.lines_max,
        }
    }

    #[cfg(test)]
    fn clients(&self) -> usize {
        self.clients.len()
    }
}

thread_local! {
    /// This shard's limiter (a shard is one thread).
    static CLIENT_LOG: RefCell<LogLimiter> = RefCell::new(LogLimiter::new(
        CLIENT_LOG_LINES_MAX,
        Duration::from_millis(CLIENT_LOG_INTERVAL_MS),
        CLIENT_LOG_CLIENTS_MAX,
    ));
}

/// Logs one warning about `client` (its host address) through this shard's limiter:
/// `emit` writes the line, given a suffix to append (non-empty on the last line allowed
/// this interval), and is not called when the line is suppressed; a line counting what was
/// suppressed comes first when there was some.
pub fn warn_about_client(client: &str, emit: impl FnOnce(&str)) {
    let LogVerdict::Log {
        suppressed_before,
        last,
    } = client_log_verdict(client)
    else {
        return;
    };
    if suppressed_before > 0 {
        tracing::warn!(
            client,
            "suppressed {suppressed_before} similar lines about this client (at most {CLIENT_LOG_LINES_MAX} per {CLIENT_LOG_INTERVAL_MS} ms are logged)"
        );
    }
    emit(if last {
        " (further lines about this client suppressed for the rest of the interval)"
    } else {
        ""
    });
}

/// Whether this shard logs one more warning about `client` (its host address): see
/// [`LogLimiter`] and the `CLIENT_LOG_*` limits.
pub fn client_log_verdict(client: &str) -> LogVerdict {
    CLIENT_LOG.with(|limiter| limiter.borrow_mut().check(client, Instant::now()))
}

/// A waker that does nothing, for unit tests that poll futures by hand.
#[cfg(test)]
pub(crate) fn noop_waker() -> Waker {
    use std::task::{RawWaker, RawWakerVTable};
    const VTABLE: RawWakerVTable = RawWakerVTable::new(
        |_| RawWaker::new(std::ptr::null(), &VTABLE),
        |_| {},
        |_| {},
        |_| {},
    );
    // SAFETY: the vtable's functions do nothing with the null data pointer.
    unsafe { Waker::from_raw(RawWaker::new(std::ptr::null(), &VTABLE)) }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn one_line_escapes_breaks_and_drops_trailing_newlines() {
        assert_eq!(
            one_line("cannot decode: Not enough bytes remaining in buffer!\n"),
            "cannot decode: Not enough bytes remaining in buffer!"
        );
        assert_eq!(one_line("a\nb\r\tc\u{1b}[31m"), "a\\nb\\r\\tc\\u{1b}[31m");
        assert!(matches!(
            one_line("plain text"),
            Cow::Borrowed("plain text")
        ));
        assert_eq!(one_line("groupé"), "groupé");
    }

    #[test]
    fn log_limiter_allows_n_lines_per_client_per_interval_then_reports_the_rest() {
        let interval = Duration::from_secs(10);
        let mut limiter = LogLimiter::new(3, interval, 8);
        let t0 = Instant::now();
        let log = |suppressed_before, last| LogVerdict::Log {
            suppressed_before,
            last,
        };
        assert_eq!(limiter.check("a", t0), log(0, false));
        assert_eq!(limiter.check("a", t0), log(0, false));
        assert_eq!(limiter.check("a", t0), log(0, true));
        for _ in 0..5 {
            assert_eq!(limiter.check("a", t0), LogVerdict::Suppress);
        }
        // Another client has its own allowance.
        assert_eq!(limiter.check("b", t0), log(0, false));
        // Just before the interval ends: still suppressed.
        let almost = t0 + interval - Duration::from_millis(1);
        assert_eq!(limiter.check("a", almost), LogVerdict::Suppress);
        // The next interval reports the six suppressed lines with its first line.
        assert_eq!(limiter.check("a", t0 + interval), log(6, false));
        assert_eq!(limiter.check("a", t0 + interval), log(0, false));
    }

    #[test]
    fn log_limiter_table_is_bounded() {
        let interval = Duration::from_secs(10);
        let mut limiter = LogLimiter::new(2, interval, 4);
        let t0 = Instant::now();
        for k in 0..4 {
            limiter.check(&format!("c{k}"), t0);
        }
        // The table is full of active clients: newcomers share one allowance.
        let shared: Vec<_> = (4..10)
            .map(|k| limiter.check(&format!("c{k}"), t0))
            .collect();
        assert_eq!(
            shared
                .iter()
                .filter(|v| matches!(v, LogVerdict::Log { .. }))
                .count(),
            2
        );
        assert!(limiter.clients() <= 5);
        // Once their intervals are over, old clients make room for new ones.
        let later = t0 + interval;
        for k in 10..14 {
            assert!(matches!(
                limiter.check(&format!("c{k}"), later),
                LogVerdict::Log { .. }
            ));
        }
        assert!(limiter.clients() <= 5);
        for k in 0..10_000 {
            limiter.check(&format!("x{k}"), later);
        }
        assert!(limiter.clients() <= 5);
    }
}
