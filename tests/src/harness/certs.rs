//! Certificates for a test cluster, made by `deploy/make-certs.sh` (the
//! script operators use), and the TLS configuration the test's own clients
//! connect with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use proto_common::tls::{Tls, TlsFiles};

/// The name of the certificate the test's clients present (mutual TLS).
const CLIENT: &str = "test-client";

/// A CA and certificates in one directory.
#[derive(Clone, Debug)]
pub struct TestCerts {
    pub dir: PathBuf,
    /// For the test's clients: trusts the CA, presents `test-client`.
    pub client: Arc<Tls>,
}

impl TestCerts {
    /// A new CA in `dir` and a certificate for each of `names`.
    pub fn make(dir: &Path, names: &[&str]) -> Result<TestCerts, String> {
        let mut all: Vec<&str> = names.to_vec();
        all.push(CLIENT);
        make_certs(dir, &all)?;
        let client = Tls::load(
            TlsFiles {
                identity: Some((
                    dir.join(format!("{CLIENT}.pem")),
                    dir.join(format!("{CLIENT}-key.pem")),
                )),
                ca: dir.join("ca.pem"),
            },
            false,
        )?;
        Ok(TestCerts {
            dir: dir.to_path_buf(),
            client,
        })
    }

    /// Makes (or renews: a new key and certificate, same CA) `names`.
    pub fn renew(&self, names: &[&str]) -> Result<(), String> {
        make_certs(&self.dir, names)
    }

    /// The flags that give process `name` its certificate, key and the CA.
    pub fn args(&self, name: &str) -> Vec<String> {
        let path = |file: String| self.dir.join(file).display().to_string();
        vec![
            "--tls-cert".into(),
            path(format!("{name}.pem")),
            "--tls-key".into(),
            path(format!("{name}-key.pem")),
            "--tls-ca".into(),
            path("ca.pem".into()),
        ]
    }

    /// For process `name` serving on `127.0.0.1:port`: its flags, with the
    /// test's clients told to reach it in TLS (sending `token`, if any).
    pub fn serve(&self, name: &str, port: u16, token: Option<String>) -> Vec<String> {
        crate::client::credentials::remember(
            &format!("127.0.0.1:{port}"),
            crate::client::credentials::Credentials {
                tls: Some(self.client.clone()),
                token,
            },
        );
        self.args(name)
    }

    pub fn cert(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.pem"))
    }
}

/// Runs `deploy/make-certs.sh dir names...`.
fn make_certs(dir: &Path, names: &[&str]) -> Result<(), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/make-certs.sh");
    let out = Command::new(&script)
        .arg(dir)
        .args(names)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}
