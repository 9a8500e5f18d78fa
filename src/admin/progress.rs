//! A progress line on stderr for the commands that can run long (`produce`, `consume -c N`,
//! `group reset-offsets --execute`): shown only on a terminal, rewritten in place with a
//! carriage return, cleared when the command ends. Piped or redirected, stderr gets nothing
//! extra, so scripts see the same output as ever.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Least time between two redraws.
const REDRAW: Duration = Duration::from_millis(250);

/// The progress line of one command.
pub struct Progress {
    enabled: bool,
    /// When the line was last drawn; `None` while nothing is on screen.
    drawn: Option<Instant>,
}

impl Progress {
    /// Shows progress if `enabled`, whatever stderr is (tests).
    pub fn new(enabled: bool) -> Progress {
        Progress {
            enabled,
            drawn: None,
        }
    }

    /// Shows progress when stderr is a terminal and the command is not `--quiet`.
    pub fn on_terminal(quiet: bool) -> Progress {
        Progress::new(!quiet && std::io::stderr().is_terminal())
    }

    /// Draws `text()` unless the line was drawn less than a moment ago (`text` is not
    /// called then).
    pub fn update(&mut self, text: impl FnOnce() -> String) {
        if !self.enabled || self.drawn.is_some_and(|at| at.elapsed() < REDRAW) {
            return;
        }
        self.draw(&text());
    }

    /// Draws `text` now.
    pub fn show(&mut self, text: &str) {
        if self.enabled {
            self.draw(text);
        }
    }

    fn draw(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(redraw(text).as_bytes());
        let _ = err.flush();
        self.drawn = Some(Instant::now());
    }

    /// Removes the line, so what is printed next starts on a clean line.
    pub fn clear(&mut self) {
        if self.drawn.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = err.write_all(CLEAR.as_bytes());
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    /// An error or an early return leaves no half line behind.
    fn drop(&mut self) {
        self.clear();
    }
}

/// Back to the start of the line and erase it.
pub const CLEAR: &str = "\r\x1b[K";

/// The bytes that replace the line on screen with `text`: carriage return, the text, then
/// erase what a longer previous text left to its right.
pub fn redraw(text: &str) -> String {
    format!("\r{text}\x1b[K")
}

/// `done` of `total` things so far: `1234/5000 records consumed (24%)`, or
/// `1234 records consumed` when the total is unknown.
pub fn counted(done: u64, total: Option<u64>, what: &str) -> String {
    match total {
        Some(total) if total > 0 => {
            let percent = (done.min(total) as u128 * 100 / total as u128) as u64;
            format!("{done}/{total} {what} ({percent}%)")
        }
        _ => format!("{done} {what}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_redrawn_in_place_and_cleared() {
        assert_eq!(redraw("3 records written"), "\r3 records written\x1b[K");
        assert_eq!(CLEAR, "\r\x1b[K");
        assert_eq!(
            counted(1234, Some(5000), "records consumed"),
            "1234/5000 records consumed (24%)"
        );
        assert_eq!(counted(7, Some(7), "offsets"), "7/7 offsets (100%)");
        assert_eq!(counted(0, Some(0), "offsets"), "0 offsets");
        assert_eq!(counted(42, None, "records written"), "42 records written");
        // Past the total (a count reached in the middle of a batch): never above 100%.
        assert_eq!(counted(9, Some(8), "records"), "9/8 records (100%)");
    }

    #[test]
    fn disabled_progress_draws_nothing() {
        let mut progress = Progress::new(false);
        progress.update(|| panic!("text asked for while disabled"));
        progress.show("x");
        assert!(progress.drawn.is_none());
        progress.clear();
    }
}
