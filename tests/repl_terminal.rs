//! The prompt on a pseudo-terminal: Tab completes the `HOST:PORT` of current
//! connections; each mode keeps its own history file.

mod common;

use common::*;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

const ROWS: u16 = 40;
const COLS: u16 = 120;

struct Pty {
    child: Child,
    input: File,
    screen: Arc<Mutex<vt100::Parser>>,
    state: PathBuf,
}

impl Pty {
    fn spawn(args: &[&str]) -> Pty {
        let (master, slave) = open_pty(ROWS, COLS);
        let state = tmp_path("pty-term-state");
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TERM", "xterm-256color")
            .env("XDG_STATE_HOME", &state)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn sockmod on a pty");
        let input = File::from(master.try_clone().unwrap());
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            std::num::NonZeroU16::new(ROWS).unwrap(),
            std::num::NonZeroU16::new(COLS).unwrap(),
            0,
        )));
        let s = screen.clone();
        let mut out = File::from(master);
        std::thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = out.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().process(&buf[..n]);
            }
        });
        Pty {
            child,
            input,
            screen,
            state,
        }
    }

    fn keys(&mut self, keys: &str) {
        self.input.write_all(keys.as_bytes()).unwrap();
        self.input.flush().unwrap();
    }

    fn rows(&self) -> Vec<String> {
        let p = self.screen.lock().unwrap();
        p.screen()
            .rows(0, COLS)
            .map(|r| r.trim_end().to_string())
            .filter(|r| !r.is_empty())
            .collect()
    }

    fn wait(&self, what: &str, mut pred: impl FnMut(&[String]) -> bool) -> Vec<String> {
        let mut last = Vec::new();
        let ok = wait_until(TIMEOUT, || {
            last = self.rows();
            pred(&last)
        });
        assert!(
            ok,
            "timed out waiting for {what}; screen:\n{}",
            last.join("\n")
        );
        last
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tab_completes_the_address_of_a_connection_and_history_is_per_mode() {
    let mut t = Pty::spawn(&["serve", "--bind", "127.0.0.1:0"]);
    let rows = t.wait("the first prompt", |r| {
        r.first().is_some_and(|l| l.starts_with("listening on "))
            && r.last().is_some_and(|l| l == "serve>")
    });
    let addr: std::net::SocketAddr = rows[0]
        .strip_prefix("listening on ")
        .and_then(|a| a.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    let mut c = Client::connect(addr);
    let peer = c.local_addr().to_string();
    t.wait("the connection", |r| {
        r.iter().any(|l| l.starts_with("+ #1 in"))
    });
    // Tab after the start of the address completes the whole of it.
    t.keys("send 127.0.0.");
    t.keys("\t");
    let want = format!("serve> send {peer}");
    t.wait("the completed address", |r| {
        r.last().is_some_and(|l| l.trim_end() == want)
    });
    t.keys(" hello\r");
    assert_eq!(info(&c.expect_frame()), "hello");
    let file = t.state.join("sockmod").join("history-serve");
    let ok = wait_until(TIMEOUT, || {
        std::fs::read_to_string(&file).is_ok_and(|h| h.contains("hello"))
    });
    assert!(ok, "no history in {}", file.display());
    assert!(!t.state.join("sockmod").join("history").exists());
}
