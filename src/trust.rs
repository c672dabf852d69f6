//! Keys and certificates on disk: the state directory, a listener's or a filer's
//! generated TLS identity (kept so its fingerprint is stable across runs), PEM
//! files given on the command line, and files written atomically with
//! owner-only permissions.

use crate::net::{Identity, describe};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where sockmod keeps what must outlive a run: `$XDG_STATE_HOME/sockmod`, else
/// `~/.local/state/sockmod`.
pub fn state_dir() -> Result<PathBuf, String> {
    let base = match std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d),
        None => match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(h) => PathBuf::from(h).join(".local/state"),
            None => return Err("no state directory: set XDG_STATE_HOME or HOME".into()),
        },
    };
    Ok(base.join("sockmod"))
}

/// Makes `dir` (and its parents) with owner-only permissions on the last one.
fn make_private_dir(dir: &Path) -> Result<(), String> {
    fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {}: {}", dir.display(), describe(&e)))?;
    let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));
    Ok(())
}

/// Writes `bytes` to `path` atomically (a temporary file in the same folder,
/// synced, then renamed over it) with owner-only permissions: a reader never
/// sees half a key, and nobody else can read it.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let dir = path.parent().unwrap_or(Path::new("."));
    make_private_dir(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let fail = |e: std::io::Error| format!("cannot write {}: {}", path.display(), describe(&e));
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(fail)?;
    let written = f.write_all(bytes).and_then(|_| f.sync_all());
    drop(f);
    if let Err(e) = written.and_then(|_| fs::rename(&tmp, path)) {
        let _ = fs::remove_file(&tmp);
        return Err(fail(e));
    }
    Ok(())
}

/// Reads a certificate chain and its key from PEM files (`--tls-cert`, `--tls-key`).
pub fn load_identity(cert: &Path, key: &Path) -> Result<Identity, String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("cannot read {}: {e}", cert.display()))?;
    if chain.is_empty() {
        return Err(format!("{}: no certificate in it", cert.display()));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("cannot read a private key from {}: {e}", key.display()))?;
    Ok(Identity { chain, key })
}

/// Reads trusted roots from a PEM file (`--tls-ca`, `--tls-client-ca`).
pub fn load_roots(file: &Path) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    for c in certs {
        let c = c.map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", file.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate in it", file.display()));
    }
    Ok(roots)
}

/// The identity named `name` under the state directory's `keys/` folder,
/// generated (a self-signed certificate, rcgen) the first time and kept, so
/// its fingerprint stays the same from run to run.
pub fn generated_identity(name: &str) -> Result<Identity, String> {
    let dir = state_dir()?.join("keys");
    let safe = safe_file_name(name);
    let (cert, key) = (
        dir.join(format!("{safe}.crt")),
        dir.join(format!("{safe}.key")),
    );
    if cert.exists() && key.exists() {
        return load_identity(&cert, &key);
    }
    let made =
        rcgen::generate_simple_self_signed(vec!["sockmod".to_string(), "localhost".to_string()])
            .map_err(|e| format!("cannot generate a key: {e}"))?;
    // The key first: a certificate without its key is never left behind.
    write_private(&key, made.signing_key.serialize_pem().as_bytes())?;
    write_private(&cert, made.cert.pem().as_bytes())?;
    load_identity(&cert, &key)
}

/// A filer's pins: the key (certificate fingerprint) first seen for each peer
/// name, like SSH's `known_hosts`. Kept in the state directory per `--id`, one
/// `FINGERPRINT<TAB>NAME` a line; saved off the loop thread, atomically.
#[derive(Debug)]
pub struct KnownPeers {
    path: PathBuf,
    pins: BTreeMap<String, String>,
    saver: Arc<Saver>,
}

/// Serialises saves of one pins file: each save writes the newest content, and
/// an older save that comes late is skipped.
#[derive(Debug, Default)]
struct Saver {
    lock: Mutex<u64>,
    asked: AtomicU64,
}

impl KnownPeers {
    /// The pins of the filer named `owner` (none yet if the file is missing).
    pub fn load(owner: &str) -> Result<KnownPeers, String> {
        let path = state_dir()?
            .join("known_peers")
            .join(format!("{}.txt", safe_file_name(owner)));
        let mut pins = BTreeMap::new();
        match fs::read_to_string(&path) {
            Ok(text) => {
                for line in text.lines() {
                    if line.starts_with('#') || line.trim().is_empty() {
                        continue;
                    }
                    if let Some((fp, name)) = line.split_once('\t') {
                        pins.insert(name.to_string(), fp.to_string());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("cannot read {}: {}", path.display(), describe(&e))),
        }
        Ok(KnownPeers {
            path,
            pins,
            saver: Arc::default(),
        })
    }

    /// The pinned fingerprint of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pins.get(name).map(String::as_str)
    }

    /// Pins `name` to `fingerprint` (replacing a pin) and saves.
    pub fn pin(&mut self, name: &str, fingerprint: &str) {
        self.pins.insert(name.to_string(), fingerprint.to_string());
        self.save();
    }

    /// Removes the pin of `name`; false if there was none.
    pub fn forget(&mut self, name: &str) -> bool {
        let had = self.pins.remove(name).is_some();
        if had {
            self.save();
        }
        had
    }

    /// Writes the pins on a helper thread (the loop never waits for the disk).
    fn save(&self) {
        let mut text = String::from("# sockmod pins: FINGERPRINT<TAB>NAME (trust on first use)\n");
        for (name, fp) in &self.pins {
            text.push_str(&format!("{fp}\t{name}\n"));
        }
        let generation = self.saver.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let (saver, path) = (self.saver.clone(), self.path.clone());
        let _ = std::thread::Builder::new()
            .name("pins".into())
            .spawn(move || {
                let Ok(mut done) = saver.lock.lock() else {
                    return;
                };
                if *done > generation {
                    return;
                }
                if let Err(e) = write_private(&path, text.as_bytes()) {
                    eprintln!("warning: cannot save pins: {e}");
                }
                *done = generation;
            });
    }

    /// Waits (up to a second) until every save asked for so far is on disk.
    fn flush(&self) {
        let want = self.saver.asked.load(Ordering::SeqCst);
        for _ in 0..200 {
            if self.saver.lock.lock().map(|g| *g >= want).unwrap_or(true) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

/// A pin taken just before the filer stops is still saved: the process waits
/// (a second at most) for the save thread.
impl Drop for KnownPeers {
    fn drop(&mut self) {
        self.flush();
    }
}

/// A name made safe as a file name: other characters become `_`.
fn safe_file_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_state(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("sockmod-trust-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn private_files_are_owner_only_and_replace_atomically() {
        let d = temp_state("write");
        let p = d.join("sub/secret");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        // No temporary file left beside it.
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn a_bad_pem_file_is_named_in_the_error() {
        let d = temp_state("pem");
        fs::create_dir_all(&d).unwrap();
        let f = d.join("nothing.pem");
        fs::write(&f, "not a certificate").unwrap();
        let e = load_roots(&f).unwrap_err();
        assert!(e.contains("nothing.pem"), "{e}");
        let _ = fs::remove_dir_all(&d);
    }
}
