//! A progress bar on stderr for long commands, drawn only when stderr is a terminal, so logs
//! and pipes get no control characters.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws at most this often.
const REDRAW: Duration = Duration::from_millis(100);
const WIDTH: usize = 30;

pub struct Progress {
    what: &'static str,
    total: u64,
    done: u64,
    drawn: Option<Instant>,
    terminal: bool,
}

impl Progress {
    /// A bar counting `total` units named `what` (e.g. "spans").
    pub fn new(what: &'static str, total: u64) -> Self {
        Self {
            what,
            total,
            done: 0,
            drawn: None,
            terminal: std::io::stderr().is_terminal(),
        }
    }

    pub fn advance(&mut self, units: u64) {
        self.done += units;
        if self.drawn.is_none_or(|at| at.elapsed() >= REDRAW) {
            self.draw();
        }
    }

    /// Draws the final state and ends the line.
    pub fn finish(mut self) {
        self.draw();
        if self.terminal {
            eprintln!();
        }
    }

    fn draw(&mut self) {
        self.drawn = Some(Instant::now());
        if !self.terminal {
            return;
        }
        let fraction = if self.total == 0 {
            1.0
        } else {
            (self.done as f64 / self.total as f64).min(1.0)
        };
        let filled = (fraction * WIDTH as f64) as usize;
        let mut stderr = std::io::stderr().lock();
        let _ = write!(
            stderr,
            "\r[{}{}] {:>3.0}% {}/{} {}",
            "#".repeat(filled),
            " ".repeat(WIDTH - filled),
            fraction * 100.0,
            self.done,
            self.total,
            self.what
        );
        let _ = stderr.flush();
    }
}
