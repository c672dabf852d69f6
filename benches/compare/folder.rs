//! The folder and resume rows.
//!
//! folder: a folder of many 4 KiB files sent filer → filer (`connect` and
//! `sendfile ADDR DIR`, until the receiver's `done` for the folder, which is
//! moved into its inbox only once every file is verified) against
//! `tar c DIR | socat` → `socat | tar x -C DEST`.
//!
//! resume: a file cut at 90% by a relay that forwards only the first 90% of
//! the sender's bytes and then closes both sides; the time of the `sendfile`
//! again (the remainder, from the receiver's verified part file) against a
//! full transfer of the same file.

use super::{FilerProc, KillOnDrop, Res, Watchdog, free_port, have, listen_queue};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes in each file of the folder row.
pub const FILE_BYTES: usize = 4096;

/// The folder row's source: `files` files of [`FILE_BYTES`] pseudo-random
/// bytes in folders of 1000, under `target/bench-files` (made once, kept
/// while complete).
pub fn source(files: usize) -> (PathBuf, Res<()>) {
    let dir = Path::new(super::MANIFEST_DIR).join("target/bench-files");
    let src = dir.join(format!("folder-{files}"));
    let done = src.join(".complete");
    let prepare = || -> Res<()> {
        if done.exists() {
            return Ok(());
        }
        let _ = std::fs::remove_dir_all(&src);
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut block = vec![0u8; FILE_BYTES];
        for i in 0..files {
            let sub = src.join(format!("d{:03}", i / 1000));
            if i % 1000 == 0 {
                std::fs::create_dir_all(&sub).map_err(|e| e.to_string())?;
            }
            for c in block.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                c.copy_from_slice(&x.to_le_bytes());
            }
            std::fs::write(sub.join(format!("f{i:05}.bin")), &block).map_err(|e| e.to_string())?;
        }
        std::fs::write(&done, b"").map_err(|e| e.to_string())
    };
    let ready = prepare();
    (src, ready)
}

/// Files (not folders, not the `.complete` marker) under `dir`.
fn count_files(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => count_files(&e.path()),
            Ok(t) if t.is_file() && e.file_name() != ".complete" => 1,
            _ => 0,
        })
        .sum()
}

/// Reads bob's output until the receiving side of a transfer ends: `Ok` with
/// the line for `done`, `Err` for `failed`.
fn recv_ended(bob: &mut FilerProc) -> Res<String> {
    loop {
        let l = bob.out.next_line()?;
        if l.contains("\"event\":\"transfer\"") && l.contains("\"dir\":\"recv\"") {
            if l.contains("\"state\":\"done\"") {
                return Ok(l);
            }
            if l.contains("\"state\":\"failed\"") {
                return Err(format!("transfer failed: {l}"));
            }
        }
    }
}

/// sockmod filer → filer: seconds from `sendfile` to the receiver's `done`
/// for the folder `src` of `files` files.
pub fn folder_sockmod(src: &Path, dir: &Path, files: usize) -> Res<f64> {
    let inbox = dir.join("inbox-folder");
    let _ = std::fs::remove_dir_all(&inbox);
    let mut bob = FilerProc::start("bob", &inbox)?;
    let mut alice = FilerProc::start("alice", &dir.join("inbox-alice"))?;
    let _watchdog = Watchdog::new(
        vec![bob.proc.0.id(), alice.proc.0.id()],
        Duration::from_secs(300),
    );
    let addr = format!("127.0.0.1:{}", bob.port);
    alice.send(&format!("connect {addr}"))?;
    alice.out.until("\"event\":\"identified\"")?;
    let t0 = Instant::now();
    alice.send(&format!("sendfile {addr} {}", src.display()))?;
    recv_ended(&mut bob)?;
    let dt = t0.elapsed().as_secs_f64();
    let got = count_files(&inbox.join(src.file_name().unwrap_or_default()));
    if got != files {
        return Err(format!("received {got} files of {files}"));
    }
    let _ = std::fs::remove_dir_all(&inbox);
    Ok(dt)
}

/// `tar c DIR | socat -u - TCP:…` into `socat -u TCP-LISTEN:… - | tar x -C
/// DEST`: seconds from the sender's start until both ends exited.
pub fn folder_tar(src: &Path, dir: &Path, files: usize) -> Res<f64> {
    have("socat")?;
    have("tar")?;
    let dest = dir.join("tar-dest");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir_all(&dest).map_err(|e| e.to_string())?;
    let port = free_port()?;
    let (parent, name) = match (src.parent(), src.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Err("no folder name".into()),
    };
    let recv = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "socat -u TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr - | tar x -C \"$1\""
        ))
        .arg("sh")
        .arg(&dest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let mut recv = KillOnDrop(recv);
    let until = Instant::now() + Duration::from_secs(10);
    while listen_queue(port).is_none() {
        if Instant::now() > until {
            return Err("socat did not listen".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let t0 = Instant::now();
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar c -C \"$1\" \"$2\" | socat -u - TCP:127.0.0.1:{port}"
        ))
        .arg("sh")
        .arg(parent)
        .arg(name)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run sh: {e}"))?;
    let rst = recv.0.wait().map_err(|e| e.to_string())?;
    let dt = t0.elapsed().as_secs_f64();
    if !st.success() || !rst.success() {
        return Err("tar | socat failed".into());
    }
    let got = count_files(&dest.join(name));
    if got != files {
        return Err(format!("tar: {got} files of {files}"));
    }
    let _ = std::fs::remove_dir_all(&dest);
    Ok(dt)
}

/// A relay for one connection to `target` that forwards the first `limit`
/// bytes from its client, then closes both sides.
fn cut_relay(target: SocketAddr, limit: u64) -> Res<SocketAddr> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        let Ok((client, _)) = l.accept() else { return };
        let Ok(server) = TcpStream::connect(target) else {
            return;
        };
        let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
            return;
        };
        // Back: everything, until either side closes.
        let back = std::thread::spawn(move || {
            let (mut from, mut to) = (s2, c2);
            let _ = std::io::copy(&mut from, &mut to);
        });
        let (mut from, mut to) = (client, server);
        let mut buf = vec![0u8; 256 << 10];
        let mut left = limit;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = match from.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if to.write_all(&buf[..n]).is_err() {
                break;
            }
            left -= n as u64;
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        let _ = back.join();
    });
    Ok(addr)
}

/// A file cut at 90% through [`cut_relay`], then sent again directly:
/// seconds from the second `sendfile` to the receiver's `done`.
pub fn resume_sockmod(src: &Path, dir: &Path, bytes: usize) -> Res<f64> {
    let inbox = dir.join("inbox-resume");
    let _ = std::fs::remove_dir_all(&inbox);
    let mut bob = FilerProc::start("bob", &inbox)?;
    let mut alice = FilerProc::start("alice", &dir.join("inbox-alice"))?;
    let _watchdog = Watchdog::new(
        vec![bob.proc.0.id(), alice.proc.0.id()],
        Duration::from_secs(300),
    );
    let bob_addr: SocketAddr = ([127, 0, 0, 1], bob.port).into();
    let relay = cut_relay(bob_addr, bytes as u64 * 9 / 10)?;
    alice.send(&format!("connect {relay}"))?;
    alice.out.until("\"event\":\"identified\"")?;
    alice.send(&format!("sendfile {relay} {}", src.display()))?;
    if recv_ended(&mut bob).is_ok() {
        return Err("the cut transfer completed".into());
    }
    alice.out.until("\"state\":\"failed\"")?;
    alice.send(&format!("connect {bob_addr}"))?;
    alice.out.until("\"event\":\"identified\"")?;
    let t0 = Instant::now();
    alice.send(&format!("sendfile {bob_addr} {}", src.display()))?;
    let l = recv_ended(&mut bob)?;
    let dt = t0.elapsed().as_secs_f64();
    let from = l
        .split("\"resumed_from\":")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<u64>().ok())
        .ok_or_else(|| format!("not resumed: {l}"))?;
    if from < bytes as u64 * 8 / 10 {
        return Err(format!("resumed from {from} of {bytes}"));
    }
    let got = std::fs::metadata(inbox.join(src.file_name().unwrap_or_default()))
        .map(|m| m.len() as usize)
        .map_err(|e| format!("received file: {e}"))?;
    if got != bytes {
        return Err(format!("received {got} bytes of {bytes}"));
    }
    let _ = std::fs::remove_dir_all(&inbox);
    Ok(dt)
}
