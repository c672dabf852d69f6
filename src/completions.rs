//! Shell completion scripts generated from the clap definition.

use crate::cli::Cli;
use clap::CommandFactory;
use clap_complete::Shell;

/// Writes the completion script for `shell`.
pub fn write(shell: Shell, out: &mut dyn std::io::Write) {
    clap_complete::generate(shell, &mut Cli::command(), "sockmod", out);
}

/// The script for `shell` as a string.
pub fn script(shell: Shell) -> String {
    let mut v = Vec::new();
    write(shell, &mut v);
    String::from_utf8_lossy(&v).into_owned()
}
