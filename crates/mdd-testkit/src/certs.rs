//! Certificates for TLS tests, issued by a throw-away CA.

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use time::{Duration, OffsetDateTime};

/// A certificate authority that exists for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    cert: CertificateDer<'static>,
    pem: String,
}

/// A server certificate with its key, ready for a rustls server.
#[derive(Clone, Debug)]
pub struct ServerCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    /// The chain and the key as PEM, for programs that read files.
    pub chain_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("empty SAN list");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("key generation");
        let cert = params.self_signed(&key).expect("self-signed CA");
        TestCa {
            pem: cert.pem(),
            cert: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    pub fn pem(&self) -> &str {
        &self.pem
    }

    pub fn der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// Writes the CA certificate to a file in `dir`, for a spec's `ca:` field.
    pub fn write_pem(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).expect("write CA file");
        path
    }

    /// A certificate for `host` valid from a day ago until `valid_for` from now (negative: expired).
    pub fn issue(&self, host: &str, valid_for: Duration) -> ServerCert {
        let mut params = CertificateParams::new(vec![host.to_string()]).expect("SAN");
        params.distinguished_name.push(DnType::CommonName, host);
        let now = OffsetDateTime::now_utc();
        params.not_before = now - Duration::days(30) + valid_for.min(Duration::ZERO);
        params.not_after = now + valid_for;
        // Good for either end: the same helper issues agents' client certificates.
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().expect("key generation");
        let cert = params.signed_by(&key, &self.issuer).expect("signing");
        ServerCert {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: Arc::new(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                key.serialize_der(),
            ))),
            chain_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        }
    }
}

impl ServerCert {
    /// Writes the chain and the key to `NAME.pem` and `NAME.key` in `dir` (the key 0600), in
    /// one rename each, as a certificate manager does; returns their paths.
    pub fn write_pem(&self, dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf) {
        use std::os::unix::fs::PermissionsExt;
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        for (path, text, mode) in [
            (&cert, &self.chain_pem, 0o644),
            (&key, &self.key_pem, 0o600),
        ] {
            let partial = path.with_extension("partial");
            std::fs::write(&partial, text).expect("write PEM");
            std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(mode))
                .expect("chmod PEM");
            std::fs::rename(&partial, path).expect("rename PEM");
        }
        (cert, key)
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())
            .expect("server certificate");
        Arc::new(config)
    }
}
