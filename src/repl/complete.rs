//! Tab completion of commands, targets and paths.

use crate::command::CompletionTargets;
use crate::command::{COMMANDS, available};
use rustyline::completion::{Completer, FilenameCompleter, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

/// The REPL's helper: completes command names, then targets (ids and peer names),
/// and file paths for `sendfile` and `-f`.
pub struct SockHelper {
    /// Live targets, kept current by the loop.
    pub targets: CompletionTargets,
    /// The mode, to offer only its commands.
    pub mode: &'static str,
    files: FilenameCompleter,
}

impl SockHelper {
    /// A helper for `mode`.
    pub fn new(mode: &'static str, targets: CompletionTargets) -> Self {
        SockHelper {
            targets,
            mode,
            files: FilenameCompleter::new(),
        }
    }
}

/// Candidates for the word being typed: `(start, candidates)`.
pub fn candidates(line: &str, pos: usize, mode: &str, targets: &[String]) -> (usize, Vec<String>) {
    let before = &line[..pos];
    let start = before.rfind(char::is_whitespace).map_or(0, |i| i + 1);
    let word = &before[start..];
    let words: Vec<&str> = before[..start].split_whitespace().collect();
    let list: Vec<String> = match words.as_slice() {
        [] => COMMANDS
            .iter()
            .filter(|c| available(c, mode))
            .flat_map(|c| std::iter::once(c.name).chain(c.aliases.iter().copied()))
            .filter(|n| n.starts_with(word))
            .map(str::to_string)
            .collect(),
        ["help"] => COMMANDS
            .iter()
            .map(|c| c.name)
            .filter(|n| n.starts_with(word))
            .map(str::to_string)
            .collect(),
        [cmd] if ["send", "close", "multicast", "mc", "sendfile", "sf", "dial"].contains(cmd) => {
            // Complete the last element of a comma-separated list.
            let (head, last) = match word.rfind(',') {
                Some(i) => (&word[..=i], &word[i + 1..]),
                None => ("", word),
            };
            let mut v: Vec<String> = targets
                .iter()
                .filter(|t| t.starts_with(last) || t.trim_start_matches('#').starts_with(last))
                .map(|t| format!("{head}{t}"))
                .collect();
            if head.is_empty() && "*".starts_with(word) && *cmd != "dial" {
                v.push("*".to_string());
            }
            v
        }
        _ => Vec::new(),
    };
    (start, list)
}

impl Completer for SockHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let words: Vec<&str> = line[..pos].split_whitespace().collect();
        let wants_path = matches!(words.first(), Some(&"sendfile") | Some(&"sf"))
            && words.len() >= 2
            && (line[..pos].ends_with(char::is_whitespace) || words.len() > 2)
            || words
                .iter()
                .rev()
                .nth(usize::from(!line[..pos].ends_with(char::is_whitespace)))
                == Some(&"-f");
        if wants_path {
            return self.files.complete(line, pos, ctx);
        }
        let targets = self.targets.lock().map(|g| g.clone()).unwrap_or_default();
        let (start, list) = candidates(line, pos, self.mode, &targets);
        Ok((
            start,
            list.into_iter()
                .map(|s| Pair {
                    display: s.clone(),
                    replacement: s,
                })
                .collect(),
        ))
    }
}

impl Hinter for SockHelper {
    type Hint = String;
}
impl Highlighter for SockHelper {}
impl Validator for SockHelper {}
impl Helper for SockHelper {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completes_commands_and_targets() {
        let t = vec!["#1".to_string(), "#12".to_string(), "alice".to_string()];
        assert_eq!(
            candidates("se", 2, "serve", &t),
            (0, vec!["send".to_string()])
        );
        assert!(
            !candidates("", 0, "serve", &t)
                .1
                .contains(&"sendfile".to_string())
        );
        assert!(
            candidates("", 0, "filer", &t)
                .1
                .contains(&"sendfile".to_string())
        );
        assert_eq!(candidates("send 1", 6, "serve", &t).1, vec!["#1", "#12"]);
        assert_eq!(candidates("mc 1,a", 6, "filer", &t).1, vec!["1,alice"]);
        assert_eq!(
            candidates("send 1 hel", 10, "serve", &t).1,
            Vec::<String>::new()
        );
    }
}
