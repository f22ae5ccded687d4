//! The trace of one simulated run: every call, answer, write, fault and
//! decision, stamped with virtual milliseconds since the run began. Two runs
//! of one seed must produce the same trace, line for line; a failing seed
//! prints it.

use sha2::{Digest, Sha256};
use tokio::time::Instant;

/// Lines of one run, in the order they happened.
#[derive(Debug)]
pub struct Trace {
    start: Instant,
    lines: Vec<String>,
}

impl Trace {
    /// An empty trace whose clock starts now (virtual time).
    pub fn new() -> Trace {
        Trace {
            start: Instant::now(),
            lines: Vec::new(),
        }
    }

    /// Virtual milliseconds since the run began.
    pub fn elapsed_ms(&self) -> u64 {
        Instant::now().duration_since(self.start).as_millis() as u64
    }

    /// Appends one line, stamped with the virtual time.
    pub fn push(&mut self, line: String) {
        let at = self.elapsed_ms();
        self.lines.push(format!("{at:>8} {line}"));
    }

    /// How many lines the run wrote.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// Every line.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// A digest of the whole trace, to compare runs briefly.
    pub fn digest(&self) -> String {
        let mut hash = Sha256::new();
        for line in &self.lines {
            hash.update(line.as_bytes());
            hash.update(b"\n");
        }
        hex::encode(&hash.finalize()[..12])
    }

    /// The last `n` lines (all of them when `n` is `None`), one per line.
    pub fn tail(&self, n: Option<usize>) -> String {
        let skip = n.map_or(0, |n| self.lines.len().saturating_sub(n));
        let mut out = String::new();
        if skip > 0 {
            out.push_str(&format!("   ... {skip} earlier lines left out\n"));
        }
        for line in &self.lines[skip..] {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}
