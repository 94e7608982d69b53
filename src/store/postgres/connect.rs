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
use std::time::Duration;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::{ChannelBinding, Host, SslMode};

use crate::store::error::StoreError;

mod explain;
mod tls;

use explain::PERCENT_ENCODE;
pub(crate) use explain::explain;
use tls::{Roots, Tls, Verify};

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

// ---------------------------------------------------------------------------------------------
// Reading the connection string.

const EXAMPLE: &str = "postgresql://USER:PASSWORD@HOST/DBNAME?sslmode=require";

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
            return Err(StoreError::setup(format!(
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
                return Err(StoreError::setup(format!(
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
            StoreError::setup(format!(
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
                            return Err(StoreError::setup(
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
        StoreError::setup(format!(
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
                    return Err(StoreError::setup(
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
                return Err(StoreError::setup(format!(
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
            return Err(StoreError::setup(format!(
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
        return Err(StoreError::setup(
            "DATABASE_URL has channel_binding=require with sslmode=disable, which cannot work: \
             channel binding ties the password login (SCRAM-SHA-256-PLUS) to a TLS connection, \
             and sslmode=disable turns TLS off. Use sslmode=require (or verify-full) with \
             channel_binding=require, or set channel_binding=prefer or disable",
        ));
    }
    if direct && matches!(sslmode, Sslmode::Disable | Sslmode::Allow | Sslmode::Prefer) {
        return Err(StoreError::setup(format!(
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
        return Err(StoreError::setup(format!(
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
        StoreError::setup(format!(
            "DATABASE_URL has sslrootcert={path}, but that file cannot be read: {e}{}. Give the \
             path of the CA certificate (PEM) that signed the server's certificate, or \
             sslrootcert=system for the public roots",
            relative()
        ))
    })?;
    let certificates = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            StoreError::setup(format!(
                "DATABASE_URL has sslrootcert={path}, but that file is not valid PEM ({e}){}: \
                 give the CA certificate as PEM (-----BEGIN CERTIFICATE-----)",
                relative()
            ))
        })?;
    if certificates.is_empty() {
        return Err(StoreError::setup(format!(
            "DATABASE_URL has sslrootcert={path}, but that file holds no certificate{}: give \
             the CA certificate as PEM (-----BEGIN CERTIFICATE-----)",
            relative()
        )));
    }
    // Each is checked now, so that a bad file is a start-up error, not a failed handshake.
    let mut store = RootCertStore::empty();
    for certificate in &certificates {
        store.add(certificate.clone()).map_err(|e| {
            StoreError::setup(format!(
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
        "TLSv1" | "TLSv1.1" => Err(StoreError::setup(format!(
            "DATABASE_URL has {}={}: clerk-sync speaks TLS 1.2 and 1.3 only; use TLSv1.2 or \
             TLSv1.3",
            param.key, param.value
        ))),
        value => Err(StoreError::setup(format!(
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
        return Err(StoreError::setup(
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
        return StoreError::setup(format!(
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
    StoreError::setup(format!(
        "DATABASE_URL is not a valid PostgreSQL connection string{what}; expected e.g. \
         {EXAMPLE}, and {PERCENT_ENCODE}"
    ))
}

// ---------------------------------------------------------------------------------------------
// Failed connections, for people.

impl fmt::Debug for Settings {
    /// Never the configuration itself: it holds the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
