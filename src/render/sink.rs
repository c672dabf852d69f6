//! Where rendered lines go: buffered stdout, or above a REPL prompt.

use super::stdout::{CHUNK, Fd, Stdout, stdout};
use std::fmt::Write as _;
use std::io::{self, IsTerminal};

/// A destination for rendered event lines (stdout) and notices (stderr).
pub trait Sink: Send {
    /// Writes one event line (`line` has no newline).
    fn event(&mut self, line: &[u8]);
    /// Writes one notice or error line.
    fn notice(&mut self, line: &str);
    /// Pushes out anything buffered.
    fn flush(&mut self);
    /// True when the sink is a terminal that can show a status block.
    fn is_terminal(&self) -> bool {
        false
    }
    /// Replaces the status block: lines kept below the events (and above a
    /// prompt) that are redrawn in place rather than scrolled. Empty clears it.
    fn status(&mut self, _lines: &[String]) {}
    /// The loop took a command line the user entered (the REPL's sink counts
    /// them, so the prompt comes back once their output is printed).
    fn input_line(&mut self) {}
    /// The node is quitting: `true` while it waits for something to end first
    /// (the filer's outgoing files; the prompt stays, saying so), `false` when
    /// it stops now (the prompt does not come back).
    fn quitting(&mut self, _waiting: bool) {}
}

/// A few lines redrawn in place at the bottom of a terminal (transfer progress).
///
/// The block is drawn right above the cursor; erasing it moves the cursor up
/// over its rows and clears to the end of the screen. Lines must fit the
/// terminal's width (the caller clips them) so each is one row.
#[derive(Debug, Default)]
pub struct StatusBlock {
    lines: Vec<String>,
    /// Rows of the block currently on screen above the cursor.
    shown: usize,
    /// The lines changed since drawn.
    dirty: bool,
}

impl StatusBlock {
    /// Sets new lines; returns true when there is something to redraw.
    pub fn set(&mut self, lines: &[String]) -> bool {
        if self.lines.as_slice() == lines {
            return false;
        }
        self.lines = lines.to_vec();
        self.dirty = true;
        true
    }

    /// True when the block should be (re)drawn.
    pub fn needs_draw(&self) -> bool {
        self.dirty || (self.shown == 0 && !self.lines.is_empty())
    }

    /// True when the block has lines to show.
    pub fn has_lines(&self) -> bool {
        !self.lines.is_empty()
    }

    /// True when a block is on screen.
    pub fn is_shown(&self) -> bool {
        self.shown > 0
    }

    /// Rows of the block on screen.
    pub fn shown_rows(&self) -> usize {
        self.shown
    }

    /// Appends the escape sequence that erases the block on screen.
    pub fn erase(&mut self, out: &mut String) {
        self.erase_from(out, 0);
    }

    /// Like [`Self::erase`] when `below` more rows were written under the block
    /// since it was drawn (they are erased too).
    pub fn erase_from(&mut self, out: &mut String, below: usize) {
        if self.shown > 0 {
            let _ = write!(out, "\x1b[{}A\x1b[J", self.shown + below);
            self.shown = 0;
        }
    }

    /// Appends the block's lines (joined by `\n`, none after the last) and
    /// records them as shown; returns how many rows were written.
    pub fn draw(&mut self, out: &mut String) -> usize {
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            out.push_str(l);
        }
        self.shown = self.lines.len();
        self.dirty = false;
        self.shown
    }

    /// Forgets the block on screen (it scrolled away from the cursor).
    pub fn detach(&mut self) {
        self.shown = 0;
    }
}

/// The size of the terminal on stdout, if it is one.
fn terminal_size() -> Option<libc::winsize> {
    // SAFETY: TIOCGWINSZ fills a zeroed winsize we own.
    unsafe {
        let mut w: libc::winsize = std::mem::zeroed();
        (libc::ioctl(1, libc::TIOCGWINSZ, &mut w) == 0).then_some(w)
    }
}

/// The width of the terminal on stdout, if it is one.
pub fn terminal_width() -> Option<usize> {
    terminal_size()
        .filter(|w| w.ws_col > 0)
        .map(|w| w.ws_col as usize)
}

/// The height of the terminal on stdout, if it is one.
pub fn terminal_rows() -> Option<usize> {
    terminal_size()
        .filter(|w| w.ws_row > 0)
        .map(|w| w.ws_row as usize)
}

/// Stdout for events, written by its own thread ([`super::stdout`]) so the loop
/// never waits for it, and stderr for notices: for pipes, files and terminals
/// without a prompt.
///
/// Lines are gathered into chunks of [`CHUNK`] bytes and handed over when full
/// and at every [`Sink::flush`]. On a terminal, notices go through the writer
/// too, in order with the events and the status block around them; otherwise
/// they are written to stderr at once (after handing over the events before
/// them), so a stalled stdout does not hold errors back.
pub struct StdioSink {
    out: &'static Stdout,
    buf: Vec<u8>,
    /// Stdout is a terminal: a status block may be shown on it.
    tty: bool,
    block: StatusBlock,
    scratch: String,
}

impl StdioSink {
    /// A sink over the process's stdout and stderr; starts the stdout writer.
    pub fn new() -> Self {
        StdioSink {
            out: stdout(),
            buf: Vec::with_capacity(CHUNK),
            tty: io::stdout().is_terminal(),
            block: StatusBlock::default(),
            scratch: String::new(),
        }
    }

    /// Erases a shown status block before other output goes to the terminal.
    fn erase_block(&mut self) {
        if self.block.is_shown() {
            self.scratch.clear();
            self.block.erase(&mut self.scratch);
            self.buf.extend_from_slice(self.scratch.as_bytes());
        }
    }

    fn hand_over(&mut self) {
        self.out.push(Fd::Out, &mut self.buf);
    }
}

impl Default for StdioSink {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StdioSink {
    /// Writes everything still buffered (unless stdout's reader is gone) before
    /// the process goes on to exit.
    fn drop(&mut self) {
        self.flush();
        self.out.finish();
    }
}

impl Sink for StdioSink {
    fn event(&mut self, line: &[u8]) {
        if self.out.is_discarding() {
            // Reader gone (e.g. `| head`): stop writing; the loop is told.
            return;
        }
        self.erase_block();
        self.buf.extend_from_slice(line);
        self.buf.push(b'\n');
        if self.buf.len() >= CHUNK {
            self.hand_over();
        }
    }

    fn notice(&mut self, line: &str) {
        if self.tty && !self.out.is_discarding() {
            self.erase_block();
            self.hand_over();
            let mut l = Vec::with_capacity(line.len() + 1);
            l.extend_from_slice(line.as_bytes());
            l.push(b'\n');
            self.out.push(Fd::Err, &mut l);
            return;
        }
        self.hand_over();
        eprintln!("{line}");
    }

    fn flush(&mut self) {
        if self.out.is_discarding() {
            self.buf.clear();
            return;
        }
        if self.tty && self.block.needs_draw() {
            self.erase_block();
            self.scratch.clear();
            if self.block.draw(&mut self.scratch) > 0 {
                self.scratch.push('\n');
            }
            self.buf.extend_from_slice(self.scratch.as_bytes());
        }
        self.hand_over();
    }

    fn is_terminal(&self) -> bool {
        self.tty
    }

    fn status(&mut self, lines: &[String]) {
        if self.tty {
            self.block.set(lines);
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
