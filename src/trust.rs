//! Keys and certificates on disk: the state directory, a listener's or a filer's
//! generated TLS identity (kept so its fingerprint is stable across runs), PEM
//! files given on the command line, and files written atomically with
//! owner-only permissions.

use crate::net::{Identity, describe};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

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
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
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
