//! The rustls side: which certificates a connection trusts, as each `sslmode` says.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::store::error::StoreError;

/// What the TLS handshake checks of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Verify {
    /// Nothing (libpq's `prefer` and `require`): encrypted, but anyone may be at the other end.
    Nothing,
    /// Signed by a trusted CA, for whatever name (`verify-ca`).
    Chain(Roots),
    /// Signed by a trusted CA and issued for the host name (`verify-full`).
    Full(Roots),
}

/// The CAs trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Roots {
    /// The public web roots (webpki-roots): no `sslrootcert`, or `sslrootcert=system`.
    Public,
    /// The certificates of an `sslrootcert` file (PEM), with the path as given.
    File {
        path: String,
        certificates: Vec<CertificateDer<'static>>,
    },
}

/// The rustls side of a connection.
#[derive(Debug, Clone)]
pub(super) struct Tls {
    pub(super) verify: Verify,
    /// `sslsni=0` turns off sending the host name (SNI); Neon needs it on.
    pub(super) sni: bool,
    /// `sslnegotiation=direct` (PostgreSQL 17): TLS from the first byte, with ALPN `postgresql`.
    pub(super) direct: bool,
    /// From `ssl_min_protocol_version` / `ssl_max_protocol_version`.
    pub(super) versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

pub(super) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    pub(super) fn client_config(&self) -> Result<rustls::ClientConfig, StoreError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| StoreError::setup(format!("cannot set up TLS for the database: {e}")))?;
        let verifier: Arc<dyn ServerCertVerifier> = match &self.verify {
            Verify::Nothing => Arc::new(NoCertificateCheck(provider)),
            Verify::Chain(roots) => Arc::new(ChainOnly(webpki_verifier(roots, provider)?)),
            Verify::Full(roots) => webpki_verifier(roots, provider)?,
        };
        let mut config = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        config.enable_sni = self.sni;
        if self.direct {
            config.alpn_protocols = vec![b"postgresql".to_vec()];
        }
        Ok(config)
    }
}

pub(super) fn webpki_verifier(
    roots: &Roots,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::Public => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::File { path, certificates } => {
            for certificate in certificates {
                store.add(certificate.clone()).map_err(|e| {
                    StoreError::setup(format!(
                        "sslrootcert={path}: a certificate in that file cannot be used as a CA \
                         ({e}); give the PEM file of the certificate authority that signed the \
                         server's certificate"
                    ))
                })?;
            }
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider)
        .build()
        .map_err(|e| {
            StoreError::setup(format!(
                "cannot set up TLS certificate checks for the database: {e}"
            ))
        })
}

/// `sslmode=prefer`/`require` without `sslrootcert`: any certificate, as libpq. The handshake's
/// signatures are still checked against the certificate presented, so the session is bound to
/// it (channel binding relies on that).
#[derive(Debug)]
pub(super) struct NoCertificateCheck(Arc<CryptoProvider>);

impl ServerCertVerifier for NoCertificateCheck {
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
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the full check, except that a certificate issued for another name is
/// accepted. webpki checks the name last, after the chain, its validity and its purpose, so a
/// name mismatch means every other check passed.
#[derive(Debug)]
pub(super) struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}
