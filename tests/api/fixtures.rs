//! Clerk's own published example payloads, signed and delivered byte for byte.

use std::path::Path;

use crate::support::{TestApp, at, on_both_backends};

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/clerk")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

on_both_backends! {
    async fn clerk_example_payloads_are_applied_as_clerk_means_them(backend) {
        let app = TestApp::spawn(backend).await;

        // Clerk's OpenAPI user.created: primary_email_address_id set, email_addresses empty.
        let answer = app.deliver(&fixture("user.created.json")).await;
        assert_eq!((answer.status, answer.outcome()), (200, "created"));
        let row = app.user("user_2g7np7Hrk0SN6kj5EDMLDaKNL0S").await.unwrap();
        assert_eq!(row.email, None);
        assert_eq!(row.name.as_deref(), Some("John Doe"));
        assert_eq!(row.clerk_created_at, Some(at(1_716_883_200_000)));

        // Its user.updated (newer): applied over it.
        let answer = app.deliver(&fixture("user.updated.json")).await;
        assert_eq!(answer.outcome(), "updated");
        let row = app.user("user_2g7np7Hrk0SN6kj5EDMLDaKNL0S").await.unwrap();
        assert_eq!(row.last_name.as_deref(), Some("Doe Updated"));
        assert_eq!(row.username.as_deref(), Some("johndoe"));
        assert_eq!(row.image_url.as_deref(), Some("https://img.clerk.com/yyyyy"));
        assert_eq!(row.clerk_updated_at, Some(at(1_716_883_500_000)));

        // The docs' example, with a real primary address.
        assert_eq!(app.deliver(&fixture("user.created.clerk-docs.json")).await.outcome(), "created");
        let row = app.user("user_29w83sxmDNGwOuEthce5gg56FcC").await.unwrap();
        assert_eq!(row.email.as_deref(), Some("example@example.org"));
        assert_eq!(row.name.as_deref(), Some("Example Example"));

        // Organization events, as published (tests/api/organizations.rs checks their rows).
        for (name, outcome) in [
            ("organization.created.json", "created"),
            ("organizationMembership.created.json", "created"),
            ("organizationMembership.deleted.json", "deleted"),
            ("organization.deleted.json", "deleted"),
        ] {
            let answer = app.deliver(&fixture(name)).await;
            assert_eq!((answer.status, answer.outcome()), (200, outcome), "{name}");
        }

        // user.deleted carries only the id.
        assert_eq!(app.deliver(&fixture("user.deleted.json")).await.outcome(), "deleted");
        assert!(app.user("user_2g7np7Hrk0SN6kj5EDMLDaKNL0S").await.is_none());
        assert_eq!(app.users().await.len(), 1);
    }
}
