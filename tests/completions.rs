//! The completion scripts in `completions/` must match the clap definition.
//! Regenerate with: `UPDATE_COMPLETIONS=1 cargo test --test completions`.

use clap_complete::Shell;
use std::path::PathBuf;

fn path(shell: Shell) -> PathBuf {
    let name = match shell {
        Shell::Bash => "sockmod.bash",
        Shell::Zsh => "_sockmod",
        Shell::Fish => "sockmod.fish",
        _ => unreachable!("only bash, zsh and fish are checked in"),
    };
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("completions")
        .join(name)
}

#[test]
fn completions_are_current() {
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let want = sockmod::completions::script(shell);
        let p = path(shell);
        if std::env::var_os("UPDATE_COMPLETIONS").is_some() {
            std::fs::write(&p, &want).unwrap();
            continue;
        }
        let have = std::fs::read_to_string(&p).unwrap_or_default();
        assert!(
            have == want,
            "{} is stale: run `UPDATE_COMPLETIONS=1 cargo test --test completions`",
            p.display()
        );
    }
}

#[test]
fn binary_prints_the_same_script() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sockmod"))
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        sockmod::completions::script(Shell::Bash)
    );
}
