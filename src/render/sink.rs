//! Where rendered lines go: buffered stdout, or above a REPL prompt.

use std::io::{self, Write};

/// A destination for rendered event lines (stdout) and notices (stderr).
pub trait Sink: Send {
    /// Writes one event line (`line` has no newline).
    fn event(&mut self, line: &[u8]);
    /// Writes one notice or error line.
    fn notice(&mut self, line: &str);
    /// Pushes out anything buffered.
    fn flush(&mut self);
}

/// Buffered stdout for events and unbuffered stderr for notices: for pipes.
pub struct StdioSink {
    out: io::BufWriter<io::Stdout>,
    broken: bool,
}

impl StdioSink {
    /// A sink over the process's stdout and stderr.
    pub fn new() -> Self {
        StdioSink {
            out: io::BufWriter::with_capacity(1 << 16, io::stdout()),
            broken: false,
        }
    }
}

impl Default for StdioSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Sink for StdioSink {
    fn event(&mut self, line: &[u8]) {
        if self.broken {
            return;
        }
        if self
            .out
            .write_all(line)
            .and_then(|_| self.out.write_all(b"\n"))
            .is_err()
        {
            // Reader gone (e.g. `| head`): stop writing, keep serving.
            self.broken = true;
        }
    }

    fn notice(&mut self, line: &str) {
        self.flush();
        eprintln!("{line}");
    }

    fn flush(&mut self) {
        if !self.broken && self.out.flush().is_err() {
            self.broken = true;
        }
    }
}

/// Lines kept in memory: for tests and embedding.
#[derive(Default, Clone)]
pub struct MemorySink {
    /// Event lines and notices (notices prefixed with `! `) in order.
    pub lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Sink for MemorySink {
    fn event(&mut self, line: &[u8]) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(String::from_utf8_lossy(line).into_owned());
        }
    }
    fn notice(&mut self, line: &str) {
        if let Ok(mut l) = self.lines.lock() {
            l.push(format!("! {line}"));
        }
    }
    fn flush(&mut self) {}
}
