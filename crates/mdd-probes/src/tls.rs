//! The `tls` probe: a TLS handshake, then the server certificate's trust and expiry.
//!
//! The certificate is inspected even when verification fails: the verifier used for the
//! handshake records the real verifier's verdict instead of aborting, so an expired or untrusted
//! certificate is reported with its dates and its reason, not just "handshake failed".

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mdd_core::spec::TlsProbe;
use mdd_core::{PerfDatum, ProbeResult, Range, Status};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error_text::{describe, io_words};
use crate::{Execute, ProbeContext, time_perfdata, within};

impl Execute for TlsProbe {
    async fn execute(&self, _ctx: &ProbeContext, timeout: Duration) -> ProbeResult {
        within(timeout, inspect(self)).await
    }
}

async fn inspect(probe: &TlsProbe) -> ProbeResult {
    let target = format!("{}:{}", probe.host, probe.port);
    let started = Instant::now();
    let unknown = |summary: String| ProbeResult::new(Status::Unknown, summary, started.elapsed());
    let critical = |summary: String| {
        ProbeResult::new(Status::Critical, summary, started.elapsed())
            .with_perfdata(time_perfdata(started.elapsed(), None))
    };

    let verifier = match real_verifier(probe) {
        Ok(v) => Arc::new(RecordingVerifier::new(v)),
        Err(reason) => return unknown(reason),
    };
    let config = match rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth(),
        Err(e) => return unknown(format!("cannot set up TLS: {e}")),
    };
    let server_name = match ServerName::try_from(probe.server_name.clone()) {
        Ok(name) => name,
        Err(e) => return unknown(format!("invalid server name {}: {e}", probe.server_name)),
    };
    let tcp = match TcpStream::connect((probe.host.as_str(), probe.port)).await {
        Ok(s) => s,
        Err(e) => return critical(format!("cannot connect to {target}: {}", io_words(&e))),
    };
    let tls = match TlsConnector::from(Arc::new(config))
        .connect(server_name, tcp)
        .await
    {
        Ok(tls) => tls,
        Err(e) => {
            return critical(format!(
                "TLS handshake with {target} failed: {}",
                describe(&e)
            ));
        }
    };
    let elapsed = started.elapsed();
    let Some(leaf) = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|certs| certs.first())
        .cloned()
    else {
        return critical(format!("{target} presented no certificate"));
    };
    let verdict = verifier.take_verdict();
    judge(probe, &target, &leaf, verdict, elapsed)
}

fn real_verifier(probe: &TlsProbe) -> Result<Arc<dyn ServerCertVerifier>, String> {
    match &probe.ca {
        Some(path) => {
            let pem = std::fs::read(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert = cert.map_err(|e| format!("CA file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!("CA file {} holds no certificate", path.display()));
            }
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| format!("CA file {}: {e}", path.display()))?;
            Ok(verifier)
        }
        None => rustls_platform_verifier::Verifier::new(provider())
            .map(|v| Arc::new(v) as Arc<dyn ServerCertVerifier>)
            .map_err(|e| format!("cannot load the system's trusted certificates: {e}")),
    }
}

fn judge(
    probe: &TlsProbe,
    target: &str,
    leaf: &CertificateDer<'_>,
    verdict: Option<rustls::Error>,
    elapsed: Duration,
) -> ProbeResult {
    let cert = match x509_parser::parse_x509_certificate(leaf.as_ref()) {
        Ok((_, cert)) => cert,
        Err(e) => {
            return ProbeResult::new(
                Status::Critical,
                format!("{target} presented a certificate that cannot be parsed: {e}"),
                elapsed,
            );
        }
    };
    let not_after = cert.validity().not_after.timestamp();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    let seconds_left = not_after.saturating_sub(now);
    let days_left = seconds_left as f64 / 86_400.0;
    let until = jiff::Timestamp::from_second(not_after)
        .map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|_| not_after.to_string());
    let subject = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.subject().to_string(), str::to_string);
    let issuer = cert
        .issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map_or_else(|| cert.issuer().to_string(), str::to_string);

    let mut days = PerfDatum::new("days_left", (days_left * 100.0).round() / 100.0, "");
    days.warn =
        Some(Range::parse(&format!("{}:", probe.warn_days)).unwrap_or(Range::at_most(f64::MAX)));
    days.crit =
        Some(Range::parse(&format!("{}:", probe.crit_days)).unwrap_or(Range::at_most(f64::MAX)));
    let whole_days = days_left.floor() as i64;
    let (status, summary) = if seconds_left <= 0 {
        (
            Status::Critical,
            format!(
                "certificate of {target} expired {} days ago ({until})",
                (-seconds_left) / 86_400
            ),
        )
    } else if let Some(error) = verdict.filter(|_| !probe.insecure) {
        (
            Status::Critical,
            format!(
                "certificate of {target} is not trusted: {}",
                reason(&error, &probe.server_name)
            ),
        )
    } else if days_left < f64::from(probe.crit_days) {
        (
            Status::Critical,
            format!(
                "certificate of {target} expires in {whole_days} days ({until}), under {} days",
                probe.crit_days
            ),
        )
    } else if days_left < f64::from(probe.warn_days) {
        (
            Status::Warning,
            format!(
                "certificate of {target} expires in {whole_days} days ({until}), under {} days",
                probe.warn_days
            ),
        )
    } else {
        (
            Status::Ok,
            format!("certificate of {target} valid for {whole_days} days (until {until})"),
        )
    };
    ProbeResult::new(status, summary, elapsed)
        .with_long_output(format!("subject: {subject}\nissuer: {issuer}"))
        .with_perfdata(days)
        .with_perfdata(time_perfdata(elapsed, None))
}

/// Why a certificate failed verification, in an operator's words.
fn reason(error: &rustls::Error, server_name: &str) -> String {
    match error {
        rustls::Error::InvalidCertificate(cert_error) => match cert_error {
            CertificateError::UnknownIssuer => "issued by an unknown or untrusted authority".into(),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                format!("not valid for the name {server_name}")
            }
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => "expired".into(),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "not valid yet".into()
            }
            CertificateError::Revoked => "revoked".into(),
            CertificateError::BadSignature => "bad signature".into(),
            other => format!("{other:?}"),
        },
        other => other.to_string(),
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Delegates to a real verifier but lets the handshake finish, keeping the verdict.
#[derive(Debug)]
struct RecordingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    verdict: Mutex<Option<rustls::Error>>,
}

impl RecordingVerifier {
    fn new(inner: Arc<dyn ServerCertVerifier>) -> RecordingVerifier {
        RecordingVerifier {
            inner,
            verdict: Mutex::new(None),
        }
    }

    fn take_verdict(&self) -> Option<rustls::Error> {
        self.verdict.lock().ok().and_then(|mut v| v.take())
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Err(e) = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) && let Ok(mut verdict) = self.verdict.lock()
        {
            *verdict = Some(e);
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
