//! The command table: names, aliases, usage and help text.

/// One command of the language.
#[derive(Debug)]
pub struct CommandSpec {
    /// Canonical name.
    pub name: &'static str,
    /// Other names.
    pub aliases: &'static [&'static str],
    /// Usage line.
    pub usage: &'static str,
    /// One-line summary.
    pub summary: &'static str,
    /// Longer explanation for `help NAME`.
    pub detail: &'static str,
    /// Only in these modes (empty: every mode).
    pub modes: &'static [&'static str],
}

/// Every command, in the order `help` lists them.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "help",
        aliases: &["?"],
        usage: "help [COMMAND]",
        summary: "list commands or explain one",
        detail: "Without COMMAND, lists the commands of this mode.\n\
Lines are split like a shell (quotes work); a line starting with `#` is a comment.",
        modes: &[],
    },
    CommandSpec {
        name: "list",
        aliases: &["ls"],
        usage: "list",
        summary: "table of connections",
        detail: "Columns: id, direction, address, state, age, last seen, messages and bytes in/out.",
        modes: &[],
    },
    CommandSpec {
        name: "connect",
        aliases: &[],
        usage: "connect HOST:PORT",
        summary: "dial one more connection",
        detail: "The dial does not block: its outcome appears as a `+` (connected) or `!` (failed) event.\n\
It gets the next id at once, so what is sent to it meanwhile waits and goes out once it is up.",
        modes: &[],
    },
    CommandSpec {
        name: "send",
        aliases: &[],
        usage: "send TARGET [-H key=value]... [-b TEXT | -f PATH] [--] [TEXT...]",
        summary: "send a message to connections",
        detail: "TEXT becomes the header `info:TEXT`. -H adds header pairs (CL is set automatically), -b a text\n\
body, -f a body read whole from a file (at most --max-queue; filer: `sendfile` for big files);\n\
`-f -` sends what came on stdin when the commands are given with -c (`tar c d | sockmod connect H:P -c 'send * -f -'`).\n\
TARGET: 1, #1, 1,3, * (all), HOST:PORT of a connection, or (filer) a peer name.\n\
Text starting with a dash and a letter (-x) is taken for an option: put -- before it.\n\
Example: send 1 -H TP=note -b 'hello there'",
        modes: &[],
    },
    CommandSpec {
        name: "broadcast",
        aliases: &["bc"],
        usage: "broadcast [-H key=value]... [-b TEXT | -f PATH] [--] [TEXT...]",
        summary: "send to every connection",
        detail: "Like `send * …`: the frame is encoded once and shared.",
        modes: &[],
    },
    CommandSpec {
        name: "multicast",
        aliases: &["mc"],
        usage: "multicast LIST [-H key=value]... [-b TEXT | -f PATH] [--] [TEXT...]",
        summary: "send to the listed connections",
        detail: "LIST is comma-separated, e.g. `mc 1,3,5 hello`.",
        modes: &[],
    },
    CommandSpec {
        name: "close",
        aliases: &[],
        usage: "close TARGET",
        summary: "close connections",
        detail: "Pending writes are flushed first (for at most a few seconds).",
        modes: &[],
    },
    CommandSpec {
        name: "peers",
        aliases: &[],
        usage: "peers",
        summary: "list known peers",
        detail: "ipserver: who reported, from where, and when. filer: the address book from the roster.",
        modes: &["ipserver", "filer"],
    },
    CommandSpec {
        name: "dial",
        aliases: &[],
        usage: "dial NAME",
        summary: "connect to a peer from the roster",
        detail: "NAME as listed by `peers`. A peer already connected is not dialled twice.\n\
`send NAME …` and `sendfile NAME …` dial by themselves when needed.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "trust",
        aliases: &[],
        usage: "trust NAME",
        summary: "pin the key the ipserver now reports for a peer",
        detail: "The first key seen for a name is pinned (kept in the state directory); a different key later is\n\
refused, loudly. When the peer really has a new key, `trust NAME` pins the one the ipserver reports now.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "forget",
        aliases: &[],
        usage: "forget NAME",
        summary: "drop a peer's pinned key",
        detail: "The next key the ipserver reports for NAME is trusted on first use and pinned again.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "sendfile",
        aliases: &["sf"],
        usage: "sendfile TARGET PATH...",
        summary: "send files to a peer",
        detail: "Files queue per connection and go one at a time; different peers are served in parallel.\n\
Chat and other frames go out between chunks. The receiver stores each file in its --inbox under a safe\n\
name, verified by length and BLAKE3 digest; `sendfile bob,carol a.iso` sends to both.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "transfers",
        aliases: &[],
        usage: "transfers [tN]",
        summary: "list file transfers",
        detail: "Active, queued and finished transfers (this run): number, direction, peer, name, size,\n\
progress, rate and time, and the outcome (where a received file was stored, or why it failed).\n\
A folder is one line (files done/total); `transfers tN` lists that folder's files.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "cancel",
        aliases: &[],
        usage: "cancel tN",
        summary: "stop a file transfer",
        detail: "tN names the transfer as `transfers` and the transfer lines do (`cancel t3`; `cancel 3` works too);\n\
both sides of a transfer between sockmod filers use the same name. The other side is told and reports\n\
the transfer failed; the receiver removes its part file. A queued file is simply dropped.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "accept",
        aliases: &[],
        usage: "accept tN|*",
        summary: "take a file offered to this filer",
        detail: "Under --accept-files ask (the default) or known, each incoming file is first offered:\n\
`? bob offers \"trip.mov\" (4.2 GiB) — accept t3 / refuse t3`. `accept t3` takes it (if it still fits\n\
--max-file-size and --min-free), `accept *` takes every waiting offer. Nothing is written before.\n\
An offer not answered within --offer-timeout is refused.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "refuse",
        aliases: &[],
        usage: "refuse tN",
        summary: "refuse a file offered to this filer",
        detail: "The sender is told (`refused`) and reports the transfer failed.",
        modes: &["filer"],
    },
    CommandSpec {
        name: "quit",
        aliases: &["exit"],
        usage: "quit",
        summary: "close everything cleanly and exit",
        detail: "Pending writes are flushed (for at most a few seconds). Ctrl-D, and Ctrl-C on an empty line,\n\
do the same at the prompt; so do SIGINT and SIGTERM. Piped lines after `quit` are not run.\n\
filer: waits first for its files still going out (`quit` again, or Ctrl-C, stops at once).",
        modes: &[],
    },
];

/// Finds a command by name or alias.
pub fn find(name: &str) -> Option<&'static CommandSpec> {
    COMMANDS
        .iter()
        .find(|c| c.name == name || c.aliases.contains(&name))
}

/// The command `word` is one typo away from (a letter wrong, missing, extra, or
/// two swapped), for words of three letters or more.
pub fn near_miss(word: &str) -> Option<&'static str> {
    let w: Vec<char> = word.chars().collect();
    if w.len() < 3 {
        return None;
    }
    COMMANDS
        .iter()
        .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
        .filter(|n| n.len() >= 3)
        .find(|n| {
            let n: Vec<char> = n.chars().collect();
            one_edit(&w, &n)
        })
}

/// True when `a` and `b` differ by exactly one edit (substitution, insertion,
/// deletion, or a swap of neighbours).
fn one_edit(a: &[char], b: &[char]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => {
            let diff: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
            match diff.as_slice() {
                [_] => true,
                [i, j] => *j == i + 1 && a[*i] == b[*j] && a[*j] == b[*i],
                _ => false,
            }
        }
        1 => {
            let i = (0..short.len())
                .find(|&i| short[i] != long[i])
                .unwrap_or(short.len());
            short[i..] == long[i + 1..]
        }
        _ => false,
    }
}

/// True when the command exists in `mode`.
pub fn available(spec: &CommandSpec, mode: &str) -> bool {
    spec.modes.is_empty() || spec.modes.contains(&mode)
}

/// `help` output for `mode`, or for one command.
pub fn help_text(mode: &str, topic: Option<&str>) -> Result<String, String> {
    match topic {
        Some(t) => {
            let c = find(t).ok_or_else(|| format!("help: no command {}", super::quoted(t)))?;
            let mut s = format!("{}\n  {}", c.usage, c.summary);
            if !c.aliases.is_empty() {
                s.push_str(&format!(" (also: {})", c.aliases.join(", ")));
            }
            if !available(c, mode) {
                let modes = if c.modes.len() > 1 { "modes" } else { "mode" };
                s.push_str(&format!(" (only in {} {modes})", c.modes.join(" and ")));
            }
            if !c.detail.is_empty() {
                for l in c.detail.lines() {
                    s.push_str("\n  ");
                    s.push_str(l);
                }
            }
            Ok(s)
        }
        None => {
            let names: Vec<(String, &str)> = COMMANDS
                .iter()
                .filter(|c| available(c, mode))
                .map(|c| {
                    let name = if c.aliases.is_empty() {
                        c.name.to_string()
                    } else {
                        format!("{} ({})", c.name, c.aliases.join(", "))
                    };
                    (name, c.summary)
                })
                .collect();
            let width = names
                .iter()
                .map(|(n, _)| n.chars().count())
                .max()
                .unwrap_or(0);
            let mut s = String::from("commands:");
            for (name, summary) in names {
                s.push_str(&format!("\n  {name:<width$}  {summary}"));
            }
            s.push_str("\ntype `help COMMAND` for details");
            Ok(s)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_shows_aliases_aligned() {
        let h = help_text("filer", None).unwrap();
        let rows: Vec<&str> = h.lines().filter(|l| l.starts_with("  ")).collect();
        assert!(
            rows.contains(&"  list (ls)       table of connections"),
            "{h}"
        );
        for alias in [
            "help (?)",
            "broadcast (bc)",
            "multicast (mc)",
            "sendfile (sf)",
            "quit (exit)",
        ] {
            assert!(h.contains(alias), "{alias} missing in {h}");
        }
        // Every summary starts in the same column.
        let cols: Vec<usize> = COMMANDS
            .iter()
            .filter(|c| available(c, "filer"))
            .map(|c| {
                let row = rows.iter().find(|r| r.ends_with(c.summary)).unwrap();
                row.len() - c.summary.len()
            })
            .collect();
        assert_eq!(cols.len(), rows.len());
        assert!(cols.windows(2).all(|w| w[0] == w[1]), "{h}");
        assert!(!help_text("serve", None).unwrap().contains("sendfile"));
    }

    #[test]
    fn details_follow_the_behaviour() {
        let quit = help_text("filer", Some("quit")).unwrap();
        assert!(quit.contains("waits first for its files"), "{quit}");
        assert!(quit.contains("after `quit` are not run"), "{quit}");
        let send = help_text("serve", Some("send")).unwrap();
        assert!(send.contains("put -- before it"), "{send}");
    }

    #[test]
    fn near_misses() {
        assert_eq!(near_miss("sned"), Some("send"));
        assert_eq!(near_miss("lsit"), Some("list"));
        assert_eq!(near_miss("quti"), Some("quit"));
        assert_eq!(near_miss("sendd"), Some("send"));
        assert_eq!(near_miss("clse"), Some("close"));
        assert_eq!(near_miss("hello"), None);
        assert_eq!(near_miss("hi"), None);
        assert_eq!(near_miss("send"), None);
    }
}
