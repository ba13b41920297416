//! The import's progress line on stderr: redrawn in place on a terminal, one line every few seconds
//! otherwise (a log file or CI output should not get a line per redraw).

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Counts at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Counts {
    pub total: usize,
    /// Entries the service took (new jobs or replayed ones) or refused.
    pub submitted: usize,
    pub succeeded: usize,
    pub failed: usize,
}

impl Counts {
    pub fn ended(&self) -> usize {
        self.succeeded + self.failed
    }
}

/// The rate is measured over this much recent time, so a resumed run (whose first thousands of
/// entries replay at once) soon shows the real pace.
const RATE_WINDOW: Duration = Duration::from_secs(30);

pub struct Progress {
    tty: bool,
    /// Whether jobs are followed to their end (the rate and ETA then count ended entries).
    waiting: bool,
    every: Duration,
    started: Instant,
    last_draw: Option<Instant>,
    samples: VecDeque<(Instant, usize)>,
    width: usize,
}

impl Progress {
    pub fn new(waiting: bool) -> Self {
        let tty = std::io::stderr().is_terminal();
        Progress {
            tty,
            waiting,
            every: if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            },
            started: Instant::now(),
            last_draw: None,
            samples: VecDeque::new(),
            width: 0,
        }
    }

    /// Records the counts and redraws when it is time to.
    pub fn update(&mut self, counts: Counts) {
        let now = Instant::now();
        self.samples.push_back((now, self.done(&counts)));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > RATE_WINDOW)
        {
            self.samples.pop_front();
        }
        if self
            .last_draw
            .is_none_or(|t| now.duration_since(t) >= self.every)
        {
            self.draw(counts);
        }
    }

    /// The last line, drawn whatever the time, and the end of the redrawn line.
    pub fn finish(&mut self, counts: Counts) {
        self.draw(counts);
        if self.tty {
            eprintln!();
        }
    }

    fn done(&self, counts: &Counts) -> usize {
        if self.waiting {
            counts.ended()
        } else {
            counts.submitted
        }
    }

    fn draw(&mut self, counts: Counts) {
        let rate = self.rate();
        let line = line(counts, self.waiting, rate, self.started.elapsed());
        let mut err = std::io::stderr().lock();
        if self.tty {
            // Pad over the rest of a longer previous line.
            let pad = self.width.saturating_sub(line.chars().count());
            let _ = write!(err, "\r{line}{}", " ".repeat(pad));
            self.width = line.chars().count();
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
        self.last_draw = Some(Instant::now());
    }

    /// Entries per second over the recent window.
    fn rate(&self) -> Option<f64> {
        let (t0, n0) = self.samples.front()?;
        let (t1, n1) = self.samples.back()?;
        let secs = t1.duration_since(*t0).as_secs_f64();
        (secs >= 1.0).then(|| (n1 - n0) as f64 / secs)
    }
}

/// `import: 1200/5000 submitted, 900 succeeded, 3 failed, 14.2/s, ETA 4m27s`
pub fn line(counts: Counts, waiting: bool, rate: Option<f64>, elapsed: Duration) -> String {
    let mut out = format!("import: {}/{} submitted", counts.submitted, counts.total);
    if waiting {
        out += &format!(", {} succeeded, {} failed", counts.succeeded, counts.failed);
    }
    let done = if waiting {
        counts.ended()
    } else {
        counts.submitted
    };
    match rate {
        Some(r) => {
            out += &format!(", {r:.1}/s");
            if done < counts.total && r > 0.0 {
                out += &format!(", ETA {}", clock((counts.total - done) as f64 / r));
            } else if done < counts.total {
                out += ", ETA –";
            }
        }
        None => out += ", –/s",
    }
    out + &format!(", {}", clock(elapsed.as_secs_f64()))
}

/// `42s`, `4m27s`, `2h03m`.
pub fn clock(secs: f64) -> String {
    let s = secs.round().max(0.0) as u64;
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_counts_rate_and_time_left() {
        let counts = Counts {
            total: 5000,
            submitted: 1200,
            succeeded: 900,
            failed: 3,
        };
        assert_eq!(
            line(counts, true, Some(14.2), Duration::from_secs(61)),
            "import: 1200/5000 submitted, 900 succeeded, 3 failed, 14.2/s, ETA 4m49s, 1m01s"
        );
        // Without waiting, the rate and ETA are about submitting.
        assert_eq!(
            line(counts, false, Some(100.0), Duration::from_secs(12)),
            "import: 1200/5000 submitted, 100.0/s, ETA 38s, 12s"
        );
        assert_eq!(
            line(counts, true, None, Duration::ZERO),
            "import: 1200/5000 submitted, 900 succeeded, 3 failed, –/s, 0s"
        );
        let finished = Counts {
            total: 4,
            submitted: 4,
            succeeded: 3,
            failed: 1,
        };
        assert_eq!(
            line(finished, true, Some(2.0), Duration::from_secs(2)),
            "import: 4/4 submitted, 3 succeeded, 1 failed, 2.0/s, 2s"
        );
    }

    #[test]
    fn clock_reads_like_a_person_would_write_it() {
        assert_eq!(clock(0.4), "0s");
        assert_eq!(clock(59.6), "1m00s");
        assert_eq!(clock(3599.0), "59m59s");
        assert_eq!(clock(7380.0), "2h03m");
    }
}
