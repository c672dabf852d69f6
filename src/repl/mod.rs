//! Reading commands: the rustyline REPL on a terminal, or lines from piped stdin.
//!
//! Both produce [`Input`]s for the loop; neither knows the protocol.

mod complete;
mod printer;

pub use complete::{SockHelper, candidates};
pub use printer::{Link, PrinterSink, Quit, rows};

use crate::command::{CompletionTargets, Input};
use crate::net::Remote;
use crate::render::{Sink, terminal_width};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{
    Cmd, ConditionalEventHandler, Editor, Event, EventContext, EventHandler, KeyCode, KeyEvent,
    Modifiers, Movement, RepeatCount,
};
use std::io::BufRead;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where the REPL history of `mode` lives, one file per mode (a filer's
/// `sendfile` lines do not come up at a serve prompt):
/// `$XDG_STATE_HOME/sockmod/history-MODE`, else
/// `~/.local/state/sockmod/history-MODE`.
pub fn history_path(mode: &str) -> Option<PathBuf> {
    let base = std::env::var_os("XDG_STATE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))?;
    Some(base.join("sockmod").join(format!("history-{mode}")))
}

/// How long the prompt waits for the output of the lines just entered before it
/// comes back anyway (a line normally runs in well under a millisecond; the loop
/// may be busy, or `connect` may hold lines until its first dials finish).
const OUTPUT_WAIT: Duration = Duration::from_millis(250);

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

/// Enter (and Ctrl-J): records the line as it will stand on screen, before
/// rustyline ends `readline` (see [`Link::entered`]); then does the usual.
struct Enter {
    link: Arc<Link>,
}

impl ConditionalEventHandler for Enter {
    fn handle(&self, _: &Event, _: RepeatCount, _: bool, ctx: &EventContext) -> Option<Cmd> {
        let cols = terminal_width().unwrap_or(80);
        self.link.entered_here(ctx.line(), cols);
        None
    }
}

/// The interactive editor, with history and completion.
pub struct Repl {
    editor: Editor<SockHelper, FileHistory>,
    history: Option<PathBuf>,
    prompt: String,
    /// The prompt while `quit` waits for transfers.
    waiting_prompt: String,
    link: Arc<Link>,
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
        let prompt = format!("{mode}> ");
        let link = Arc::new(Link::default());
        for key in [
            KeyEvent(KeyCode::Enter, Modifiers::NONE),
            KeyEvent::ctrl('J'),
        ] {
            editor.bind_sequence(
                key,
                EventHandler::Conditional(Box::new(Enter { link: link.clone() })),
            );
        }
        let history = history_path(mode);
        if let Some(h) = &history {
            if let Some(dir) = h.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            let _ = editor.load_history(h);
        }
        Ok(Repl {
            editor,
            history,
            prompt,
            waiting_prompt: format!("{mode} (waiting for transfers)> "),
            link,
        })
    }

    /// A sink that prints above the prompt.
    pub fn sink(&mut self) -> Result<Box<dyn Sink>, String> {
        let p = self
            .editor
            .create_external_printer()
            .map_err(|e| format!("cannot start the prompt: {e}"))?;
        Ok(Box::new(PrinterSink::new(p, self.link.clone())))
    }

    /// Reads lines until `quit`, Ctrl-D, or Ctrl-C on an empty line, handing each
    /// to the loop. Returns when the user is done (the loop is told to quit).
    ///
    /// What `readline` returns is split at line breaks (a bracketed paste keeps
    /// them), and each line runs as a command of its own, in order, like in a
    /// shell; the next prompt comes once their output is printed (at most
    /// [`OUTPUT_WAIT`] later). Between prompts the terminal does not echo, so
    /// lines typed or pasted ahead wait unseen for their prompt.
    pub fn run(mut self, remote: &Remote<Input>) {
        let term = TermGuard::save();
        quiet_between_prompts();
        self.read_lines(remote);
        term.restore();
    }

    fn read_lines(&mut self, remote: &Remote<Input>) {
        // What the loop prints at start (`listening on …`) comes before the
        // first prompt rather than racing it.
        self.link.wait_done(0, OUTPUT_WAIT);
        let mut sent = 0u64;
        loop {
            let prompt = match self.link.quit() {
                Quit::Running => self.prompt.clone(),
                Quit::Waiting => self.waiting_prompt.clone(),
                Quit::Stopping => return,
            };
            if !self.link.begin_reading(&prompt) {
                return;
            }
            let read = self.editor.readline(&prompt);
            self.link.end_reading();
            let cols = terminal_width().unwrap_or(80);
            let lines: Vec<String> = match read {
                Ok(text) => {
                    self.link.entered(&prompt, &text, cols);
                    let lines: Vec<String> = command_lines(&text).map(str::to_string).collect();
                    for l in &lines {
                        let _ = self.editor.add_history_entry(l.trim());
                    }
                    if let (Some(h), false) = (&self.history, lines.is_empty()) {
                        let _ = self.editor.append_history(h);
                    }
                    lines
                }
                // Ctrl-C on an empty line, Ctrl-D: `quit` (which in a filer
                // with files going out waits, and the prompt stays).
                Err(ReadlineError::Interrupted) | Err(ReadlineError::Eof) => {
                    self.link.entered(&prompt, "", cols);
                    vec!["quit".to_string()]
                }
                Err(e) => {
                    eprintln!("error: reading the terminal: {e}");
                    let _ = remote.send(Input::Line("quit".into()));
                    return;
                }
            };
            for l in lines {
                let quit = matches!(l.trim(), "quit" | "exit");
                if remote.send(Input::Line(l)).is_err() {
                    return;
                }
                sent += 1;
                if quit && self.quit_taken(sent) == Quit::Stopping {
                    return;
                }
            }
            self.link.wait_done(sent, OUTPUT_WAIT);
        }
    }

    /// After a `quit` (the `sent`th line): waits until the loop took it, for a
    /// few seconds at most (a loop busy sending files may take a moment), and
    /// says whether it stops now or waits for transfers. A `quit` not taken by
    /// then (`connect` holds lines until its first dials end) counts as
    /// stopping: no prompt is drawn again, as before the quit was known.
    fn quit_taken(&self, sent: u64) -> Quit {
        for _ in 0..20 {
            if self.link.wait_done(sent, OUTPUT_WAIT) {
                return self.link.quit();
            }
            if self.link.quit() == Quit::Stopping {
                break;
            }
        }
        Quit::Stopping
    }
}

/// The command lines in what `readline` returned: split at line breaks (a
/// bracketed paste keeps them), blank ones dropped.
pub fn command_lines(text: &str) -> impl Iterator<Item = &str> {
    text.split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty())
}

/// Between prompts (while rustyline is not reading), keeps the terminal from
/// echoing and from collecting lines: keys typed or pasted ahead then wait in
/// the terminal, unseen, for the next prompt, which reads them as if typed
/// there (echoed they would land in the middle of the output, and be echoed
/// again by the prompt). Signals still work. rustyline returns to these
/// settings after each line, as they are what it found.
fn quiet_between_prompts() {
    // SAFETY: tcgetattr and tcsetattr on stdin with a termios we own.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(0, &mut t) != 0 {
            return;
        }
        t.c_lflag &= !(libc::ECHO | libc::ICANON | libc::IEXTEN);
        t.c_iflag &= !(libc::ICRNL | libc::IXON);
        t.c_cc[libc::VMIN] = 1;
        t.c_cc[libc::VTIME] = 0;
        // TCSANOW: what was typed ahead is kept (TCSAFLUSH would drop it).
        libc::tcsetattr(0, libc::TCSANOW, &t);
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
                        if !whole {
                            Input::Bad(format!(
                                "input line {n} is longer than {} MiB; skipped",
                                MAX_LINE >> 20
                            ))
                        } else if let Ok(line) = std::str::from_utf8(&buf) {
                            Input::Line(line.trim_end_matches('\r').to_string())
                        } else {
                            // Not silently changed to U+FFFD and sent: a script
                            // that feeds binary by mistake hears about it.
                            Input::Bad(format!("input line {n} is not valid UTF-8; not sent"))
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
    fn each_mode_has_its_own_history() {
        let serve = history_path("serve");
        if let (Some(s), Some(f)) = (&serve, history_path("filer")) {
            assert_ne!(s, &f);
            assert!(s.ends_with("sockmod/history-serve"), "{s:?}");
        }
    }

    #[test]
    fn a_pasted_block_is_one_command_per_line() {
        let got: Vec<&str> = command_lines("send 1 a\nsend 1 b\r\n\n  \nlist\n").collect();
        assert_eq!(got, vec!["send 1 a", "send 1 b", "list"]);
        assert_eq!(command_lines("  ").count(), 0);
        assert_eq!(command_lines("one").collect::<Vec<_>>(), vec!["one"]);
    }

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
