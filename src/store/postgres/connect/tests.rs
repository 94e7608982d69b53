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
    let Settings { config, .. } =
        read("postgresql://u:pw@h1:5433,h2/db?application_name=a@b&fallback_application_name=x");
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
        let Settings { config, tls } = read(&format!("postgresql://u:pw@db.example/db?{query}"));
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
    let error = refused("postgresql://u:pw@h/db?sslmode=require&sslrootcert=/nonexistent/ca.pem");
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
