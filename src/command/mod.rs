//! The command language of the REPL and of piped stdin (README, "Command language").
//!
//! A line is split like a shell (quotes work) and parsed into a [`Command`]. This
//! module knows nothing of sockets: it only says what the user asked for.

mod help;
mod target;

pub use help::{COMMANDS, CommandSpec, available, help_text};
pub use target::{Item, Target};

/// Long text the user typed (a path), clipped to a few hundred characters for
/// an error message; short text is returned as it is.
pub fn clipped(s: &str) -> std::borrow::Cow<'_, str> {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        None => s.into(),
        Some((end, _)) => format!("{}… ({} bytes)", &s[..end], s.len()).into(),
    }
}

/// A word the user typed, for an error message: quoted, escaped, and clipped so
/// that one bad word (a pasted blob) cannot make an error line of kilobytes.
pub fn quoted(s: &str) -> String {
    // Counted in bytes of the escaped text: a control character escapes to up
    // to ten (`\u{1f}`), found by fuzzing.
    const MAX: usize = 60;
    let mut out = String::with_capacity(s.len().min(MAX) + 8);
    out.push('"');
    for c in s.chars() {
        if out.len() > MAX {
            out.push('…');
            break;
        }
        if c == '\'' {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out.push('"');
    out
}

use crate::protocol::Header;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What the front end (the REPL, or the reader of piped stdin) hands to the
/// loop. (Signals take another way: [`crate::net::Remote::interrupt`].)
#[derive(Debug)]
pub enum Input {
    /// A command line.
    Line(String),
    /// A line that could not be taken (too long), with the reason: a failed
    /// command.
    Bad(String),
    /// End of input (Ctrl-D in the REPL runs `quit` instead).
    Eof,
}

/// Connection ids and peer names offered by tab completion; written by the loop,
/// read by the REPL.
pub type CompletionTargets = Arc<Mutex<Vec<String>>>;

/// Where a message body comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum BodySource {
    /// No body.
    #[default]
    None,
    /// `-b TEXT`.
    Text(String),
    /// `-f PATH`, read when the command runs.
    File(PathBuf),
    /// `-f -`: the bytes of stdin, read before the loop starts when commands
    /// come from `-c` (stdin is otherwise the command source).
    Stdin,
}

impl Outgoing {
    /// True when the body is `-f -` (stdin).
    pub fn reads_stdin(&self) -> bool {
        self.body == BodySource::Stdin
    }
}

impl Command {
    /// True for a send whose body is `-f -`.
    pub fn reads_stdin(&self) -> bool {
        match self {
            Command::Send(_, o) | Command::Broadcast(o) | Command::Multicast(_, o) => {
                o.reads_stdin()
            }
            _ => false,
        }
    }
}

/// The canonical name of the command a line starts with, if it names one (for
/// the `error` event of a line that did not parse).
pub fn command_name(line: &str) -> Option<&'static str> {
    let first = line.split_whitespace().next()?;
    help::find(first).map(|c| c.name)
}

/// A message to send: header and body source.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outgoing {
    /// Header pairs in the order given.
    pub header: Header,
    /// The body.
    pub body: BodySource,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `help [COMMAND]`.
    Help(Option<String>),
    /// `list`.
    List,
    /// `connect HOST:PORT`.
    Connect(String),
    /// `send TARGET …`.
    Send(Target, Outgoing),
    /// `broadcast …`.
    Broadcast(Outgoing),
    /// `multicast LIST …`.
    Multicast(Target, Outgoing),
    /// `close TARGET`.
    Close(Target),
    /// `quit`.
    Quit,
    /// `peers` (ipserver, filer).
    Peers,
    /// `dial NAME` (filer).
    Dial(String),
    /// `trust NAME` (filer): pin the key the ipserver reports for NAME.
    Trust(String),
    /// `forget NAME` (filer): drop NAME's pin.
    Forget(String),
    /// `sendfile TARGET PATH...` (filer).
    SendFile(Target, Vec<PathBuf>),
    /// `transfers` (filer).
    Transfers(Option<u64>),
    /// `cancel N` (filer).
    Cancel(u64),
    /// `accept N`, or `accept *` (`None`) (filer).
    Accept(Option<u64>),
    /// `refuse N` (filer).
    Refuse(u64),
}

impl Command {
    /// The command's canonical name (as in [`COMMANDS`]).
    pub fn name(&self) -> &'static str {
        match self {
            Command::Help(_) => "help",
            Command::List => "list",
            Command::Connect(_) => "connect",
            Command::Send(..) => "send",
            Command::Broadcast(_) => "broadcast",
            Command::Multicast(..) => "multicast",
            Command::Close(_) => "close",
            Command::Quit => "quit",
            Command::Peers => "peers",
            Command::Dial(_) => "dial",
            Command::Trust(_) => "trust",
            Command::Forget(_) => "forget",
            Command::SendFile(..) => "sendfile",
            Command::Transfers(_) => "transfers",
            Command::Cancel(_) => "cancel",
            Command::Accept(_) => "accept",
            Command::Refuse(_) => "refuse",
        }
    }
}

/// Splits a line into words like a shell: quotes and backslashes work, but `#`
/// is an ordinary character (targets are written `#1`; text may hold one),
/// not the start of a comment. `None` when a quote is not closed or the line
/// ends in a lone backslash.
pub fn split_words(line: &str) -> Option<Vec<String>> {
    // shlex takes `#` at the start of a word as a comment: escape every `#`
    // outside quotes (`\#` is a literal `#` there; inside quotes it is one
    // already, and a backslash there would stay).
    if !line.contains('#') {
        return shlex::split(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    let mut chars = line.chars();
    let (mut single, mut double) = (false, false);
    while let Some(c) = chars.next() {
        match c {
            '\\' if !single => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            '#' if !single && !double => out.push('\\'),
            _ => {}
        }
        out.push(c);
    }
    shlex::split(&out)
}

/// A transfer number as written: `t3`, `3` or `#3`.
fn transfer_number(cmd: &str, n: &str) -> Result<u64, String> {
    n.strip_prefix(['t', 'T'])
        .unwrap_or_else(|| n.trim_start_matches('#'))
        .parse()
        .map_err(|_| format!("{cmd}: {} is not a transfer (want t3, or 3)", quoted(n)))
}

/// Parses one line. `Ok(None)` for a blank line or a comment (a line whose
/// first non-blank character is `#`).
pub fn parse(line: &str) -> Result<Option<Command>, String> {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let Some(words) = split_words(trimmed) else {
        // Chat text with an apostrophe (`what's up`) is no command either.
        let first = trimmed.split_whitespace().next().unwrap_or_default();
        return Err(match help::find(first) {
            None if !first.contains(['"', '\\']) => unknown(first, trimmed),
            _ => "unbalanced quotes".to_string(),
        });
    };
    let Some((name, args)) = words.split_first() else {
        return Ok(None);
    };
    let spec = help::find(name).ok_or_else(|| unknown(name, trimmed))?;
    let usage = || format!("usage: {}", spec.usage);
    let cmd = match spec.name {
        "help" => {
            if args.len() > 1 {
                return Err(usage());
            }
            Command::Help(args.first().cloned())
        }
        "list" => no_args(args, Command::List, usage)?,
        "quit" => no_args(args, Command::Quit, usage)?,
        "peers" => no_args(args, Command::Peers, usage)?,
        "transfers" => match args {
            [] => Command::Transfers(None),
            // A folder batch's files.
            [n] => Command::Transfers(Some(transfer_number("transfers", n)?)),
            _ => return Err(usage()),
        },
        "connect" => match args {
            // Checked as on the command line: a bad port is refused here, not
            // reported later as a failed dial (or a failed name lookup).
            [a] => Command::Connect(
                crate::net::parse_host_port(a).map_err(|e| format!("connect: {e}"))?,
            ),
            _ => return Err(usage()),
        },
        "dial" => match args {
            [a] => Command::Dial(a.clone()),
            _ => return Err(usage()),
        },
        "trust" => match args {
            [a] => Command::Trust(a.clone()),
            _ => return Err(usage()),
        },
        "forget" => match args {
            [a] => Command::Forget(a.clone()),
            _ => return Err(usage()),
        },
        "cancel" => match args {
            // `t3` as transfers are named; `3` and `#3` as before.
            [n] => Command::Cancel(transfer_number("cancel", n)?),
            _ => return Err(usage()),
        },
        "accept" => match args {
            [n] if n == "*" => Command::Accept(None),
            [n] => Command::Accept(Some(transfer_number("accept", n)?)),
            _ => return Err(usage()),
        },
        "refuse" => match args {
            [n] => Command::Refuse(transfer_number("refuse", n)?),
            _ => return Err(usage()),
        },
        "close" => match args {
            [t] => Command::Close(Target::parse(t)?),
            _ => return Err(usage()),
        },
        "send" | "multicast" => {
            let Some((t, rest)) = args.split_first() else {
                return Err(usage());
            };
            let target = Target::parse(t)?;
            let out = outgoing(rest).map_err(|e| format!("{}: {e}", spec.name))?;
            if spec.name == "send" {
                Command::Send(target, out)
            } else {
                Command::Multicast(target, out)
            }
        }
        "broadcast" => Command::Broadcast(outgoing(args).map_err(|e| format!("broadcast: {e}"))?),
        "sendfile" => {
            let Some((t, paths)) = args.split_first() else {
                return Err(usage());
            };
            if paths.is_empty() {
                return Err(usage());
            }
            Command::SendFile(Target::parse(t)?, paths.iter().map(PathBuf::from).collect())
        }
        _ => return Err(format!("unknown command {}", quoted(name))),
    };
    Ok(Some(cmd))
}

/// The error for an unknown command `name` on `line`: with a hint when the user
/// seems to have typed plain text (how to send it) or misspelt a command.
fn unknown(name: &str, line: &str) -> String {
    let q = quoted(name);
    if let Some(near) = help::near_miss(name) {
        return format!("unknown command {q} (did you mean `{near}`? type `help` for the list)");
    }
    let wordy = name.chars().count() <= 30
        && name.chars().any(char::is_alphabetic)
        && name
            .chars()
            .all(|c| c.is_alphabetic() || matches!(c, '\'' | '’' | ',' | '.' | '!' | '?' | '-'));
    if wordy && !line.chars().any(char::is_control) {
        return format!(
            "unknown command {q} (type `help` for the list; to send text: send * {})",
            clipped(line)
        );
    }
    format!("unknown command {q} (type `help` for the list)")
}

fn no_args(args: &[String], c: Command, usage: impl Fn() -> String) -> Result<Command, String> {
    if args.is_empty() { Ok(c) } else { Err(usage()) }
}

/// A word that reads as an option (`-x`, `--xyz`), not as text like `-1`, `-`
/// or `->`: a typo such as `-B` is refused instead of sent as the message.
fn looks_like_option(w: &str) -> bool {
    let rest = w.strip_prefix("--").or_else(|| w.strip_prefix('-'));
    rest.and_then(|r| r.chars().next())
        .is_some_and(|c| c.is_ascii_alphabetic())
}

/// Parses `[-H key=value]... [-b TEXT | -f PATH] [--] [TEXT...]`.
fn outgoing(args: &[String]) -> Result<Outgoing, String> {
    let mut out = Outgoing::default();
    let mut text: Vec<&str> = Vec::new();
    let mut it = args.iter();
    let mut options_done = false;
    while let Some(a) = it.next() {
        if options_done {
            text.push(a);
            continue;
        }
        match a.as_str() {
            "--" => options_done = true,
            "-H" | "--header" => {
                let kv = it.next().ok_or("-H needs key=value")?;
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| format!("-H {}: want key=value", quoted(kv)))?;
                if k.is_empty() {
                    return Err(format!("-H {}: empty key", quoted(kv)));
                }
                if k == "CL" {
                    return Err("-H CL: the body length is set automatically".into());
                }
                out.header.set(k, v);
            }
            "-b" | "--body" => {
                let b = it.next().ok_or("-b needs TEXT")?;
                if out.body != BodySource::None {
                    return Err("give only one of -b and -f".into());
                }
                out.body = BodySource::Text(b.clone());
            }
            "-f" | "--file" => {
                let p = it.next().ok_or("-f needs PATH")?;
                if p.is_empty() {
                    return Err("-f needs PATH (it was empty)".into());
                }
                if out.body != BodySource::None {
                    return Err("give only one of -b and -f".into());
                }
                out.body = if p == "-" {
                    BodySource::Stdin
                } else {
                    BodySource::File(PathBuf::from(p))
                };
            }
            o if looks_like_option(o) => {
                return Err(format!(
                    "unknown option {} (options are -H, -b, -f; to send it as text, put -- before the text: -- {})",
                    quoted(o),
                    quoted(o)
                ));
            }
            _ => text.push(a),
        }
    }
    if !text.is_empty() {
        out.header.set("info", text.join(" "));
    }
    if out.header.is_empty() && out.body == BodySource::None {
        return Err("nothing to send (give TEXT, -H key=value, -b TEXT or -f PATH)".into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Command {
        parse(s).unwrap().unwrap()
    }

    #[test]
    fn send_forms() {
        assert_eq!(
            ok("send 1 hello   world"),
            Command::Send(
                Target::List(vec![Item::Id(1)]),
                Outgoing {
                    header: Header::new().with("info", "hello world"),
                    body: BodySource::None
                }
            )
        );
        let Command::Send(_, o) = ok("send * -H TP=x -H 'a=b c' -b 'body text' -- -dash") else {
            panic!()
        };
        assert_eq!(
            o.header.iter().collect::<Vec<_>>(),
            vec![("TP", "x"), ("a", "b c"), ("info", "-dash")]
        );
        assert_eq!(o.body, BodySource::Text("body text".into()));
        assert!(matches!(ok("bc hi"), Command::Broadcast(_)));
        assert!(ok("send * -H TP=x -f -").reads_stdin());
        assert!(ok("bc -f -").reads_stdin());
        assert!(!ok("send 1 -f ./-").reads_stdin());
        assert_eq!(command_name("  bc  hi"), Some("broadcast"));
        assert_eq!(command_name("hello"), None);
        assert!(matches!(ok("mc 1,3 hi"), Command::Multicast(..)));
        assert!(matches!(
            ok("send 1 -f /tmp/x"),
            Command::Send(
                _,
                Outgoing {
                    body: BodySource::File(_),
                    ..
                }
            )
        ));
    }

    #[test]
    fn errors_are_clear() {
        assert!(parse("frobnicate").unwrap_err().contains("unknown command"));
        assert!(parse("send").unwrap_err().contains("usage"));
        assert!(parse("send 1").unwrap_err().contains("nothing to send"));
        assert!(parse("send 1 -H novalue").is_err());
        assert!(parse("send 1 -b").is_err());
        assert!(parse("send 1 -f ''").unwrap_err().contains("empty"));
        assert!(parse("send 1 'unbalanced").is_err());
        assert!(parse("close").is_err());
        assert!(parse("list extra").is_err());
        assert!(parse("cancel x").is_err());
        assert_eq!(parse("   ").unwrap(), None);
        assert_eq!(parse("# comment").unwrap(), None);
    }

    #[test]
    fn unknown_options_are_refused_but_dashes_in_text_are_not() {
        for bad in ["send 1 -B hi", "bc --bdy x", "mc 1,2 hi -x"] {
            let e = parse(bad).unwrap_err();
            assert!(
                e.contains("unknown option") && e.contains("put --"),
                "{bad}: {e}"
            );
        }
        assert_eq!(info("send 1 -- -B hi"), "-B hi");
        assert_eq!(info("send 1 -1 degrees"), "-1 degrees");
        assert_eq!(info("send 1 -> a - b"), "-> a - b");
    }

    fn info(line: &str) -> String {
        match ok(line) {
            Command::Send(_, o) | Command::Broadcast(o) | Command::Multicast(_, o) => {
                o.header.get("info").unwrap_or_default().to_string()
            }
            c => panic!("not a send: {c:?}"),
        }
    }

    #[test]
    fn hash_is_an_ordinary_character() {
        assert_eq!(
            ok("send #1 hello"),
            Command::Send(
                Target::List(vec![Item::Id(1)]),
                Outgoing {
                    header: Header::new().with("info", "hello"),
                    body: BodySource::None
                }
            )
        );
        assert_eq!(
            ok("close #1"),
            Command::Close(Target::List(vec![Item::Id(1)]))
        );
        assert_eq!(ok("cancel #3"), Command::Cancel(3));
        assert_eq!(ok("cancel t3"), Command::Cancel(3));
        assert_eq!(ok("cancel 3"), Command::Cancel(3));
        assert_eq!(ok("accept t3"), Command::Accept(Some(3)));
        assert_eq!(ok("accept *"), Command::Accept(None));
        assert_eq!(ok("refuse t4"), Command::Refuse(4));
        assert!(parse("cancel tx").is_err());
        assert_eq!(info("send 1 text with # hash"), "text with # hash");
        assert_eq!(info("send 1 #tag #"), "#tag #");
        assert_eq!(info("bc a#b"), "a#b");
        // Quotes and escapes still work, with `#` inside and around them.
        assert_eq!(
            info("send 1 '# in single' \"# in double\""),
            "# in single # in double"
        );
        assert_eq!(info("send 1 \\# 'it''s' \"a \\\" #\""), "# its a \" #");
        assert_eq!(info("send 1 \"#\"#'#'"), "###");
        assert!(parse("send 1 '#").is_err());
        // A line whose first non-blank character is `#` is a comment.
        assert_eq!(parse("#1 hello").unwrap(), None);
        assert_eq!(parse("   #comment").unwrap(), None);
        assert_eq!(parse("# comment").unwrap(), None);
    }

    #[test]
    fn unknown_commands_hint() {
        assert_eq!(
            parse("hello world").unwrap_err(),
            "unknown command \"hello\" (type `help` for the list; to send text: send * hello world)"
        );
        assert_eq!(
            parse("  what's up?").unwrap_err(),
            "unknown command \"what's\" (type `help` for the list; to send text: send * what's up?)"
        );
        assert_eq!(
            parse("sedn 1 hi").unwrap_err(),
            "unknown command \"sedn\" (did you mean `send`? type `help` for the list)"
        );
        assert_eq!(
            parse("bogus28").unwrap_err(),
            "unknown command \"bogus28\" (type `help` for the list)"
        );
        // One line, clipped, however long the text.
        let long = format!("hello {}", "word ".repeat(10_000));
        let e = parse(&long).unwrap_err();
        assert!(e.len() < 400 && !e.contains('\n'), "{e}");
        let e = parse(&"x".repeat(100_000)).unwrap_err();
        assert!(e.len() < 200, "{e}");
    }

    #[test]
    fn aliases() {
        assert_eq!(ok("ls"), Command::List);
        assert_eq!(ok("exit"), Command::Quit);
        assert_eq!(ok("help send"), Command::Help(Some("send".into())));
    }

    proptest::proptest! {
        /// Words of ordinary characters and `#`, joined by spaces, split back
        /// into the same words.
        #[test]
        fn plain_words_split_back(words in proptest::collection::vec("[a-z0-9#*,.:!?-]{1,8}", 1..8)) {
            proptest::prop_assert_eq!(split_words(&words.join(" ")), Some(words));
        }

        /// Any words, quoted for a shell, split back into the same words.
        #[test]
        fn quoted_words_split_back(words in proptest::collection::vec("[^\\x00\n]{0,12}", 1..6)) {
            let line = words
                .iter()
                .map(|w| shlex::try_quote(w).unwrap().into_owned())
                .collect::<Vec<_>>()
                .join(" ");
            proptest::prop_assert_eq!(split_words(&line), Some(words));
        }

        /// Nothing typed panics the parser.
        #[test]
        fn parse_never_panics(line in "\\PC{0,40}") {
            let _ = parse(&line);
        }
    }
}
