//! The progress line of the long commands (`import`, `reindex`, `eval`) on stderr: redrawn in place on
//! a terminal, one line every few seconds otherwise (a log file or CI output should not get a line per
//! redraw), always in one shape: `import: <what each command counts>, 14.2/s, ETA 4m27s, 1m01s`.

use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// The rate is measured over this much recent time, so a resumed run (whose first thousands of
/// entries replay at once) soon shows the real pace.
const RATE_WINDOW: Duration = Duration::from_secs(30);

pub struct Progress {
    /// The command's name, first on the line.
    label: &'static str,
    tty: bool,
    every: Duration,
    started: Instant,
    last_draw: Option<Instant>,
    samples: VecDeque<(Instant, usize)>,
    width: usize,
}

impl Progress {
    pub fn new(label: &'static str) -> Self {
        let tty = std::io::stderr().is_terminal();
        Progress {
            label,
            tty,
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

    /// Records that `done` of `total` are done (what the rate and ETA count) and redraws when it is
    /// time to, with `counts` (the command's own counts, made only when drawn) after the label.
    pub fn update(&mut self, done: usize, total: usize, counts: impl FnOnce() -> String) {
        let now = Instant::now();
        self.samples.push_back((now, done));
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
            self.draw(done, total, &counts());
        }
    }

    /// The last line, drawn whatever the time, and the end of the redrawn line.
    pub fn finish(&mut self, done: usize, total: usize, counts: &str) {
        self.draw(done, total, counts);
        if self.tty {
            eprintln!();
        }
    }

    fn draw(&mut self, done: usize, total: usize, counts: &str) {
        let line = line(
            self.label,
            counts,
            done,
            total,
            self.rate(),
            self.started.elapsed(),
        );
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

    /// Done per second over the recent window.
    fn rate(&self) -> Option<f64> {
        let (t0, n0) = self.samples.front()?;
        let (t1, n1) = self.samples.back()?;
        let secs = t1.duration_since(*t0).as_secs_f64();
        (secs >= 1.0).then(|| n1.saturating_sub(*n0) as f64 / secs)
    }
}

/// `import: 1200/5000 submitted, 900 succeeded, 3 failed, 14.2/s, ETA 4m27s, 1m01s`
pub fn line(
    label: &str,
    counts: &str,
    done: usize,
    total: usize,
    rate: Option<f64>,
    elapsed: Duration,
) -> String {
    let mut out = format!("{label}: {counts}");
    match rate {
        Some(r) => {
            out += &format!(", {r:.1}/s");
            if done < total && r > 0.0 {
                out += &format!(", ETA {}", clock((total - done) as f64 / r));
            } else if done < total {
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
        assert_eq!(
            line(
                "reindex",
                "10/50 items",
                10,
                50,
                Some(2.0),
                Duration::from_secs(61)
            ),
            "reindex: 10/50 items, 2.0/s, ETA 20s, 1m01s"
        );
        assert_eq!(
            line("eval", "0/4 jobs ended", 0, 4, None, Duration::ZERO),
            "eval: 0/4 jobs ended, –/s, 0s"
        );
        assert_eq!(
            line(
                "eval",
                "1/4 jobs ended",
                1,
                4,
                Some(0.0),
                Duration::from_secs(3)
            ),
            "eval: 1/4 jobs ended, 0.0/s, ETA –, 3s"
        );
        // Done: no time left to show.
        assert_eq!(
            line(
                "eval",
                "4/4 jobs ended",
                4,
                4,
                Some(2.0),
                Duration::from_secs(2)
            ),
            "eval: 4/4 jobs ended, 2.0/s, 2s"
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
