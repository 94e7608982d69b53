use super::*;

#[test]
fn neon_url_is_accepted_as_given() {
    let target = DatabaseTarget::from_url(
        "postgresql://alex:AbC123dEf@ep-cool-darkness-a1b2c3d4-pooler.us-east-2.aws.neon.tech/dbname?sslmode=require&channel_binding=require",
    )
    .unwrap();
    let DatabaseTarget::Postgres { url } = &target else {
        panic!("not postgres")
    };
    assert!(
        url.ends_with("/dbname?sslmode=require&channel_binding=require"),
        "{url}"
    );
    assert!(!target.to_string().contains("AbC123dEf"), "{target}");
}

#[test]
fn sqlite_urls_name_a_file() {
    for (url, path) in [
        ("sqlite://clerk-sync.db", "clerk-sync.db"),
        ("sqlite:///var/lib/x.db", "/var/lib/x.db"),
        ("sqlite:data/x.db?mode=rwc", "data/x.db"),
    ] {
        assert_eq!(
            DatabaseTarget::from_url(url).unwrap(),
            DatabaseTarget::Sqlite { path: path.into() }
        );
    }
    assert!(DatabaseTarget::from_url("sqlite::memory:").is_err());
    let err = DatabaseTarget::from_url("mysql://x")
        .unwrap_err()
        .to_string();
    assert!(err.contains("mysql") && err.contains("sqlite://"), "{err}");
}

#[test]
fn listen_falls_back_to_port_then_default() {
    assert_eq!(
        listen_address(None, None).unwrap().to_string(),
        "127.0.0.1:3000"
    );
    assert_eq!(
        listen_address(None, Some("8080")).unwrap().to_string(),
        "0.0.0.0:8080"
    );
    assert_eq!(
        listen_address(Some("127.0.0.1:9"), Some("8080"))
            .unwrap()
            .to_string(),
        "127.0.0.1:9"
    );
    assert!(listen_address(Some("nonsense"), None).is_err());
}

#[test]
fn durations_read_like_people_write_them() {
    assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
    assert_eq!(parse_duration("30m").unwrap(), Duration::from_secs(1800));
    assert_eq!(parse_duration("6h").unwrap(), Duration::from_secs(21_600));
    assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
    assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
    assert_eq!(parse_duration(" 45 ").unwrap(), Duration::from_secs(45));
    assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
    assert_eq!(
        parse_duration("2days").unwrap(),
        Duration::from_secs(172_800)
    );
    assert_eq!(
        parse_duration("6 hours").unwrap(),
        Duration::from_secs(21_600)
    );
    for zero in ["0", "0s", "0d"] {
        let refused = parse_duration(zero).unwrap_err();
        assert!(
            refused.contains("zero") && refused.contains("6h"),
            "{refused}"
        );
    }
    for nonsense in ["soon", "", "6x", "-5s", "99999999999999999999"] {
        let refused = parse_duration(nonsense).unwrap_err();
        assert!(refused.contains("6h"), "{nonsense:?}: {refused}");
    }
}

#[test]
fn inbox_retention_is_a_duration_or_off() {
    assert_eq!(
        parse_retention("30d").unwrap(),
        Some(Duration::from_secs(30 * 86_400))
    );
    assert_eq!(
        parse_retention("12h").unwrap(),
        Some(Duration::from_secs(43_200))
    );
    assert_eq!(parse_retention("off").unwrap(), None);
    assert_eq!(parse_retention(" OFF ").unwrap(), None);
    let refused = parse_retention("forever").unwrap_err();
    assert!(
        refused.contains("30d") || refused.contains("1d"),
        "{refused}"
    );
    assert!(refused.contains("off"), "{refused}");
    assert!(parse_retention("0d").is_err());
    let config = ServeConfig::new(
        DatabaseTarget::Sqlite {
            path: "x.db".into(),
        },
        vec![],
    );
    assert_eq!(config.inbox_retention, Some(DEFAULT_INBOX_RETENTION));
    assert!(
        config
            .describe()
            .lines()
            .any(|l| l.starts_with("CLERK_SYNC_INBOX_RETENTION") && l.ends_with("30d")),
        "{}",
        config.describe()
    );
}

#[test]
fn signing_secrets_that_cannot_work_are_refused_with_the_mistake_named() {
    let (_, good) = SigningSecret::generate();
    let refused = |value: &str| {
        secrets_from_env(Some(value), None)
            .expect_err(value)
            .to_string()
    };
    for (value, says) in [
        ("abc", "does not start with whsec_"),
        ("sk_test_abcdefghijklmnop", "Clerk secret key"),
        ("sk_live_abcdefghijklmnop", "CLERK_SECRET_KEY"),
        ("pk_test_Zm9vLmNsZXJrLmFjY291bnRzLmRldiQ", "publishable key"),
        (&format!("\"{good}\""), "quotes"),
        (&format!("'{good}'"), "quotes"),
        ("whsec_not*base64!", "not base64"),
        ("whsk_abc", "asymmetric"),
        (&format!("{good} abc"), "line break"),
    ] {
        let message = refused(value);
        assert!(message.contains(says), "{value}: {message}");
        assert!(
            message.contains("Webhooks, select the endpoint"),
            "{message}"
        );
    }
    // Spaces around a secret and between several are fine.
    let (_, other) = SigningSecret::generate();
    let both = secrets_from_env(Some(&format!("  {good},\n{other} ")), None).unwrap();
    assert_eq!(both.map(|s| s.len()), Some(2));
}

#[test]
fn no_fragment_of_a_password_is_ever_shown() {
    let err = DatabaseTarget::from_url("postgresql://alex:p@ss#word@host/db")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("percent-encoded") && err.contains("%23"),
        "{err}"
    );
    assert!(!err.contains("ss#word") && !err.contains("p@ss"), "{err}");

    let target = DatabaseTarget::from_url("postgresql://alex:p%40ss%23word@host/db").unwrap();
    let shown = target.to_string();
    assert!(!shown.contains("ss") && !shown.contains("word"), "{shown}");
    let target = DatabaseTarget::Postgres {
        url: "postgresql://alex:p@ss#word@host/db".into(),
    };
    let shown = target.to_string();
    assert!(!shown.contains("word"), "{shown}");
}

#[test]
fn clerk_variables_and_the_builder_give_the_same_settings_and_messages() {
    let publishable = "pk_test_Zm9vLWJhci0xMy5jbGVyay5hY2NvdW50cy5kZXYk";
    let read = ClerkSettings::from_values(
        Some(" http://127.0.0.1:9 "),
        Some("sk_test_abc"),
        Some(" PEM "),
        Some(publishable),
        Some("https://a.example/, https://b.example"),
        true,
    )
    .unwrap();
    let built = ClerkSettings::default()
        .api_url("http://127.0.0.1:9")
        .secret_key("sk_test_abc")
        .unwrap()
        .jwt_key("PEM")
        .publishable_key(publishable)
        .unwrap()
        .authorized_parties(["https://a.example/", "https://b.example"])
        .allow_pending_sessions(true);
    assert_eq!(format!("{read:?}"), format!("{built:?}"));
    assert_eq!(
        built.authorized_parties,
        ["https://a.example", "https://b.example"]
    );

    let unset = ClerkSettings::from_values(None, Some(" "), None, None, Some(""), false).unwrap();
    assert_eq!(
        format!("{unset:?}"),
        format!("{:?}", ClerkSettings::default())
    );

    let variable = ClerkSettings::from_values(None, None, None, Some("pk_nope"), None, false)
        .unwrap_err()
        .to_string();
    let typed = ClerkSettings::default()
        .publishable_key("pk_nope")
        .unwrap_err()
        .to_string();
    assert_eq!(variable, typed);
    assert!(
        typed.contains("CLERK_PUBLISHABLE_KEY") && typed.contains("dashboard (API keys)"),
        "{typed}"
    );
    let typed = ClerkSettings::default().secret_key("whsec_x").unwrap_err();
    assert!(typed.0.contains("CLERK_SECRET_KEY"), "{typed}");
}

#[test]
fn writers_are_checked_against_the_pool_on_postgres_only() {
    let on = |database: &str, writers: usize| {
        let mut config = ServeConfig::new(DatabaseTarget::from_url(database).unwrap(), vec![]);
        config.pool.max_connections = 4;
        config.writers = Some(writers);
        config.validate()
    };
    let refused = on("postgres://u@localhost/db", 4).unwrap_err();
    assert!(
        refused.0.starts_with(
            "CLERK_SYNC_WRITERS = 4 leaves none of CLERK_SYNC_DB_MAX_CONNECTIONS = 4 "
        ),
        "{refused}"
    );
    assert!(on("postgres://u@localhost/db", 3).is_ok());
    assert!(on("sqlite://x.db", 4).is_ok());
}

#[test]
fn legacy_secret_name_is_read_when_the_current_one_is_absent() {
    let (_, text) = SigningSecret::generate();
    assert!(secrets_from_env(None, Some(&text)).unwrap().is_some());
    assert!(secrets_from_env(Some(" "), None).unwrap().is_none());
    let err = secrets_from_env(Some("nope!"), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("CLERK_WEBHOOK_SIGNING_SECRET"), "{err}");
}
