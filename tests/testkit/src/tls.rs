//! A throw-away PKI for TLS tests, made with the `openssl` command: a CA, a
//! server certificate for `localhost` and `127.0.0.1`, and a client
//! certificate, all signed by the CA; and a second CA nobody trusts.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate signed by another CA.
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed (Debian's openssl package)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A P-256 key and a certificate signed by `ca` (or self-signed CA when `ca` is None).
fn issue(dir: &Path, name: &str, subject: &str, ext: &str, ca: Option<&str>) {
    let key = format!("{name}.key");
    let crt = format!("{name}.crt");
    openssl(
        dir,
        &[
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out",
            &key,
        ],
    );
    let ext_file = format!("{name}.ext");
    std::fs::write(dir.join(&ext_file), ext).expect("ext file");
    match ca {
        None => openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                &key,
                "-out",
                &crt,
                "-days",
                "2",
                "-subj",
                subject,
                "-extensions",
                "v3",
                "-config",
                &ext_file,
            ],
        ),
        Some(ca) => {
            let csr = format!("{name}.csr");
            openssl(
                dir,
                &["req", "-new", "-key", &key, "-out", &csr, "-subj", subject],
            );
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    &format!("{ca}.crt"),
                    "-CAkey",
                    &format!("{ca}.key"),
                    "-CAcreateserial",
                    "-out",
                    &crt,
                    "-days",
                    "2",
                    "-extfile",
                    &ext_file,
                    "-extensions",
                    "v3",
                ],
            );
        }
    }
}

impl Pki {
    pub fn make() -> Pki {
        let dir = crate::scratch_path("pki");
        std::fs::create_dir_all(&dir).expect("pki dir");
        let ca_ext = "[req]\ndistinguished_name=dn\n[dn]\n[v3]\nbasicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n";
        issue(&dir, "ca", "/CN=meshtrace-test-ca", ca_ext, None);
        issue(&dir, "other-ca", "/CN=someone-else", ca_ext, None);
        issue(
            &dir,
            "server",
            "/CN=localhost",
            "[v3]\nbasicConstraints=CA:FALSE\nsubjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            Some("ca"),
        );
        let client_ext = "[v3]\nbasicConstraints=CA:FALSE\nsubjectAltName=DNS:sidecar.test\nextendedKeyUsage=clientAuth\n";
        issue(&dir, "client", "/CN=sidecar", client_ext, Some("ca"));
        issue(
            &dir,
            "stranger",
            "/CN=stranger",
            client_ext,
            Some("other-ca"),
        );
        Pki {
            ca: dir.join("ca.crt"),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.crt"),
            client_key: dir.join("client.key"),
            stranger_cert: dir.join("stranger.crt"),
            stranger_key: dir.join("stranger.key"),
            dir,
        }
    }
}
