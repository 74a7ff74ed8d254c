//! `wss://` for the load tool: the rustls configuration of a run.
//!
//! Every connection makes a full TLS handshake (session resumption is off): the connect
//! scenario measures what a new visitor costs the server. ALPN offers `http/1.1`.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::client::Resumption;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::client::tls::{ALPN_HTTP11, config_builder, root_store};

use super::LoadError;
use super::report::FailureCause;

/// The configuration of the run's `wss://` connections: the webpki roots plus `ca_files`, or
/// no certificate verification at all when `insecure`.
pub(crate) fn config(ca_files: &[PathBuf], insecure: bool) -> Result<Arc<ClientConfig>, LoadError> {
    let mut config = if insecure {
        let provider = rustls::crypto::ring::default_provider();
        let verifier = AnyCertificate(provider.signature_verification_algorithms);
        config_builder()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth()
    } else {
        let roots = root_store(ca_files).map_err(|why| LoadError::Config(format!("--ca: {why}")))?;
        config_builder().with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// The failure cause of a TLS error: a refused certificate has its own.
pub(crate) fn cause(error: &rustls::Error) -> FailureCause {
    match error {
        rustls::Error::InvalidCertificate(cert) => match crate::client::CertificateReason::of(cert) {
            // The verifier's own words say more than "refused".
            crate::client::CertificateReason::Other => FailureCause::Certificate(cert.to_string()),
            reason => FailureCause::Certificate(reason.to_string()),
        },
        other => FailureCause::Tls(other.to_string()),
    }
}

/// `--insecure`: accepts any certificate for any name, but still checks the handshake
/// signatures (the server does all its work; only the trust decision is skipped).
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configs_and_causes() {
        let verified = config(&[], false).unwrap();
        assert_eq!(verified.alpn_protocols, [b"http/1.1".to_vec()]);
        assert!(config(&[], true).is_ok());
        let missing = config(&["/nonexistent/ca.pem".into()], false).unwrap_err().to_string();
        assert!(missing.contains("--ca") && missing.contains("/nonexistent/ca.pem"), "{missing}");
        let refused = rustls::Error::InvalidCertificate(rustls::CertificateError::Expired);
        assert_eq!(cause(&refused), FailureCause::Certificate("expired".into()));
        assert_eq!(cause(&refused).key(), "certificate");
        let other = rustls::Error::AlertReceived(rustls::AlertDescription::HandshakeFailure);
        assert_eq!(cause(&other).key(), "tls");
    }
}
