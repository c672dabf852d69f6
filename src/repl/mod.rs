//! Reading commands: the rustyline REPL on a terminal, or lines from piped stdin.
//!
//! Both produce [`Input`]s for the loop; neither knows the protocol.

mod complete;

pub use complete::{SockHelper, candidates};

use crate::command::{CompletionTargets, Input};
use crate::net::Remote;
use crate::render::{Sink, StatusBlock};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Editor, Event, EventContext, EventHandler, ExternalPrinter,
    KeyEvent, Movement, RepeatCount,
};
use std::io::BufRead;
use std::path::PathBuf;

/// Where REPL history lives: `$XDG_STATE_HOME/sockmod/history`, else
/// `~/.local/state/sockmod/history`.
pub fn history_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("sockmod").join("history"))
}

/// Prints events above the prompt through rustyline's external printer.
pub struct PrinterSink<P: ExternalPrinter + Send> {
    printer: P,
    pending: String,
    /// Transfer progress, kept right above the prompt.
    block: StatusBlock,
}

impl<P: ExternalPrinter + Send> PrinterSink<P> {
    /// Wraps a printer from `Editor::create_external_printer`.
    pub fn new(printer: P) -> Self {
        PrinterSink {
            printer,
            pending: String::new(),
            block: StatusBlock::default(),
        }
    }
}

impl<P: ExternalPrinter + Send> Sink for PrinterSink<P> {
    fn event(&mut self, line: &[u8]) {
        if !self.pending.is_empty() {
            self.pending.push('\n');
        }
        self.pending.push_str(&String::from_utf8_lossy(line));
        if self.pending.len() > 1 << 16 {
            self.flush();
        }
    }

    fn notice(&mut self, line: &str) {
        self.event(line.as_bytes());
    }

    fn flush(&mut self) {
        if self.pending.is_empty() && !self.block.needs_draw() {
            return;
        }
        // The printer clears the prompt, writes the text, adds a line break and
        // redraws the prompt: so the block (if any) is erased first, the events
        // follow, and the block is drawn again last, right above the prompt.
        let mut text = String::new();
        self.block.erase(&mut text);
        let had_events = !self.pending.is_empty();
        text.push_str(&self.pending);
        self.pending.clear();
        if self.block.has_lines() {
            if had_events {
                text.push('\n');
            }
            self.block.draw(&mut text);
        } else {
            self.block.draw(&mut text);
            if !had_events {
                if text.is_empty() {
                    return;
                }
                // Only an erase: step up once more so the printer's line break
                // lands where the block began instead of leaving a blank row.
                text.push_str("\x1b[1A");
            }
        }
        let _ = self.printer.print(text);
    }

    fn is_terminal(&self) -> bool {
        true
    }

    fn status(&mut self, lines: &[String]) {
        self.block.set(lines);
    }

    fn input_line(&mut self) {
        self.block.detach();
    }
}

/// Ctrl-C: clear a non-empty line, quit on an empty one.
struct CtrlC;

impl ConditionalEventHandler for CtrlC {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        if ctx.line().is_empty() {
            Some(Cmd::Interrupt)
        } else {
            Some(Cmd::Kill(Movement::WholeBuffer))
        }
    }
}

/// The interactive editor, with history and completion.
pub struct Repl {
    editor: Editor<SockHelper, FileHistory>,
    history: Option<PathBuf>,
    prompt: String,
}

impl Repl {
    /// Sets up the editor for `mode`.
    pub fn new(mode: &'static str, targets: CompletionTargets) -> Result<Self, String> {
        let config = rustyline::Config::builder()
            .auto_add_history(false)
            .max_history_size(5000)
            .map_err(|e| e.to_string())?
            .completion_type(rustyline::CompletionType::List)
            .build();
        let mut editor: Editor<SockHelper, FileHistory> =
            Editor::with_config(config).map_err(|e| format!("cannot start the prompt: {e}"))?;
        editor.set_helper(Some(SockHelper::new(mode, targets)));
        editor.bind_sequence(
            KeyEvent::ctrl('C'),
            EventHandler::Conditional(Box::new(CtrlC)),
        );
        let history = history_path();
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.load_history(h);
        }
        Ok(Repl {
            editor,
            history,
            prompt: format!("{mode}> "),
        })
    }

    /// A sink that prints above the prompt.
    pub fn sink(&mut self) -> Result<Box<dyn Sink>, String> {
        let p = self
            .editor
            .create_external_printer()
            .map_err(|e| format!("cannot start the prompt: {e}"))?;
        Ok(Box::new(PrinterSink::new(p)))
    }

    /// Reads lines until `quit`, Ctrl-D, or Ctrl-C on an empty line, handing each
    /// to the loop. Returns when the user is done (the loop is told to quit).
    pub fn run(mut self, remote: &Remote<Input>) {
        loop {
            match self.editor.readline(&self.prompt) {
                Ok(line) => {
                    let trimmed = line.trim();
                    if !trimmed.is_empty() {
                        let _ = self.editor.add_history_entry(trimmed);
                        if let Some(h) = &self.history {
                            let _ = self.editor.append_history(h);
                        }
                    }
                    let quit = matches!(trimmed, "quit" | "exit");
                    if remote.send(Input::Line(line)).is_err() || quit {
                        return;
                    }
                }
                Err(ReadlineError::Interrupted) | Err(ReadlineError::Eof) => {
                    let _ = remote.send(Input::Line("quit".into()));
                    return;
                }
                Err(e) => {
                    eprintln!("error: reading the terminal: {e}");
                    let _ = remote.send(Input::Line("quit".into()));
                    return;
                }
            }
        }
    }
}

/// The longest command line taken from piped input: a body of text that long
/// belongs in a file (`-f PATH`), and an endless line (a binary file piped in by
/// mistake) must not take all memory.
const MAX_LINE: usize = 16 << 20;

/// Reads one line into `buf` (without its `\n`), keeping at most `max` bytes of
/// it; `Ok(None)` at the end of input, else `Some(true)` for a whole line and
/// `Some(false)` for one cut short (the rest of it is read and dropped).
fn read_line_capped(
    r: &mut impl BufRead,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<bool>> {
    buf.clear();
    let (mut any, mut whole) = (false, true);
    loop {
        let avail = match r.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if avail.is_empty() {
            return Ok(any.then_some(whole));
        }
        any = true;
        let (part, used, ended) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (&avail[..i], i + 1, true),
            None => (avail, avail.len(), false),
        };
        let room = max.saturating_sub(buf.len());
        if part.len() > room {
            whole = false;
        }
        buf.extend_from_slice(&part[..part.len().min(room)]);
        r.consume(used);
        if ended {
            return Ok(Some(whole));
        }
    }
}

/// Reads stdin line by line on a thread, sending each line and then `Eof`.
pub fn spawn_stdin_reader(remote: Remote<Input>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            // Our own buffer, to see whether more whole lines are already in.
            let mut lock = std::io::BufReader::with_capacity(64 << 10, stdin.lock());
            let mut buf = Vec::new();
            let mut n = 0u64;
            loop {
                let input = match read_line_capped(&mut lock, &mut buf, MAX_LINE) {
                    Ok(None) => break,
                    Ok(Some(whole)) => {
                        n += 1;
                        if whole {
                            let line = String::from_utf8_lossy(&buf);
                            Input::Line(line.trim_end_matches('\r').to_string())
                        } else {
                            Input::Bad(format!(
                                "input line {n} is longer than {} MiB; skipped",
                                MAX_LINE >> 20
                            ))
                        }
                    }
                    Err(e) => {
                        eprintln!("error: reading stdin: {e}");
                        break;
                    }
                };
                // Another whole line already buffered: it is sent at once, and its
                // send wakes the loop for both.
                let more = lock.buffer().contains(&b'\n');
                if remote.send_batched(input, more).is_err() {
                    return;
                }
            }
            let _ = remote.send(Input::Eof);
        })
}

/// The terminal settings at start, restored if the process exits mid-prompt.
pub struct TermGuard(Option<libc::termios>);

impl TermGuard {
    /// Saves stdin's terminal settings (if it is a terminal).
    pub fn save() -> Self {
        // SAFETY: tcgetattr writes into a zeroed termios we own.
        unsafe {
            let mut t: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(0, &mut t) == 0 {
                TermGuard(Some(t))
            } else {
                TermGuard(None)
            }
        }
    }

    /// Puts the saved settings back.
    pub fn restore(&self) {
        if let Some(t) = &self.0 {
            // SAFETY: restoring settings obtained from tcgetattr on the same fd.
            unsafe {
                libc::tcsetattr(0, libc::TCSANOW, t);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_and_the_rest_still_read() {
        let text = format!("short\n{}\nnext\r\nlast", "x".repeat(100));
        let mut r = std::io::BufReader::with_capacity(8, text.as_bytes());
        let mut buf = Vec::new();
        let mut got = Vec::new();
        while let Some(whole) = read_line_capped(&mut r, &mut buf, 10).unwrap() {
            got.push((String::from_utf8(buf.clone()).unwrap(), whole));
        }
        let want = [
            ("short", true),
            ("xxxxxxxxxx", false),
            ("next\r", true),
            ("last", true),
        ];
        let want: Vec<(String, bool)> = want.iter().map(|(s, w)| (s.to_string(), *w)).collect();
        assert_eq!(got, want);
    }
}
