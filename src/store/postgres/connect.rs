//! `DATABASE_URL` read as libpq reads it: `sslmode`, `sslrootcert` and `channel_binding`
//! mean what they mean to psql, so a string that works there (Neon's, pooled or direct)
//! works here, and one libpq refuses is refused here.
//!
//! tokio-postgres parses the connection string itself but knows only part of libpq's
//! parameters: `sslmode` only as `disable`, `prefer` or `require`, and no `sslrootcert`. So the
//! parameters it does not know are taken out of the string first and done here, and the rest
//! (user, percent-encoded password, hosts, port, database, `options`, `application_name`,
//! `connect_timeout`, `channel_binding`, ...) is left to tokio-postgres as written.
//!
//! What each `sslmode` checks, as libpq does:
//!
//! | sslmode       | TLS                 | certificate                                        |
//! |---------------|---------------------|----------------------------------------------------|
//! | `disable`     | never               | -                                                  |
//! | `allow`       | if the server can   | not checked (as `prefer`)                          |
//! | `prefer`      | if the server can   | not checked, unless `sslrootcert` is given         |
//! | `require`     | always              | not checked, unless `sslrootcert` is given         |
//! | `verify-ca`   | always              | signed by `sslrootcert`'s CA (else a public root)  |
//! | `verify-full` | always              | as `verify-ca`, and issued for the host name       |
//!
//! With `sslrootcert` given, `prefer` and `require` check the chain as `verify-ca` does.
//! `sslrootcert=system` (libpq 16) means the public roots and needs `sslmode=verify-full`,
//! which it implies when no `sslmode` is given. Unlike libpq, `verify-ca`/`verify-full`
//! without `sslrootcert` trust the public roots (webpki-roots) rather than requiring
//! `~/.postgresql/root.crt`, and an `sslrootcert` file that cannot be read is an error in
//! every mode (libpq silently skips the check in `prefer`/`require`).
//!
//! Nothing here ever shows the password: tokio-postgres's `Config` is never formatted, and a
//! value that came from the string is only repeated in a message when it is not part of a
//! password.

use std::error::Error as _;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::{ChannelBinding, Host, SslMode};

use super::super::StoreError;

/// How to reach a PostgreSQL server: the driver's configuration and the TLS it uses.
#[derive(Clone)]
pub(crate) struct Connector {
    pub config: tokio_postgres::Config,
    pub tls: tokio_postgres_rustls::MakeRustlsConnect,
}

/// Reads `url` (a `postgres://` or `postgresql://` URL, or a libpq `key=value` string).
/// `connect_timeout` bounds each connection attempt unless the URL's own `connect_timeout`
/// says otherwise.
pub(crate) fn connector(url: &str, connect_timeout: Duration) -> Result<Connector, StoreError> {
    let Settings { config, tls } = settings(url, connect_timeout)?;
    Ok(Connector {
        config,
        tls: tokio_postgres_rustls::MakeRustlsConnect::new(tls.client_config()?),
    })
}

/// The connection string, read: tokio-postgres's configuration and what the TLS must check.
struct Settings {
    config: tokio_postgres::Config,
    tls: Tls,
}

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sslmode {
    Disable,
    Allow,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl Sslmode {
    const VALID: &'static str = "disable, allow, prefer, require, verify-ca or verify-full";

    fn parse(value: &str) -> Option<Sslmode> {
        Some(match value {
            "disable" => Sslmode::Disable,
            "allow" => Sslmode::Allow,
            "prefer" => Sslmode::Prefer,
            "require" => Sslmode::Require,
            "verify-ca" => Sslmode::VerifyCa,
            "verify-full" => Sslmode::VerifyFull,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Sslmode::Disable => "disable",
            Sslmode::Allow => "allow",
            Sslmode::Prefer => "prefer",
            Sslmode::Require => "require",
            Sslmode::VerifyCa => "verify-ca",
            Sslmode::VerifyFull => "verify-full",
        }
    }

    /// What tokio-postgres does with the connection itself: `allow` (plaintext first, then
    /// TLS) is not there, and `prefer` (TLS first, then plaintext) is as good.
    fn driver(self) -> SslMode {
        match self {
            Sslmode::Disable => SslMode::Disable,
            Sslmode::Allow | Sslmode::Prefer => SslMode::Prefer,
            Sslmode::Require | Sslmode::VerifyCa | Sslmode::VerifyFull => SslMode::Require,
        }
    }
}

/// What the TLS handshake checks of the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verify {
    /// Nothing (libpq's `prefer` and `require`): encrypted, but anyone may be at the other end.
    Nothing,
    /// Signed by a trusted CA, for whatever name (`verify-ca`).
    Chain(Roots),
    /// Signed by a trusted CA and issued for the host name (`verify-full`).
    Full(Roots),
}

/// The CAs trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
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
struct Tls {
    verify: Verify,
    /// `sslsni=0` turns off sending the host name (SNI); Neon needs it on.
    sni: bool,
    /// `sslnegotiation=direct` (PostgreSQL 17): TLS from the first byte, with ALPN `postgresql`.
    direct: bool,
    /// From `ssl_min_protocol_version` / `ssl_max_protocol_version`.
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

impl Tls {
    fn client_config(&self) -> Result<rustls::ClientConfig, StoreError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&self.versions)
            .map_err(|e| setup(format!("cannot set up TLS for the database: {e}")))?;
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

fn webpki_verifier(
    roots: &Roots,
    provider: Arc<CryptoProvider>,
) -> Result<Arc<WebPkiServerVerifier>, StoreError> {
    let mut store = RootCertStore::empty();
    match roots {
        Roots::Public => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Roots::File { path, certificates } => {
            for certificate in certificates {
                store.add(certificate.clone()).map_err(|e| {
                    setup(format!(
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
            setup(format!(
                "cannot set up TLS certificate checks for the database: {e}"
            ))
        })
}

/// `sslmode=prefer`/`require` without `sslrootcert`: any certificate, as libpq. The handshake's
/// signatures are still checked against the certificate presented, so the session is bound to
/// it (channel binding relies on that).
#[derive(Debug)]
struct NoCertificateCheck(Arc<CryptoProvider>);

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
struct ChainOnly(Arc<WebPkiServerVerifier>);

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

fn setup(message: impl Into<String>) -> StoreError {
    StoreError::Setup(message.into())
}

// ---------------------------------------------------------------------------------------------
// Reading the connection string.

const EXAMPLE: &str = "postgresql://USER:PASSWORD@HOST/DBNAME?sslmode=require";
const PERCENT_ENCODE: &str = "percent-encode special characters in the user name and password \
                              (@ as %40, # as %23, / as %2F, : as %3A, ? as %3F, & as %26, % as \
                              %25)";

/// One parameter of the connection string.
struct Param {
    /// Decoded.
    key: String,
    /// Decoded.
    value: String,
    /// For a URL: `key=value` as written (still percent-encoded), to hand on unchanged.
    raw: Option<String>,
}

/// A connection string split into what precedes its parameters and the parameters.
struct Parsed {
    /// `postgresql://user:password@host:port/dbname` (a URL), or nothing (key=value).
    head: Option<String>,
    params: Vec<Param>,
    /// Every password in the string (decoded), never to be repeated in a message.
    passwords: Vec<String>,
}

impl Parsed {
    fn read(text: &str) -> Result<Parsed, StoreError> {
        let text = text.trim();
        for scheme in ["postgresql://", "postgres://"] {
            if let Some(rest) = text.strip_prefix(scheme) {
                return Parsed::url(scheme, rest);
            }
        }
        if text.contains("://") {
            let scheme = text.split("://").next().unwrap_or_default();
            let scheme = if is_identifier(scheme) {
                scheme
            } else {
                "(unreadable)"
            };
            return Err(setup(format!(
                "DATABASE_URL has the scheme {scheme}://, not postgresql:// or postgres://; \
                 expected e.g. {EXAMPLE}"
            )));
        }
        Parsed::key_values(text)
    }

    /// Splits as libpq and tokio-postgres do: the user and password end at the first `@`
    /// before the first `/`, the parameters start at the first `?` after them.
    fn url(scheme: &str, rest: &str) -> Result<Parsed, StoreError> {
        let slash = rest.find('/').unwrap_or(rest.len());
        let at = rest[..slash].find('@');
        let mut passwords = Vec::new();
        if let Some(at) = at
            && let Some((_, password)) = rest[..at].split_once(':')
        {
            passwords.push(decode(password));
        }
        let after_credentials = at.map_or(0, |at| at + 1);
        let (head, query) = match rest[after_credentials..].find('?') {
            Some(q) => {
                let q = after_credentials + q;
                (&rest[..q], &rest[q + 1..])
            }
            None => (rest, ""),
        };
        let mut params = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let Some((key, value)) = pair.split_once('=') else {
                // Not repeated: it may be the end of a password with an unencoded `&`.
                return Err(setup(format!(
                    "DATABASE_URL has a parameter without '=' after the '?': parameters are \
                     written key=value and joined by '&' (e.g. {EXAMPLE}&channel_binding=require); \
                     {PERCENT_ENCODE}"
                )));
            };
            let (key, value) = (decode(key), decode(value));
            if key == "password" {
                passwords.push(value.clone());
            }
            params.push(Param {
                key,
                value,
                // tokio-postgres ends the credentials at the first `@` anywhere in the string.
                raw: Some(pair.replace('@', "%40")),
            });
        }
        Ok(Parsed {
            head: Some(format!("{scheme}{head}")),
            params,
            passwords,
        })
    }

    /// libpq's `key=value key='quoted value'`, backslash escaping `'` and `\`.
    fn key_values(text: &str) -> Result<Parsed, StoreError> {
        let invalid = || {
            setup(format!(
                "DATABASE_URL is neither a postgresql:// URL nor a libpq key=value string; \
                 expected e.g. {EXAMPLE} (Neon's connection string works as is)"
            ))
        };
        let mut chars = text.chars().peekable();
        let mut params = Vec::new();
        loop {
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if chars.peek().is_none() {
                break;
            }
            let mut key = String::new();
            while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
                key.push(c);
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            if key.is_empty() || chars.next() != Some('=') {
                return Err(invalid());
            }
            while chars.next_if(|c| c.is_whitespace()).is_some() {}
            let mut value = String::new();
            if chars.next_if_eq(&'\'').is_some() {
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some('\\') => value.extend(chars.next()),
                        Some(c) => value.push(c),
                        None => {
                            return Err(setup(
                                "DATABASE_URL has a quoted value without its closing quote (')",
                            ));
                        }
                    }
                }
            } else {
                while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                    if c == '\\' {
                        value.extend(chars.next());
                    } else {
                        value.push(c);
                    }
                }
                if value.is_empty() {
                    return Err(invalid());
                }
            }
            params.push(Param {
                key,
                value,
                raw: None,
            });
        }
        let passwords = params
            .iter()
            .filter(|p| p.key == "password")
            .map(|p| p.value.clone())
            .collect();
        Ok(Parsed {
            head: None,
            params,
            passwords,
        })
    }

    /// The string for tokio-postgres, with the parameters kept.
    fn rebuild(&self, kept: &[&Param]) -> String {
        match &self.head {
            Some(head) => {
                let query: Vec<&str> = kept.iter().filter_map(|p| p.raw.as_deref()).collect();
                if query.is_empty() {
                    head.clone()
                } else {
                    format!("{head}?{}", query.join("&"))
                }
            }
            None => kept
                .iter()
                .map(|p| {
                    let value = p.value.replace('\\', "\\\\").replace('\'', "\\'");
                    format!("{}='{value}'", p.key)
                })
                .collect::<Vec<_>>()
                .join(" "),
        }
    }

    /// `value`, quoted, if it can be shown: a short word that is no part of any password.
    fn show(&self, value: &str) -> String {
        let shown = value.len() <= 40
            && value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            && !self
                .passwords
                .iter()
                .any(|p| !p.is_empty() && (p.contains(value) || value.contains(p.as_str())));
        if shown {
            format!("{value:?}")
        } else {
            "(not shown)".to_owned()
        }
    }
}

/// Percent-decoding as libpq does it: `%XX` only (a `+` stays a `+`).
fn decode(text: &str) -> String {
    let protected = text.replace('+', "%2B");
    url::form_urlencoded::parse(format!("x={protected}").as_bytes())
        .next()
        .map(|(_, value)| value.into_owned())
        .unwrap_or_default()
}

fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 40
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.+".contains(c))
}

fn settings(url: &str, connect_timeout: Duration) -> Result<Settings, StoreError> {
    let parsed = Parsed::read(url)?;
    let invalid = |key: &str, value: &str, valid: &str| {
        setup(format!(
            "DATABASE_URL has {key}={}, which is not valid: use one of {valid}",
            parsed.show(value)
        ))
    };

    let mut sslmode = None;
    let mut sslrootcert: Option<String> = None;
    let mut channel_binding = None;
    let mut has_connect_timeout = false;
    let mut fallback_application_name = None;
    let mut sni = true;
    let mut direct = false;
    let (mut min_version, mut max_version) = (None, None);
    let mut kept = Vec::new();
    // Later parameters win, as in libpq.
    for param in &parsed.params {
        let value = param.value.as_str();
        match param.key.as_str() {
            "sslmode" => {
                sslmode = Some(
                    Sslmode::parse(value)
                        .ok_or_else(|| invalid("sslmode", value, Sslmode::VALID))?,
                );
            }
            "sslrootcert" => sslrootcert = Some(value.to_owned()).filter(|v| !v.is_empty()),
            "channel_binding" => {
                channel_binding = Some(match value {
                    "disable" => ChannelBinding::Disable,
                    "prefer" => ChannelBinding::Prefer,
                    "require" => ChannelBinding::Require,
                    _ => {
                        return Err(invalid(
                            "channel_binding",
                            value,
                            "disable, prefer or require",
                        ));
                    }
                });
            }
            "fallback_application_name" => fallback_application_name = Some(value.to_owned()),
            "sslsni" => {
                sni = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Err(invalid("sslsni", value, "1 or 0")),
                }
            }
            // Compression is long gone from TLS; libpq ignores it too.
            "sslcompression" => {}
            // No GSSAPI here: as libpq without a Kerberos ticket, unless it is required.
            "gssencmode" => match value {
                "disable" | "prefer" => {}
                "require" => {
                    return Err(setup(
                        "DATABASE_URL has gssencmode=require, but clerk-sync cannot encrypt with \
                         GSSAPI (Kerberos): use TLS instead (sslmode=require or verify-full) and \
                         remove gssencmode",
                    ));
                }
                _ => return Err(invalid("gssencmode", value, "disable, prefer or require")),
            },
            "ssl_min_protocol_version" => min_version = Some(tls_version(&parsed, param)?),
            "ssl_max_protocol_version" => max_version = Some(tls_version(&parsed, param)?),
            "sslcert" | "sslkey" | "sslpassword" | "sslcertmode" | "sslcrl" | "sslcrldir" => {
                let key = &param.key;
                return Err(setup(format!(
                    "DATABASE_URL has {key}, which clerk-sync does not support (no client \
                     certificates or certificate revocation lists): remove it, and log in with a \
                     password"
                )));
            }
            key => {
                if key == "connect_timeout" {
                    has_connect_timeout = true;
                }
                if key == "sslnegotiation" {
                    direct = value == "direct";
                }
                kept.push(param);
            }
        }
    }

    // libpq 16: the system's roots only with a check of the host name.
    let system_roots = sslrootcert.as_deref() == Some("system");
    let sslmode = match sslmode {
        Some(mode) if system_roots && mode != Sslmode::VerifyFull => {
            return Err(setup(format!(
                "DATABASE_URL has sslrootcert=system with sslmode={}: the public roots are only \
                 used with sslmode=verify-full (as in libpq), since they would accept any host \
                 with a public certificate; use sslmode=verify-full",
                mode.name()
            )));
        }
        Some(mode) => mode,
        None if system_roots => Sslmode::VerifyFull,
        None => Sslmode::Prefer,
    };
    if sslmode == Sslmode::Disable && channel_binding == Some(ChannelBinding::Require) {
        return Err(setup(
            "DATABASE_URL has channel_binding=require with sslmode=disable, which cannot work: \
             channel binding ties the password login (SCRAM-SHA-256-PLUS) to a TLS connection, \
             and sslmode=disable turns TLS off. Use sslmode=require (or verify-full) with \
             channel_binding=require, or set channel_binding=prefer or disable",
        ));
    }
    if direct && matches!(sslmode, Sslmode::Disable | Sslmode::Allow | Sslmode::Prefer) {
        return Err(setup(format!(
            "DATABASE_URL has sslnegotiation=direct with sslmode={}: direct TLS needs a \
             connection that is always encrypted (as in libpq); use sslmode=require, verify-ca \
             or verify-full",
            sslmode.name()
        )));
    }

    let verify = match (sslmode, sslrootcert.as_deref()) {
        (Sslmode::Disable, _) => Verify::Nothing,
        (Sslmode::VerifyCa, file) => Verify::Chain(roots(file)?),
        (Sslmode::VerifyFull, file) => Verify::Full(roots(file)?),
        // libpq checks the chain whenever it has a root certificate.
        (_, Some(file)) => Verify::Chain(roots(Some(file))?),
        (_, None) => Verify::Nothing,
    };
    let versions = tls_versions(min_version, max_version)?;

    let text = parsed.rebuild(&kept);
    let mut config =
        tokio_postgres::Config::from_str(&text).map_err(|e| parse_error(&parsed, &e))?;
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        return Err(setup(format!(
            "DATABASE_URL names no host: write it as {EXAMPLE} (for a local server's Unix \
             socket, host=/var/run/postgresql)"
        )));
    }
    // libpq never uses TLS over a Unix socket, whatever sslmode says.
    let unix_only = config.get_hostaddrs().is_empty()
        && config
            .get_hosts()
            .iter()
            .all(|host| !matches!(host, Host::Tcp(_)));
    config.ssl_mode(if unix_only {
        SslMode::Disable
    } else {
        sslmode.driver()
    });
    if let Some(channel_binding) = channel_binding {
        config.channel_binding(channel_binding);
    }
    if !has_connect_timeout {
        config.connect_timeout(connect_timeout);
    }
    if let Some(name) = fallback_application_name
        && config.get_application_name().is_none()
    {
        config.application_name(&name);
    }
    Ok(Settings {
        config,
        tls: Tls {
            verify,
            sni,
            direct,
            versions,
        },
    })
}

/// The CAs of `sslrootcert` (a PEM file), or the public ones.
fn roots(sslrootcert: Option<&str>) -> Result<Roots, StoreError> {
    let path = match sslrootcert {
        None | Some("system") => return Ok(Roots::Public),
        Some(path) => path,
    };
    let relative = || {
        if std::path::Path::new(path).is_relative() {
            let cwd = std::env::current_dir()
                .map(|d| format!(" ({})", d.display()))
                .unwrap_or_default();
            format!(" (a relative path starts at the working directory{cwd})")
        } else {
            String::new()
        }
    };
    let bytes = std::fs::read(path).map_err(|e| {
        setup(format!(
            "DATABASE_URL has sslrootcert={path}, but that file cannot be read: {e}{}. Give the \
             path of the CA certificate (PEM) that signed the server's certificate, or \
             sslrootcert=system for the public roots",
            relative()
        ))
    })?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            setup(format!(
                "DATABASE_URL has sslrootcert={path}, but that file is not valid PEM ({e}){}: \
                 give the CA certificate as PEM (-----BEGIN CERTIFICATE-----)",
                relative()
            ))
        })?;
    if certificates.is_empty() {
        return Err(setup(format!(
            "DATABASE_URL has sslrootcert={path}, but that file holds no certificate{}: give \
             the CA certificate as PEM (-----BEGIN CERTIFICATE-----)",
            relative()
        )));
    }
    // Each is checked now, so that a bad file is a start-up error, not a failed handshake.
    let mut store = RootCertStore::empty();
    for certificate in &certificates {
        store.add(certificate.clone()).map_err(|e| {
            setup(format!(
                "DATABASE_URL has sslrootcert={path}, but a certificate in that file cannot be \
                 used as a CA ({e}){}",
                relative()
            ))
        })?;
    }
    Ok(Roots::File {
        path: path.to_owned(),
        certificates,
    })
}

/// A TLS version as libpq names it: 1.0 and 1.1 as 1.2, the oldest rustls speaks.
fn tls_version(parsed: &Parsed, param: &Param) -> Result<u8, StoreError> {
    match param.value.as_str() {
        "" => Ok(0),
        "TLSv1" | "TLSv1.1" if param.key == "ssl_min_protocol_version" => Ok(2),
        "TLSv1.2" => Ok(2),
        "TLSv1.3" => Ok(3),
        "TLSv1" | "TLSv1.1" => Err(setup(format!(
            "DATABASE_URL has {}={}: clerk-sync speaks TLS 1.2 and 1.3 only; use TLSv1.2 or \
             TLSv1.3",
            param.key, param.value
        ))),
        value => Err(setup(format!(
            "DATABASE_URL has {}={}, which is not valid: use one of TLSv1, TLSv1.1, TLSv1.2 or \
             TLSv1.3",
            param.key,
            parsed.show(value)
        ))),
    }
}

fn tls_versions(
    min: Option<u8>,
    max: Option<u8>,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, StoreError> {
    let (min, max) = (
        min.unwrap_or(0).max(2),
        max.filter(|&v| v != 0).unwrap_or(3),
    );
    let versions: Vec<_> = [(2, &rustls::version::TLS12), (3, &rustls::version::TLS13)]
        .into_iter()
        .filter(|(v, _)| (min..=max).contains(v))
        .map(|(_, version)| version)
        .collect();
    if versions.is_empty() {
        return Err(setup(
            "DATABASE_URL has ssl_min_protocol_version above ssl_max_protocol_version: no TLS \
             version is left",
        ));
    }
    Ok(versions)
}

/// tokio-postgres's refusal of the string, without any part of it but the parameter's name.
fn parse_error(parsed: &Parsed, error: &tokio_postgres::Error) -> StoreError {
    let cause = error.source().map(|c| c.to_string()).unwrap_or_default();
    if let Some(key) = cause
        .strip_prefix("unknown option `")
        .and_then(|rest| rest.strip_suffix('`'))
    {
        let key = if is_identifier(key) && parsed.show(key) != "(not shown)" {
            key
        } else {
            "(not shown)"
        };
        return setup(format!(
            "DATABASE_URL has the parameter {key}, which clerk-sync does not know: remove it. \
             Known are the libpq parameters user, password, dbname, host, hostaddr, port, \
             options, application_name, fallback_application_name, sslmode, sslrootcert, \
             sslnegotiation, sslsni, channel_binding, connect_timeout, keepalives*, \
             tcp_user_timeout, target_session_attrs, load_balance_hosts"
        ));
    }
    // "unexpected character at byte N: expected `x` but got `y`": `y` may be from a password.
    let cause = match cause.split_once(" but got") {
        Some((before, _)) => before.to_owned(),
        None => cause,
    };
    let what = if cause.is_empty() {
        String::new()
    } else {
        format!(" ({cause})")
    };
    setup(format!(
        "DATABASE_URL is not a valid PostgreSQL connection string{what}; expected e.g. \
         {EXAMPLE}, and {PERCENT_ENCODE}"
    ))
}

// ---------------------------------------------------------------------------------------------
// Failed connections, for people.

/// A failed connection attempt, for people: the driver's words and, where they do not say,
/// what usually causes it and what to change. Never the password.
pub(crate) fn explain(error: &tokio_postgres::Error) -> String {
    let mut text = match error.as_db_error() {
        Some(db) => {
            let mut text = format!(
                "the server refused: {}: {} (SQLSTATE {})",
                db.severity(),
                db.message(),
                db.code().code()
            );
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => {
            let mut text = error.to_string();
            for cause in causes(error) {
                text.push_str(": ");
                text.push_str(&cause.to_string());
            }
            text
        }
    };
    if let Some(hint) = hint(error) {
        text.push_str("; ");
        text.push_str(&hint);
    }
    text
}

/// The errors under `error`, including those inside an `io::Error` (which its `source` skips).
fn causes(error: &tokio_postgres::Error) -> Vec<&(dyn std::error::Error + 'static)> {
    let mut causes = Vec::new();
    let mut next = error.source();
    while let Some(cause) = next {
        causes.push(cause);
        next = match cause
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => {
                let inner: &(dyn std::error::Error + 'static) = inner;
                // The io::Error shows its inner error's text already: keep only the inner one.
                causes.pop();
                Some(inner)
            }
            None => cause.source(),
        };
    }
    causes
}

fn hint(error: &tokio_postgres::Error) -> Option<String> {
    const CHANNEL_BINDING: &str = "channel binding failed: the server did not authenticate with \
        SCRAM-SHA-256-PLUS over TLS, which channel_binding=require demands (it let clerk-sync in \
        without a password, with a plain or MD5 password, or over a connection without TLS): use \
        sslmode=require (or verify-full) with a password (SCRAM) login, or set \
        channel_binding=prefer or channel_binding=disable if this server cannot do it";
    if let Some(db) = error.as_db_error() {
        let message = db.message();
        let code = db.code().code();
        return Some(match code {
            _ if message.contains("channel binding") => "channel binding failed on the server's \
                side: something between clerk-sync and the server (a proxy or load balancer that \
                ends TLS) may have changed the TLS connection, so the server's certificate is not \
                the one clerk-sync saw; connect to the server directly, or set \
                channel_binding=prefer or disable if that proxy is trusted"
                .to_owned(),
            _ if message.contains("no encryption") => "the server accepts only encrypted \
                connections (or none from this host, user and database): use sslmode=require \
                (or verify-full) in DATABASE_URL; if it still refuses, the server's pg_hba.conf \
                has no entry for this host, user and database"
                .to_owned(),
            "28P01" => format!(
                "check the user name and password in DATABASE_URL (copy them again from the \
                 provider's console); {PERCENT_ENCODE}"
            ),
            "28000" if message.contains("pg_hba.conf") => "the server's pg_hba.conf lets no \
                such connection in: check the user, the database and sslmode (a server may \
                accept only TLS: sslmode=require)"
                .to_owned(),
            "3D000" => "the database named in DATABASE_URL (after the host's '/') does not \
                exist: create it, or fix the name"
                .to_owned(),
            "53300" => "the server has no free connection slots: lower \
                CLERK_SYNC_DB_MAX_CONNECTIONS, close other clients, or use a pooled endpoint \
                (Neon: the host with -pooler)"
                .to_owned(),
            "57P03" => "the server is starting up, shutting down or recovering: try again \
                shortly"
                .to_owned(),
            _ => return None,
        });
    }
    let causes = causes(error);
    for cause in &causes {
        if let Some(tls) = cause.downcast_ref::<rustls::Error>() {
            return Some(tls_hint(tls));
        }
    }
    let text = error.to_string();
    let cause_text = causes
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    if cause_text.contains("channel binding") {
        return Some(CHANNEL_BINDING.to_owned());
    }
    if cause_text.contains("password missing") {
        return Some(format!(
            "the server asks for a password and DATABASE_URL has none: write it as \
             postgresql://USER:PASSWORD@HOST/DBNAME ({PERCENT_ENCODE})"
        ));
    }
    if cause_text.contains("server does not support TLS") {
        return Some(
            "the server does not accept TLS connections: sslmode=require and stronger need a \
             server with ssl = on; only for a server on a trusted network use sslmode=prefer or \
             disable"
                .to_owned(),
        );
    }
    if cause_text.contains("unsupported authentication method")
        || cause_text.contains("unsupported SASL mechanism")
    {
        return Some(
            "the server asks for a login clerk-sync cannot do (Kerberos/GSSAPI, SSPI or an \
             unknown SASL mechanism): give the user a password login (scram-sha-256) in the \
             server's pg_hba.conf"
                .to_owned(),
        );
    }
    let io = causes
        .iter()
        .find_map(|c| c.downcast_ref::<std::io::Error>())
        .map(|io| io.kind());
    let lookup = [
        "lookup address",
        "not known",
        "nodename nor servname",
        "No such host",
    ];
    if lookup.iter().any(|needle| cause_text.contains(needle)) {
        return Some(format!(
            "the host name does not resolve: check it, and {PERCENT_ENCODE}, which otherwise \
             end the password early and become part of the host"
        ));
    }
    match io {
        Some(std::io::ErrorKind::ConnectionRefused) => Some(
            "nothing accepts connections at that host and port: check them, and that the server \
             is running"
                .to_owned(),
        ),
        Some(std::io::ErrorKind::TimedOut) => Some(
            "no answer in time (connect_timeout in DATABASE_URL, else \
             CLERK_SYNC_DB_CONNECT_TIMEOUT): check the host and port, a firewall in between, \
             or a paused database; raise the timeout if it is only slow"
                .to_owned(),
        ),
        _ if text == "error performing TLS handshake" => Some(
            "the TLS handshake with the server failed: check that the host and port are a \
             PostgreSQL server with TLS on (sslnegotiation=direct needs PostgreSQL 17 or later), \
             and sslmode in DATABASE_URL"
                .to_owned(),
        ),
        _ if text == "connection closed" || cause_text.contains("unexpected EOF") => Some(
            "the server closed the connection during start-up: check that the host and port are \
             a PostgreSQL server (or a pooler in front of one), and its log"
                .to_owned(),
        ),
        _ => None,
    }
}

fn tls_hint(error: &rustls::Error) -> String {
    use CertificateError as C;
    match error {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            "the server's certificate is not signed by a certificate authority clerk-sync \
              trusts: give the CA's certificate as sslrootcert=/path/to/ca.pem in DATABASE_URL \
              (with sslmode=verify-full or verify-ca), or use sslmode=require to encrypt without \
              checking the certificate, as libpq does. Neon's certificates chain to public roots \
              and need no sslrootcert"
                .to_owned()
        }
        rustls::Error::InvalidCertificate(C::NotValidForNameContext {
            expected,
            presented,
        }) => {
            format!(
                "the server's certificate is not issued for the host name {} (it names {}): \
                 connect with a host name the certificate holds, or use sslmode=verify-ca to \
                 check only that a trusted authority signed it",
                server_name(expected),
                if presented.is_empty() {
                    "no host".to_owned()
                } else {
                    presented
                        .iter()
                        .map(|name| presented_name(name))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            )
        }
        rustls::Error::InvalidCertificate(C::NotValidForName) => "the server's certificate is \
            not issued for the host name in DATABASE_URL: connect with a host name the \
            certificate holds, or use sslmode=verify-ca to check only that a trusted authority \
            signed it"
            .to_owned(),
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the server's certificate has expired or is not valid yet: check this machine's \
              clock, and that the server's certificate is renewed"
            .to_owned(),
        rustls::Error::InvalidCertificate(_) => "the server's certificate was refused: check \
            sslmode and sslrootcert in DATABASE_URL (sslmode=require encrypts without checking \
            the certificate)"
            .to_owned(),
        _ => "the TLS handshake with the server failed: check that the host and port are a \
              PostgreSQL server with TLS, and sslmode in DATABASE_URL"
            .to_owned(),
    }
}

/// A name of a certificate as rustls reports it (`DnsName("localhost")`, `IpAddress(127.0.0.1)`).
fn presented_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

fn server_name(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => "in DATABASE_URL".to_owned(),
    }
}

impl fmt::Debug for Settings {
    /// Never the configuration itself: it holds the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEON: &str = "postgresql://alex:p%40ss@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb?sslmode=require&channel_binding=require";
    const TIMEOUT: Duration = Duration::from_secs(7);

    fn read(url: &str) -> Settings {
        match settings(url, TIMEOUT) {
            Ok(settings) => settings,
            Err(StoreError::Setup(e)) => panic!("{url}: {e}"),
            #[allow(unreachable_patterns)]
            Err(_) => panic!("{url}: not a setup error"),
        }
    }

    fn refused(url: &str) -> String {
        match settings(url, TIMEOUT) {
            Ok(_) => panic!("{url} was accepted"),
            Err(StoreError::Setup(e)) => e,
            #[allow(unreachable_patterns)]
            Err(_) => panic!("{url}: not a setup error"),
        }
    }

    /// A CA certificate (PEM) in a temporary file.
    fn ca_file() -> (tempfile::TempDir, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, TEST_CA).unwrap();
        (dir, path.display().to_string())
    }

    /// A self-signed CA of no use but these tests (`openssl req -x509 -newkey ec`).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBnDCCAUGgAwIBAgIULTdncURz9Oxstc9TjJ6iAj1qGWUwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXY2xlcmstc3luYyB1bml0IHRlc3QgQ0EwIBcNMjYxMjA3MTgw
OTA3WhgPMjEyNjExMTMxODA5MDdaMCIxIDAeBgNVBAMMF2NsZXJrLXN5bmMgdW5p
dCB0ZXN0IENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEwFPXQIXrJ0siMYGC
DNqY9X//bKPVHnDAEOJpt2JfFCv4ItRMPAckR4bIyCXYA8d2kTWU6td27PFIEctR
39/vWaNTMFEwHQYDVR0OBBYEFJatNYdwAPM37r5OmLMT6mGI+6cxMB8GA1UdIwQY
MBaAFJatNYdwAPM37r5OmLMT6mGI+6cxMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSQAwRgIhAJMMO7VmC6XkKT3lu3DUeoUejyrO6HD04zY+exxAI8yhAiEA
z1uJMjCzt0BUtFMLTltjprTm8dCngGJ3xUmPlpGhQ7I=
-----END CERTIFICATE-----
";

    #[test]
    fn neons_connection_string_is_read_as_is() {
        let Settings { config, tls } = read(NEON);
        assert_eq!(
            config.get_password(),
            Some(&b"p@ss"[..]),
            "the password is decoded"
        );
        assert_eq!(config.get_user(), Some("alex"));
        assert_eq!(config.get_dbname(), Some("neondb"));
        assert_eq!(config.get_channel_binding(), ChannelBinding::Require);
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        assert_eq!(config.get_connect_timeout(), Some(&TIMEOUT));
        assert_eq!(
            config.get_hosts(),
            [Host::Tcp(
                "ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech".into()
            )]
        );
        assert_eq!(config.get_ports(), [5432]);
        // libpq's require: encrypted, certificate not checked.
        assert_eq!(tls.verify, Verify::Nothing);
        assert!(
            tls.sni,
            "Neon routes by the host name sent in the handshake"
        );
        connector(NEON, TIMEOUT).unwrap();
    }

    #[test]
    fn everything_tokio_postgres_knows_is_kept_as_written() {
        let Settings { config, .. } = read(
            "postgres://u%3Ax:a%2Bb+c%26d@host.example:6543/my%2Fdb?options=endpoint%3Dep-abc-123\
             &application_name=app%20one&connect_timeout=3&sslmode=verify-full\
             &options=-c%20search_path%3Dapp+x",
        );
        assert_eq!(config.get_user(), Some("u:x"));
        assert_eq!(
            config.get_password(),
            Some(&b"a+b+c&d"[..]),
            "'+' is no space, as in libpq"
        );
        assert_eq!(config.get_dbname(), Some("my/db"));
        assert_eq!(config.get_ports(), [6543]);
        assert_eq!(
            config.get_options(),
            Some("-c search_path=app+x"),
            "the last one wins"
        );
        assert_eq!(config.get_application_name(), Some("app one"));
        assert_eq!(
            config.get_connect_timeout(),
            Some(&Duration::from_secs(3)),
            "the URL's connect_timeout wins"
        );

        let Settings { config, .. } =
            read("postgresql://u@h/db?options=endpoint%3Dep-cool-darkness-123456");
        assert_eq!(
            config.get_options(),
            Some("endpoint=ep-cool-darkness-123456")
        );
        assert_eq!(config.get_ssl_mode(), SslMode::Prefer, "libpq's default");
        assert_eq!(config.get_channel_binding(), ChannelBinding::Prefer);

        // Several hosts, and '@' in a parameter (tokio-postgres alone would take it for the
        // end of the credentials).
        let Settings { config, .. } = read(
            "postgresql://u:pw@h1:5433,h2/db?application_name=a@b&fallback_application_name=x",
        );
        assert_eq!(config.get_hosts().len(), 2);
        assert_eq!(config.get_ports(), [5433, 5432]);
        assert_eq!(config.get_password(), Some(&b"pw"[..]));
        assert_eq!(config.get_application_name(), Some("a@b"));
        let Settings { config, .. } = read("postgresql://u@h/db?fallback_application_name=x");
        assert_eq!(config.get_application_name(), Some("x"));
    }

    #[test]
    fn key_value_strings_are_read_too() {
        let Settings { config, tls } = read(
            "host=h.example port=5433 user=alex password='a b\\'c' dbname=db \
             sslmode=verify-full channel_binding=require",
        );
        assert_eq!(config.get_password(), Some(&b"a b'c"[..]));
        assert_eq!(config.get_ports(), [5433]);
        assert_eq!(config.get_channel_binding(), ChannelBinding::Require);
        assert_eq!(tls.verify, Verify::Full(Roots::Public));
        let error = refused("host=h password='secretpw");
        assert!(!error.contains("secretpw"), "{error}");
    }

    #[test]
    fn each_sslmode_checks_what_libpq_checks() {
        let (_dir, ca) = ca_file();
        let mode = |query: &str| {
            let Settings { config, tls } =
                read(&format!("postgresql://u:pw@db.example/db?{query}"));
            (config.get_ssl_mode(), tls.verify)
        };
        let file = |verify: Verify| match verify {
            Verify::Chain(Roots::File { path, certificates })
            | Verify::Full(Roots::File { path, certificates }) => {
                assert_eq!(certificates.len(), 1);
                path
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(mode("sslmode=disable"), (SslMode::Disable, Verify::Nothing));
        assert_eq!(mode("sslmode=allow"), (SslMode::Prefer, Verify::Nothing));
        assert_eq!(mode("sslmode=prefer"), (SslMode::Prefer, Verify::Nothing));
        assert_eq!(mode("sslmode=require"), (SslMode::Require, Verify::Nothing));
        assert_eq!(
            mode("sslmode=verify-ca"),
            (SslMode::Require, Verify::Chain(Roots::Public))
        );
        assert_eq!(
            mode("sslmode=verify-full"),
            (SslMode::Require, Verify::Full(Roots::Public))
        );
        assert_eq!(
            mode("sslmode=verify-full&sslrootcert=system"),
            (SslMode::Require, Verify::Full(Roots::Public))
        );
        assert_eq!(
            mode("sslrootcert=system"),
            (SslMode::Require, Verify::Full(Roots::Public)),
            "libpq 16: sslrootcert=system implies verify-full"
        );
        let encoded = ca.replace('/', "%2F");
        let (ssl, verify) = mode(&format!("sslmode=verify-full&sslrootcert={encoded}"));
        assert!(matches!(verify, Verify::Full(_)) && ssl == SslMode::Require);
        assert_eq!(file(verify), ca);
        let (_, verify) = mode(&format!("sslmode=verify-ca&sslrootcert={ca}"));
        assert!(matches!(verify, Verify::Chain(_)));
        // With a root certificate, libpq's require (and prefer) check the chain.
        let (ssl, verify) = mode(&format!("sslmode=require&sslrootcert={ca}"));
        assert!(matches!(verify, Verify::Chain(_)) && ssl == SslMode::Require);
        let (ssl, verify) = mode(&format!("sslrootcert={ca}"));
        assert!(matches!(verify, Verify::Chain(_)) && ssl == SslMode::Prefer);
        // Disabled TLS reads no file.
        assert_eq!(
            mode("sslmode=disable&sslrootcert=/nonexistent/ca.pem"),
            (SslMode::Disable, Verify::Nothing)
        );
        for query in [
            "sslmode=require",
            "sslmode=verify-ca",
            "sslmode=verify-full&sslsni=0",
            "sslmode=require&sslnegotiation=direct&ssl_min_protocol_version=TLSv1.3",
            &format!("sslmode=verify-full&sslrootcert={ca}"),
            &format!("sslmode=verify-ca&sslrootcert={ca}"),
        ] {
            connector(&format!("postgresql://u:pw@db.example/db?{query}"), TIMEOUT).unwrap();
        }
    }

    #[test]
    fn a_unix_socket_is_never_tls_and_a_host_is_needed() {
        let Settings { config, .. } =
            read("postgresql://u@%2Fvar%2Frun%2Fpostgresql/db?sslmode=require");
        assert_eq!(config.get_ssl_mode(), SslMode::Disable, "as libpq");
        let Settings { config, .. } = read("host=/tmp,db.example sslmode=require");
        assert_eq!(config.get_ssl_mode(), SslMode::Require);
        let error = refused("postgresql:///db?sslmode=require");
        assert!(error.contains("names no host"), "{error}");
    }

    #[test]
    fn invalid_values_are_refused_with_the_valid_ones() {
        let error = refused("postgresql://u:pw@h/db?sslmode=verify_full");
        assert!(error.contains("sslmode=\"verify_full\""), "{error}");
        assert!(
            error.contains("disable, allow, prefer, require, verify-ca or verify-full"),
            "{error}"
        );
        let error = refused("postgresql://u:pw@h/db?sslmode=require&channel_binding=required");
        assert!(error.contains("channel_binding=\"required\""), "{error}");
        assert!(error.contains("disable, prefer or require"), "{error}");
        let error = refused("postgresql://u:pw@h/db?sslmode=require&gssencmode=require");
        assert!(error.contains("GSSAPI"), "{error}");
        let error = refused("postgresql://u:pw@h/db?sslcert=client.pem");
        assert!(
            error.contains("sslcert") && error.contains("remove"),
            "{error}"
        );
        let error = refused("postgresql://u:pw@h/db?frobnicate=1");
        assert!(
            error.contains("frobnicate") && error.contains("remove it"),
            "{error}"
        );
        let error = refused("postgresql://u:pw@h:notaport/db");
        assert!(
            error.contains("port") && error.contains("percent-encode"),
            "{error}"
        );
        let error = refused("postgresql://u:pw@h/db?sslmode=require&sslrootcert=system");
        assert!(error.contains("use sslmode=verify-full"), "{error}");
        let error = refused("postgresql://u:pw@h/db?sslmode=prefer&sslnegotiation=direct");
        assert!(error.contains("sslmode=require"), "{error}");
        let error = refused("mysql://u:pw@h/db");
        assert!(error.contains("postgresql://"), "{error}");
    }

    #[test]
    fn channel_binding_without_tls_is_refused_up_front() {
        let error = refused("postgresql://u:pw@h/db?sslmode=disable&channel_binding=require");
        assert!(
            error.contains("channel_binding=require") && error.contains("sslmode=disable"),
            "{error}"
        );
        assert!(
            error.contains("Use sslmode=require") && error.contains("channel_binding=prefer"),
            "what to change: {error}"
        );
        // Not the other way round, nor with TLS.
        read("postgresql://u:pw@h/db?sslmode=disable&channel_binding=prefer");
        read("postgresql://u:pw@h/db?sslmode=disable&channel_binding=disable");
        read("postgresql://u:pw@h/db?channel_binding=require");
    }

    #[test]
    fn a_bad_sslrootcert_names_the_file() {
        let error = refused("postgresql://u:pw@h/db?sslmode=verify-full&sslrootcert=nope/ca.pem");
        assert!(error.contains("sslrootcert=nope/ca.pem"), "{error}");
        assert!(
            error.contains("relative path starts at the working directory"),
            "{error}"
        );
        let error =
            refused("postgresql://u:pw@h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem");
        assert!(
            error.contains("/nonexistent/ca.pem") && !error.contains("relative"),
            "{error}"
        );

        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = refused(&format!(
            "postgresql://u:pw@h/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        ));
        assert!(error.contains("holds no certificate"), "{error}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(&broken, "-----BEGIN CERTIFICATE-----\nnot base64!\n").unwrap();
        let error = refused(&format!(
            "postgresql://u:pw@h/db?sslmode=verify-ca&sslrootcert={}",
            broken.display()
        ));
        assert!(error.contains(&broken.display().to_string()), "{error}");
    }

    #[test]
    fn no_error_shows_any_part_of_the_password() {
        let secret = "Sup3rS3cr3tPw";
        for url in [
            format!("postgresql://u:{secret}@h/db?sslmode={secret}"),
            format!("postgresql://u:{secret}@h/db?channel_binding={secret}"),
            format!("postgresql://u@h/db?password={secret}&sslmode=Sup3r"),
            format!("postgresql://u:{secret}@h/db?sslmode=disable&channel_binding=require"),
            format!("postgresql://u:{secret}@h/db?sslmode=verify-full&sslrootcert=missing.pem"),
            format!("postgresql://u:{secret}@h/db?{secret}=1"),
            format!("postgresql://u:{secret}@h/db?x&{secret}"),
            format!("postgresql://u@h/db?password=a&{secret}"),
            format!("postgresql://u:{secret}@h:{secret}/db"),
            format!("postgresql://u:{secret}@h/db?connect_timeout={secret}"),
            format!("postgresql://u:{secret}@h/db?ssl_min_protocol_version={secret}"),
            format!("host=h password={secret} sslmode={secret}"),
            format!("host=h password='{secret}"),
            format!("host=h password {secret}"),
        ] {
            let error = refused(&url);
            for fragment in [secret, "Sup3r", "S3cr3t", "3tPw"] {
                assert!(!error.contains(fragment), "{url}: {error}");
            }
        }
    }

    /// A stand-in for a server on loopback: refuses TLS, then answers the start-up message
    /// with `reply` (as PostgreSQL's wire protocol) and waits for the client to leave.
    async fn fake_server(reply: &'static [u8]) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            loop {
                let mut length = [0u8; 4];
                if socket.read_exact(&mut length).await.is_err() {
                    return;
                }
                let mut body = vec![0u8; (u32::from_be_bytes(length) as usize).saturating_sub(4)];
                if socket.read_exact(&mut body).await.is_err() {
                    return;
                }
                // SSLRequest (80877103): no TLS here.
                if body.starts_with(&[0x04, 0xd2, 0x16, 0x2f]) {
                    socket.write_all(b"N").await.unwrap();
                    continue;
                }
                socket.write_all(reply).await.unwrap();
                let _ = socket.read(&mut [0u8; 64]).await;
                return;
            }
        });
        port
    }

    async fn failure(url: &str) -> String {
        let Connector { config, tls } = connector(url, TIMEOUT).unwrap();
        match config.connect(tls).await {
            Ok(_) => panic!("{url} connected"),
            Err(error) => explain(&error),
        }
    }

    const AUTHENTICATION_OK: &[u8] = b"R\0\0\0\x08\0\0\0\0";
    const CLEARTEXT_PASSWORD: &[u8] = b"R\0\0\0\x08\0\0\0\x03";

    #[tokio::test]
    async fn a_server_that_skips_channel_binding_is_refused_in_words_that_say_what_to_change() {
        // Trust authentication: no SCRAM at all.
        let port = fake_server(AUTHENTICATION_OK).await;
        let error = failure(&format!(
            "postgresql://u:Sup3rS3cr3tPw@127.0.0.1:{port}/db?channel_binding=require"
        ))
        .await;
        assert!(error.contains("channel binding"), "{error}");
        assert!(error.contains("SCRAM-SHA-256-PLUS"), "{error}");
        assert!(
            error.contains("sslmode=require") && error.contains("channel_binding=prefer"),
            "what to change: {error}"
        );
        assert!(!error.contains("S3cr3t"), "{error}");

        // A plain-text password request, the same.
        let port = fake_server(CLEARTEXT_PASSWORD).await;
        let error = failure(&format!(
            "postgresql://u:Sup3rS3cr3tPw@127.0.0.1:{port}/db?channel_binding=require"
        ))
        .await;
        assert!(error.contains("channel_binding=require demands"), "{error}");
        assert!(!error.contains("S3cr3t"), "{error}");
    }

    #[tokio::test]
    async fn a_missing_password_and_a_closed_port_are_explained() {
        let port = fake_server(CLEARTEXT_PASSWORD).await;
        let error = failure(&format!("postgresql://u@127.0.0.1:{port}/db")).await;
        assert!(error.contains("DATABASE_URL has none"), "{error}");

        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().port()
        };
        let error = failure(&format!("postgresql://u:Sup3rS3cr3tPw@127.0.0.1:{port}/db")).await;
        assert!(error.contains("nothing accepts connections"), "{error}");
        assert!(!error.contains("S3cr3t"), "{error}");
    }

    #[test]
    fn settings_never_show_the_password() {
        let shown = format!("{:?}", read(NEON));
        assert!(
            !shown.contains("p@ss") && !shown.contains("p%40ss"),
            "{shown}"
        );
    }
}
