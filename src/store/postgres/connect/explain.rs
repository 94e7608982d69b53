//! A failed connection attempt explained for people: the cause tokio-postgres leaves out of
//! its own text, and what to change. Never the password.

use std::error::Error as _;

use rustls::CertificateError;
use rustls::pki_types::ServerName;

/// How to write a user name or password with special characters into a connection string.
pub(super) const PERCENT_ENCODE: &str = "percent-encode special characters in the user name and password \
                              (@ as %40, # as %23, / as %2F, : as %3A, ? as %3F, & as %26, % as \
                              %25)";

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
pub(super) fn causes(error: &tokio_postgres::Error) -> Vec<&(dyn std::error::Error + 'static)> {
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

pub(super) fn hint(error: &tokio_postgres::Error) -> Option<String> {
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

pub(super) fn tls_hint(error: &rustls::Error) -> String {
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
pub(super) fn presented_name(name: &str) -> &str {
    name.strip_prefix("DnsName(\"")
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| {
            name.strip_prefix("IpAddress(")
                .and_then(|n| n.strip_suffix(')'))
        })
        .unwrap_or(name)
}

pub(super) fn server_name(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        _ => "in DATABASE_URL".to_owned(),
    }
}
