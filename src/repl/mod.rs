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

/// Reads stdin line by line on a thread, sending each line and then `Eof`.
pub fn spawn_stdin_reader(remote: Remote<Input>) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("stdin".into())
        .spawn(move || {
            let stdin = std::io::stdin();
            // Our own buffer, to see whether more whole lines are already in.
            let mut lock = std::io::BufReader::with_capacity(64 << 10, stdin.lock());
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match lock.read_until(b'\n', &mut buf) {
                    Ok(0) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf);
                        let line = line.trim_end_matches(['\n', '\r']).to_string();
                        // Another whole line already buffered: it is sent at once,
                        // and its send wakes the loop for both.
                        let more = lock.buffer().contains(&b'\n');
                        if remote.send_batched(Input::Line(line), more).is_err() {
                            return;
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        eprintln!("error: reading stdin: {e}");
                        break;
                    }
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
