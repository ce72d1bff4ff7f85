//! Progress of long work on stderr: a bar redrawn in place on a terminal, a plain line
//! every second otherwise (logs, pipes, tests).

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// One task's progress, counted in leaves.
#[derive(Debug)]
pub struct Progress {
    label: &'static str,
    total: u64,
    tty: bool,
    last: Option<Instant>,
    drawn: bool,
}

impl Progress {
    /// Progress of `label` over `total` leaves.
    pub fn new(label: &'static str, total: u64) -> Progress {
        Progress { label, total, tty: std::io::stderr().is_terminal(), last: None, drawn: false }
    }

    /// `done` leaves so far; draws at most ten times a second (a line a second off a terminal).
    pub fn set(&mut self, done: u64) {
        let every = if self.tty { Duration::from_millis(100) } else { Duration::from_secs(1) };
        let now = Instant::now();
        match self.last {
            None => {
                self.last = Some(now);
                return;
            }
            Some(t) if now.duration_since(t) < every => return,
            Some(_) => self.last = Some(now),
        }
        self.draw(done);
    }

    fn draw(&mut self, done: u64) {
        let total = self.total.max(done);
        let mut err = std::io::stderr().lock();
        if self.tty {
            const WIDTH: u64 = 30;
            let filled = done.saturating_mul(WIDTH).checked_div(total).unwrap_or(WIDTH);
            let bar: String = (0..WIDTH).map(|i| if i < filled { '#' } else { '-' }).collect();
            let _ = write!(err, "\r{} [{bar}] {done}/{total} leaves", self.label);
            let _ = err.flush();
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{} {done} of {total} leaves", self.label);
        }
    }

    /// Ends the bar (a last line when anything was drawn).
    pub fn finish(&mut self, done: u64) {
        if self.tty && self.drawn {
            self.draw(done);
            let _ = writeln!(std::io::stderr());
        }
    }
}
