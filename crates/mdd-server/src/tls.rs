//! TLS on the server's own listener: the certificate chain and key (and, for mutual TLS, the
//! CAs whose client certificates are taken) read from PEM files, and read again on SIGHUP and
//! when the files change. A reload builds a whole new rustls configuration and swaps it in:
//! connections already open keep the one they started with, new ones get the new one, so a
//! rotation drops nothing. A reload that fails (a half-written file, a key that does not match)
//! keeps the configuration in use and says why.
//!
//! It owns reading and checking certificates and naming a client by its certificate; it does
//! not serve connections (`listen`) nor decide what a name may do (`api::authorize`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;

/// How often the files are looked at for a change.
const WATCH_EVERY: Duration = Duration::from_secs(2);

/// Where the server's TLS material is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CAs whose client certificates authenticate agents (mutual TLS); without it no client
    /// certificate is asked for.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{}: {detail}", path.display())]
    File { path: PathBuf, detail: String },
    #[error("{} and {}: {detail}", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
}

/// The TLS configuration in use, and how to make the next one.
pub struct Tls {
    files: TlsFiles,
    current: RwLock<Arc<rustls::ServerConfig>>,
    /// What the files looked like when last read, to notice a change.
    seen: Mutex<Vec<Option<Stamp>>>,
    /// When the certificate in use stops being valid (seconds since the epoch).
    not_after: std::sync::atomic::AtomicI64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl Tls {
    /// Reads the files; any problem with them is an error naming the file.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let seen = stamps(&files);
        let (config, not_after) = build(&files)?;
        Ok(Tls {
            files,
            current: RwLock::new(Arc::new(config)),
            seen: Mutex::new(seen),
            not_after: std::sync::atomic::AtomicI64::new(not_after),
        })
    }

    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// What a new connection is served with.
    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        let config = self.current.read().unwrap_or_else(|p| p.into_inner());
        tokio_rustls::TlsAcceptor::from(Arc::clone(&config))
    }

    /// Whether clients may present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// When the certificate in use expires (seconds since the epoch).
    pub fn not_after(&self) -> i64 {
        self.not_after.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Reads the files again and swaps the new configuration in. On error the one in use
    /// stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let seen = stamps(&self.files);
        let (config, not_after) = build(&self.files)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(config);
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = seen;
        self.not_after
            .store(not_after, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Reloads whenever a file changes, until `shutdown`. A certificate manager writes the
    /// chain and the key one after the other: a pair that does not match yet is tried again at
    /// the next look, and only said after it has stayed wrong.
    pub async fn watch(self: Arc<Self>, shutdown: CancellationToken) {
        let mut failing_since: Option<tokio::time::Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
            let now = stamps(&self.files);
            if *self.seen.lock().unwrap_or_else(|p| p.into_inner()) == now {
                continue;
            }
            match self.reload() {
                Ok(()) => {
                    failing_since = None;
                    tracing::info!(
                        cert = %self.files.cert.display(),
                        "the TLS certificate changed on disk: new connections use the new one"
                    );
                }
                Err(e) => {
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= WATCH_EVERY * 2 {
                        tracing::error!(
                            "the TLS files changed but cannot be used (the ones read before stay in use): {e}"
                        );
                        // Said once per change: look again only when they change again.
                        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = now;
                        failing_since = None;
                    }
                }
            }
        }
    }
}

fn stamps(files: &TlsFiles) -> Vec<Option<Stamp>> {
    use std::os::unix::fs::MetadataExt;
    [
        Some(&files.cert),
        Some(&files.key),
        files.client_ca.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| {
        std::fs::metadata(path).ok().map(|m| Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        })
    })
    .collect()
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        detail: format!("cannot read it: {e}"),
    })
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            detail: format!("not a PEM certificate file: {e}"),
        })?;
    if certs.is_empty() {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            detail: "holds no certificate (want PEM `-----BEGIN CERTIFICATE-----`)".into(),
        });
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<(rustls::ServerConfig, i64), TlsError> {
    let chain = certificates(&files.cert)?;
    let not_after = check_validity(&files.cert, &chain[0])?;
    let key_bytes = read(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| TlsError::File {
        path: files.key.clone(),
        detail: format!("not a PEM private key: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::File {
            path: files.cert.clone(),
            detail: e.to_string(),
        })?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(ca)? {
                roots.add(cert).map_err(|e| TlsError::File {
                    path: ca.clone(),
                    detail: format!("not a usable CA certificate: {e}"),
                })?;
            }
            // Agents with a token and no certificate still connect; one with a certificate
            // the CAs did not sign does not.
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .allow_unauthenticated()
            .build()
            .map_err(|e| TlsError::File {
                path: ca.clone(),
                detail: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, key)
        .map_err(|e| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            detail: match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key is not the certificate's (were they written one at a time?)".into()
                }
                other => other.to_string(),
            },
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((config, not_after))
}

/// The leaf's end of validity; an expired or not-yet-valid one is refused (every client would
/// refuse it too, with a message that says less).
fn check_validity(path: &Path, leaf: &CertificateDer<'_>) -> Result<i64, TlsError> {
    let (_, cert) =
        x509_parser::parse_x509_certificate(leaf.as_ref()).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            detail: format!("the first certificate cannot be read: {e}"),
        })?;
    let validity = cert.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            detail: format!("the certificate expired on {}", validity.not_after),
        });
    }
    if validity.not_before > now {
        return Err(TlsError::File {
            path: path.to_path_buf(),
            detail: format!(
                "the certificate is not valid before {}",
                validity.not_before
            ),
        });
    }
    Ok(validity.not_after.timestamp())
}

/// The name a client certificate stands for: its first DNS name, else its common name. The
/// chain was verified by the handshake; this only reads it.
pub fn client_name(leaf: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let dns = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .and_then(|san| {
            san.value.general_names.iter().find_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                _ => None,
            })
        });
    dns.or_else(|| {
        cert.subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string)
    })
}
