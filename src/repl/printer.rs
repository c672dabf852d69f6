//! Printing events above the prompt through rustyline's external printer.
//!
//! rustyline's printer behaves in two ways. While `readline` runs, it clears the
//! prompt, writes the text, adds a line break *unless the text ends with one*, and
//! redraws the prompt. While `readline` does not run (at start, and between the
//! user's Enter and the next prompt) it writes the text as it is, and the next
//! prompt starts with `\r\x1b[K`, erasing any unfinished last line. So every text
//! printed here ends with `\n`: it then survives in both states, and never gets a
//! blank line after it.
//!
//! The transfer progress block is kept right above the prompt. A line the user
//! enters pushes the block up by the rows the prompt and line took; the prompt's
//! side tells the sink about them (through [`Link`]), and the next redraw erases
//! from the block's real top and writes the entered lines again, so no stale copy
//! of the block stays in the scrollback.

use crate::render::{Sink, StatusBlock, terminal_rows};
use rustyline::ExternalPrinter;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use unicode_width::UnicodeWidthChar;

/// What the prompt's thread and the printing sink (on the loop's thread) share.
#[derive(Debug, Default)]
pub struct Link {
    state: Mutex<LinkState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct LinkState {
    /// Lines the user entered since the sink last took them, each with its
    /// prompt, as they stand on screen above the cursor.
    echo: String,
    /// The rows that text takes.
    echo_rows: usize,
    /// The current line was recorded (by the Enter key's handler).
    recorded: bool,
    /// Command lines the loop has taken and then flushed the output of; `None`
    /// until its first flush.
    done: Option<u64>,
    /// The prompt being read (what [`Link::entered_here`] records the line with).
    prompt: String,
    /// Where the node is in quitting.
    quit: Quit,
    /// The prompt's thread is in `readline` (or about to be).
    reading: bool,
    /// The loop has ended: no prompt is to be drawn again.
    closed: bool,
}

/// Where the node is in quitting, as the prompt needs to know.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum Quit {
    /// Not quitting.
    #[default]
    Running,
    /// `quit` waits for something to end (the filer's outgoing files): the
    /// prompt stays, saying so; Ctrl-C or `quit` again stops now.
    Waiting,
    /// Stopping now: no prompt again.
    Stopping,
}

impl Link {
    fn state(&self) -> MutexGuard<'_, LinkState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new prompt is about to be read: nothing of it recorded yet.
    pub fn begin_line(&self) {
        self.state().recorded = false;
    }

    /// Like [`Self::begin_line`], for `prompt`; then marks the prompt as being
    /// read, unless the loop has ended (false: no prompt may be drawn).
    pub fn begin_reading(&self, prompt: &str) -> bool {
        let mut s = self.state();
        s.recorded = false;
        s.prompt.clear();
        s.prompt.push_str(prompt);
        s.reading = !s.closed;
        s.reading
    }

    /// `readline` returned.
    pub fn end_reading(&self) {
        self.state().reading = false;
    }

    /// The loop has ended: no prompt is to be drawn again. True when one may
    /// be on screen (the prompt's thread is reading).
    fn close(&self) -> bool {
        let mut s = self.state();
        s.closed = true;
        s.reading
    }

    /// Where the node is in quitting.
    pub fn quit(&self) -> Quit {
        self.state().quit
    }

    fn set_quit(&self, q: Quit) {
        self.state().quit = q;
    }

    /// [`Self::entered`] at the prompt being read.
    pub fn entered_here(&self, line: &str, cols: usize) {
        let prompt = self.state().prompt.clone();
        self.entered(&prompt, line, cols);
    }

    /// The user entered `line` at `prompt` on a terminal `cols` wide: it stays on
    /// screen between the status block and the cursor. Only the first call per
    /// prompt counts (the Enter key's handler records it while `readline` still
    /// runs; the prompt's thread calls again afterwards in case another key ended
    /// the line).
    pub fn entered(&self, prompt: &str, line: &str, cols: usize) {
        let mut s = self.state();
        if s.recorded {
            return;
        }
        s.recorded = true;
        s.echo_rows += rows(prompt, line, cols);
        // A huge paste is not worth keeping: the block it pushed up is gone
        // from the screen anyway (see `PrinterSink::flush`).
        if s.echo.len() < 1 << 16 {
            s.echo.push_str(prompt);
            s.echo.push_str(line);
            s.echo.push('\n');
        }
    }

    /// Takes the recorded lines and their rows.
    fn take_echo(&self) -> (String, usize) {
        let mut s = self.state();
        let rows = std::mem::take(&mut s.echo_rows);
        (std::mem::take(&mut s.echo), rows)
    }

    /// The loop has taken `n` command lines in all and printed what they made.
    fn set_done(&self, n: u64) {
        let mut s = self.state();
        if s.done != Some(n) {
            s.done = Some(n);
            self.done.notify_all();
        }
    }

    /// Waits until the loop has taken `n` command lines in all and printed
    /// their output (for 0: until it printed what it had at start), for at most
    /// `timeout`; true if it did.
    pub fn wait_done(&self, n: u64, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        let mut s = self.state();
        while s.done.is_none_or(|d| d < n) {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = match self.done.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
        true
    }
}

/// The rows `prompt` followed by `line` take on a terminal `cols` wide, counted
/// from the prompt's row to the row the cursor is on after Enter (the way
/// rustyline lays them out: wide characters do not straddle the edge, a row
/// filled exactly moves the cursor to the next, `\n` starts a row, tabs stop
/// every 8 columns).
pub fn rows(prompt: &str, line: &str, cols: usize) -> usize {
    let cols = cols.max(1);
    let (mut row, mut col) = (0usize, 0usize);
    for c in prompt.chars().chain(line.chars()) {
        if c == '\n' {
            row += 1;
            col = 0;
            continue;
        }
        let w = if c == '\t' {
            8 - col % 8
        } else {
            c.width().unwrap_or(0)
        };
        col += w;
        if col > cols {
            row += 1;
            col = w;
        }
    }
    if col == cols {
        row += 1;
    }
    row + 1
}

/// Prints events above the prompt through rustyline's external printer.
pub struct PrinterSink<P: ExternalPrinter + Send> {
    printer: P,
    link: std::sync::Arc<Link>,
    /// Event lines not printed yet, each ending in `\n`.
    pending: String,
    /// Transfer progress, kept right above the prompt.
    block: StatusBlock,
    /// Lines entered below the block while it is shown, and their rows.
    echo: String,
    echo_rows: usize,
    /// Command lines the loop has taken.
    taken: u64,
    /// The terminal's height (for tests; else asked when needed).
    height: Option<usize>,
}

impl<P: ExternalPrinter + Send> PrinterSink<P> {
    /// Wraps a printer from `Editor::create_external_printer`; `link` is shared
    /// with the prompt.
    pub fn new(printer: P, link: std::sync::Arc<Link>) -> Self {
        PrinterSink {
            printer,
            link,
            pending: String::new(),
            block: StatusBlock::default(),
            echo: String::new(),
            echo_rows: 0,
            taken: 0,
            height: None,
        }
    }

    /// Takes what the user entered since the last look. Below a shown block it
    /// is kept (the block must be erased from higher up, and the lines written
    /// again); else it is simply part of the scrollback.
    fn take_echo(&mut self) {
        let (echo, rows) = self.link.take_echo();
        if rows == 0 || !self.block.is_shown() {
            return;
        }
        self.echo.push_str(&echo);
        self.echo_rows += rows;
        let height = self.height.or_else(terminal_rows).unwrap_or(24);
        if self.block.shown_rows() + self.echo_rows >= height || self.echo.len() >= 1 << 16 {
            // The block scrolled off the screen: it can no longer be erased.
            self.block.detach();
            self.echo.clear();
            self.echo_rows = 0;
        }
    }

    /// The text that brings the screen up to date, ending in `\n`; empty when
    /// there is nothing to do.
    fn render(&mut self) -> String {
        self.take_echo();
        if self.pending.is_empty() && !self.block.needs_draw() {
            return String::new();
        }
        let mut text = String::new();
        let erased = self.block.is_shown();
        self.block.erase_from(&mut text, self.echo_rows);
        text.push_str(&self.echo);
        self.echo.clear();
        self.echo_rows = 0;
        text.push_str(&self.pending);
        self.pending.clear();
        if self.block.draw(&mut text) > 0 {
            text.push('\n');
        }
        if erased && !text.ends_with('\n') {
            // Only an erase: the cursor is where the block began. Step up and
            // back down so the text ends with a line break (or rustyline would
            // add one while reading, leaving a blank row) and the cursor stays.
            text.push_str("\x1b[1A\n");
        }
        text
    }
}

impl<P: ExternalPrinter + Send> Sink for PrinterSink<P> {
    fn event(&mut self, line: &[u8]) {
        self.pending.push_str(&String::from_utf8_lossy(line));
        self.pending.push('\n');
        if self.pending.len() > 1 << 16 {
            self.flush();
        }
    }

    fn notice(&mut self, line: &str) {
        self.event(line.as_bytes());
    }

    fn flush(&mut self) {
        let text = self.render();
        if !text.is_empty() {
            let _ = self.printer.print(text);
        }
        self.link.set_done(self.taken);
    }

    fn is_terminal(&self) -> bool {
        true
    }

    fn status(&mut self, lines: &[String]) {
        self.block.set(lines);
    }

    fn input_line(&mut self) {
        self.taken += 1;
    }

    fn quitting(&mut self, waiting: bool) {
        self.link.set_quit(if waiting {
            Quit::Waiting
        } else {
            Quit::Stopping
        });
    }
}

/// A no-op for the screen that rustyline still has to print (it moves the
/// cursor up a row and back down, then the prompt is redrawn).
const NOTHING: &str = "\x1b[1A\n";

impl<P: ExternalPrinter + Send> Drop for PrinterSink<P> {
    /// The loop has ended and the process is about to exit: the last output is
    /// printed, the progress block erased, and a prompt still on screen (the
    /// node stopped by itself, e.g. when the last file `quit` waited for went
    /// out) erased, so nothing is left half-drawn above the shell's prompt.
    fn drop(&mut self) {
        self.block.set(&[]);
        let text = self.render();
        let reading = self.link.close();
        if !text.is_empty() {
            let _ = self.printer.print(text);
        }
        if reading {
            // The printer hands texts to `readline` through a channel that holds
            // one, and `readline` prints them in turn, redrawing the prompt
            // after each: once two more went in, the text above is on screen,
            // and the redraw after the last is a moment's work.
            std::thread::sleep(Duration::from_millis(20));
            for _ in 0..2 {
                let _ = self.printer.print(NOTHING.to_string());
            }
            std::thread::sleep(Duration::from_millis(50));
            let erase = b"\r\x1b[J";
            // SAFETY: writing a buffer we own to stdout.
            unsafe {
                libc::write(1, erase.as_ptr().cast(), erase.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Records what would be printed.
    #[derive(Clone, Default)]
    struct Rec(Arc<Mutex<Vec<String>>>);

    impl ExternalPrinter for Rec {
        fn print(&mut self, msg: String) -> rustyline::Result<()> {
            self.0.lock().unwrap().push(msg);
            Ok(())
        }
    }

    fn sink() -> (PrinterSink<Rec>, Rec, Arc<Link>) {
        let rec = Rec::default();
        let link = Arc::new(Link::default());
        let mut s = PrinterSink::new(rec.clone(), link.clone());
        s.height = Some(40);
        (s, rec, link)
    }

    fn printed(rec: &Rec) -> Vec<String> {
        std::mem::take(&mut *rec.0.lock().unwrap())
    }

    #[test]
    fn every_text_ends_with_one_line_break() {
        let (mut s, rec, link) = sink();
        assert!(!link.wait_done(0, Duration::from_millis(1)));
        s.notice("listening on 127.0.0.1:1");
        s.flush();
        s.event(b"< #1 a");
        s.event(b"< #1 b");
        s.flush();
        s.flush();
        assert_eq!(
            printed(&rec),
            vec!["listening on 127.0.0.1:1\n", "< #1 a\n< #1 b\n"]
        );
    }

    #[test]
    fn the_block_is_redrawn_and_an_erase_alone_keeps_the_cursor() {
        let (mut s, rec, _) = sink();
        s.status(&["#1 send a 5%".into(), "#2 send b 1%".into()]);
        s.flush();
        s.event(b"msg");
        s.status(&["#1 send a 9%".into()]);
        s.flush();
        s.status(&[]);
        s.flush();
        assert_eq!(
            printed(&rec),
            vec![
                "#1 send a 5%\n#2 send b 1%\n",
                "\x1b[2A\x1b[Jmsg\n#1 send a 9%\n",
                "\x1b[1A\x1b[J\x1b[1A\n",
            ]
        );
    }

    #[test]
    fn entered_lines_below_the_block_are_erased_and_written_again() {
        let (mut s, rec, link) = sink();
        s.status(&["#9 send huge 7%".into()]);
        s.flush();
        // Two lines entered under it (the second one recorded only once).
        link.begin_line();
        link.entered("filer> ", "list", 80);
        link.entered("filer> ", "list", 80);
        link.begin_line();
        link.entered("filer> ", "", 80);
        s.input_line();
        s.event(b"table");
        s.status(&["#9 send huge 8%".into()]);
        s.flush();
        assert_eq!(
            printed(&rec),
            vec![
                "#9 send huge 7%\n",
                "\x1b[3A\x1b[Jfiler> list\nfiler> \ntable\n#9 send huge 8%\n"
            ]
        );
        assert!(link.wait_done(1, Duration::ZERO));
        assert!(link.wait_done(0, Duration::ZERO));
        assert!(!link.wait_done(2, Duration::from_millis(1)));
        // Without a block, entered lines are just scrollback.
        s.status(&[]);
        s.flush();
        link.begin_line();
        link.entered("filer> ", "x", 80);
        s.event(b"y");
        s.flush();
        assert_eq!(printed(&rec), vec!["\x1b[1A\x1b[J\x1b[1A\n", "y\n"]);
    }

    #[test]
    fn a_block_pushed_off_the_screen_is_left_alone() {
        let (mut s, rec, link) = sink();
        s.status(&["p 1%".into()]);
        s.flush();
        link.begin_line();
        link.entered("serve> ", &"x\n".repeat(45), 80);
        s.status(&["p 2%".into()]);
        s.flush();
        assert_eq!(printed(&rec), vec!["p 1%\n", "p 2%\n"]);
    }

    #[test]
    fn the_block_is_erased_when_the_loop_ends() {
        let (mut s, rec, link) = sink();
        s.status(&["t1 send a 5%".into()]);
        s.flush();
        s.event(b"~ transfer t1 failed");
        s.quitting(false);
        assert_eq!(link.quit(), Quit::Stopping);
        drop(s);
        assert_eq!(
            printed(&rec),
            vec!["t1 send a 5%\n", "\x1b[1A\x1b[J~ transfer t1 failed\n"]
        );
        // No prompt is drawn after that.
        assert!(!link.begin_reading("filer> "));
    }

    #[test]
    fn rows_follow_rustylines_layout() {
        assert_eq!(rows("> ", "", 10), 1);
        assert_eq!(rows("> ", "1234567", 10), 1);
        // Exactly full: the cursor goes to the next row.
        assert_eq!(rows("> ", "12345678", 10), 2);
        assert_eq!(rows("> ", "123456789", 10), 2);
        assert_eq!(rows("> ", "a\nb\n", 10), 3);
        // A wide character does not straddle the edge.
        assert_eq!(rows("> ", "1234567日", 10), 2);
        assert_eq!(rows("> ", "\t", 10), 1);
        assert_eq!(rows("> ", "x", 0), 4);
    }
}
