//! The table check: the rows the receiver left in the database against what Clerk holds in
//! the end (users; with --organizations, organizations and memberships too). The rows are
//! read in `database`.

use std::collections::{BTreeMap, HashMap};

use serde_json::{Value, json};

use clerk_sync::clerk::sample::SampleUser;

use crate::database::{MemberRow, OrgRow, Row, fetch_organization_rows, fetch_rows};
use crate::model::Model;

/// The check of --database-url: the users `table`, and with `organizations` the two
/// organization tables beside it. Returns the users' verdict and the organizations'.
pub(crate) async fn check(
    url: &str,
    table: &str,
    organizations: bool,
    model: &Model,
) -> anyhow::Result<(Value, Option<Value>)> {
    let rows = fetch_rows(url, table).await?;
    let orgs = if organizations {
        let (orgs, members) = fetch_organization_rows(url, table).await?;
        Some(verify_organizations(model, &orgs, &members))
    } else {
        None
    };
    Ok((verify_users(model, &rows), orgs))
}

/// Every mismatch the verdicts of `check` found, all tables together.
pub(crate) fn mismatches(users: Option<&Value>, organizations: Option<&Value>) -> u64 {
    users.and_then(|v| v["mismatches"].as_u64()).unwrap_or(0)
        + organizations.map_or(0, |v| {
            v["organizations"]["mismatches"].as_u64().unwrap_or(0)
                + v["memberships"]["mismatches"].as_u64().unwrap_or(0)
        })
}

fn full_name(user: &SampleUser) -> Option<String> {
    let parts: Vec<&str> = [&user.first_name, &user.last_name]
        .into_iter()
        .filter_map(|p| p.as_deref())
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Users against Clerk's final state. A row with "deletedAt" set counts as absent.
fn verify_users(model: &Model, rows: &HashMap<String, Row>) -> Value {
    let (mut missing, mut zombies, mut stale, mut mismatched) = (vec![], vec![], vec![], vec![]);
    let mut fields: BTreeMap<&str, usize> = BTreeMap::new();
    for (user, &deleted) in model.users.iter().zip(&model.deleted) {
        let row = rows.get(&user.id).filter(|r| !r.deleted);
        let Some(row) = row else {
            if !deleted {
                missing.push(user.id.clone());
            }
            continue;
        };
        if deleted {
            zombies.push(user.id.clone());
            continue;
        }
        let checks: [(&str, bool); 7] = [
            ("email", row.email == user.email),
            ("firstName", row.first_name == user.first_name),
            ("lastName", row.last_name == user.last_name),
            ("name", row.name == full_name(user)),
            (
                "imageUrl",
                row.image_url.as_deref() == Some(user.image_url.as_str()),
            ),
            ("username", row.username == user.username),
            (
                "clerkUpdatedAt",
                row.clerk_updated_at == Some(user.updated_at),
            ),
        ];
        let wrong: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        if wrong.is_empty() {
            continue;
        }
        for field in &wrong {
            *fields.entry(*field).or_default() += 1;
        }
        if row.clerk_updated_at.is_some_and(|t| t < user.updated_at) {
            stale.push(user.id.clone());
        } else {
            mismatched.push(format!("{} ({})", user.id, wrong.join(", ")));
        }
    }
    let known: std::collections::HashSet<&str> =
        model.users.iter().map(|u| u.id.as_str()).collect();
    let unknown = rows
        .iter()
        .filter(|(id, r)| !r.deleted && !known.contains(id.as_str()))
        .count();
    let expected = model.deleted.iter().filter(|d| !**d).count();
    let live = rows.values().filter(|r| !r.deleted).count();
    json!({
        "rows_in_table": live,
        "expected_rows": expected,
        "missing": missing.len(),
        "zombies": zombies.len(),
        "stale": stale.len(),
        "field_mismatches": mismatched.len(),
        "mismatches": missing.len() + zombies.len() + stale.len() + mismatched.len(),
        "unknown_rows": unknown,
        "mismatched_fields": fields,
        "examples": {
            "missing": &missing[..missing.len().min(3)],
            "zombies": &zombies[..zombies.len().min(3)],
            "stale": &stale[..stale.len().min(3)],
            "field_mismatches": &mismatched[..mismatched.len().min(3)],
        },
    })
}

/// The verdict on rows against a model: what is missing, left over (zombie), older than
/// Clerk's (stale), or different otherwise, with up to three examples each.
#[derive(Default)]
struct Verdict {
    missing: Vec<String>,
    zombies: Vec<String>,
    stale: Vec<String>,
    mismatched: Vec<String>,
    fields: BTreeMap<&'static str, usize>,
}

impl Verdict {
    /// One thing Clerk holds (`live`) or held, against its row (`None`: absent).
    fn check(
        &mut self,
        id: &str,
        live: bool,
        row_updated: Option<Option<i64>>,
        updated_at: i64,
        checks: &[(&'static str, bool)],
    ) {
        let Some(row_updated) = row_updated else {
            if live {
                self.missing.push(id.to_owned());
            }
            return;
        };
        if !live {
            self.zombies.push(id.to_owned());
            return;
        }
        let wrong: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
        if wrong.is_empty() {
            return;
        }
        for field in &wrong {
            *self.fields.entry(field).or_default() += 1;
        }
        if row_updated.is_some_and(|t| t < updated_at) {
            self.stale.push(id.to_owned());
        } else {
            self.mismatched.push(format!("{id} ({})", wrong.join(", ")));
        }
    }

    fn report(self, rows: usize, expected: usize, unknown: usize) -> Value {
        let first = |v: &Vec<String>| v[..v.len().min(3)].to_vec();
        json!({
            "rows_in_table": rows,
            "expected_rows": expected,
            "missing": self.missing.len(),
            "zombies": self.zombies.len(),
            "stale": self.stale.len(),
            "field_mismatches": self.mismatched.len(),
            "mismatches": self.missing.len() + self.zombies.len() + self.stale.len()
                + self.mismatched.len(),
            "unknown_rows": unknown,
            "mismatched_fields": self.fields,
            "examples": {
                "missing": first(&self.missing),
                "zombies": first(&self.zombies),
                "stale": first(&self.stale),
                "field_mismatches": first(&self.mismatched),
            },
        })
    }
}

/// Organizations and memberships against Clerk's final state. A deleted organization's row
/// (soft mode: "deletedAt" set) counts as absent; memberships are never kept once gone.
fn verify_organizations(
    model: &Model,
    orgs: &HashMap<String, OrgRow>,
    members: &HashMap<String, MemberRow>,
) -> Value {
    let mut verdict = Verdict::default();
    for (o, &deleted) in model.organizations.iter().zip(&model.organization_deleted) {
        let row = orgs.get(&o.id).filter(|r| !r.4);
        verdict.check(
            &o.id,
            !deleted,
            row.map(|r| r.3),
            o.updated_at,
            &row.map_or(Vec::new(), |r| {
                vec![
                    ("name", r.0 == o.name),
                    ("slug", r.1.as_deref() == Some(o.slug.as_str())),
                    ("imageUrl", r.2.as_deref() == Some(o.image_url.as_str())),
                    ("clerkUpdatedAt", r.3 == Some(o.updated_at)),
                ]
            }),
        );
    }
    let known: std::collections::HashSet<&str> =
        model.organizations.iter().map(|o| o.id.as_str()).collect();
    let organizations = verdict.report(
        orgs.values().filter(|r| !r.4).count(),
        model.organization_deleted.iter().filter(|d| !**d).count(),
        orgs.iter()
            .filter(|(id, r)| !r.4 && !known.contains(id.as_str()))
            .count(),
    );

    let mut verdict = Verdict::default();
    for (m, &live) in model.memberships.iter().zip(&model.membership_live) {
        let row = members.get(&m.id);
        verdict.check(
            &m.id,
            live,
            row.map(|r| r.3),
            m.updated_at,
            &row.map_or(Vec::new(), |r| {
                vec![
                    ("organizationId", r.0 == m.organization.id),
                    ("userId", r.1 == m.user_id),
                    ("role", r.2 == m.role),
                    ("clerkUpdatedAt", r.3 == Some(m.updated_at)),
                ]
            }),
        );
    }
    let known: std::collections::HashSet<&str> =
        model.memberships.iter().map(|m| m.id.as_str()).collect();
    let memberships = verdict.report(
        members.len(),
        model.membership_live.iter().filter(|l| **l).count(),
        members
            .keys()
            .filter(|id| !known.contains(id.as_str()))
            .count(),
    );
    json!({"organizations": organizations, "memberships": memberships})
}

#[cfg(test)]
mod tests {
    use clerk_sync::clerk::sample::{SampleMembership, SampleOrganization};

    use super::*;

    fn row(user: &SampleUser) -> Row {
        Row {
            email: user.email.clone(),
            first_name: user.first_name.clone(),
            last_name: user.last_name.clone(),
            name: full_name(user),
            image_url: Some(user.image_url.clone()),
            username: user.username.clone(),
            clerk_updated_at: Some(user.updated_at),
            deleted: false,
        }
    }

    fn model(users: Vec<SampleUser>, deleted: Vec<bool>) -> Model {
        Model {
            users,
            deleted,
            organizations: Vec::new(),
            organization_deleted: Vec::new(),
            memberships: Vec::new(),
            membership_live: Vec::new(),
        }
    }

    #[test]
    fn users_are_told_missing_zombie_stale_or_mismatched() {
        let user = |n: usize| SampleUser::new(format!("user_{n}"), 1_000);
        let model = model(
            (0..7).map(user).collect(),
            vec![false, false, true, false, false, true, false],
        );
        let mut rows = HashMap::new();
        rows.insert("user_0".to_owned(), row(&model.users[0]));
        // user_1 missing; user_2 deleted in Clerk but still there.
        rows.insert("user_2".to_owned(), row(&model.users[2]));
        let mut stale = row(&model.users[3]);
        stale.clerk_updated_at = Some(999);
        stale.username = None;
        rows.insert("user_3".to_owned(), stale);
        let mut wrong = row(&model.users[4]);
        wrong.email = Some("other@example.com".to_owned());
        rows.insert("user_4".to_owned(), wrong);
        // Soft-deleted rows count as absent: right for user_5, missing for user_6.
        for n in [5, 6] {
            let mut gone = row(&model.users[n]);
            gone.deleted = true;
            rows.insert(format!("user_{n}"), gone);
        }
        rows.insert("user_other".to_owned(), row(&user(99)));

        let v = verify_users(&model, &rows);
        assert_eq!(v["rows_in_table"], 5);
        assert_eq!(v["expected_rows"], 5);
        assert_eq!(v["missing"], 2);
        assert_eq!(v["zombies"], 1);
        assert_eq!(v["stale"], 1);
        assert_eq!(v["field_mismatches"], 1);
        assert_eq!(v["mismatches"], 5);
        assert_eq!(v["unknown_rows"], 1);
        assert_eq!(
            v["mismatched_fields"],
            json!({"clerkUpdatedAt": 1, "email": 1, "username": 1})
        );
        assert_eq!(v["examples"]["field_mismatches"][0], "user_4 (email)");
        assert_eq!(mismatches(Some(&v), None), 5);
    }

    #[test]
    fn organizations_and_memberships_are_checked_the_same_way() {
        let org = |n: usize| SampleOrganization::new(format!("org_{n}"), 1_000);
        let mut model = model(Vec::new(), Vec::new());
        model.organizations = vec![org(0), org(1), org(2)];
        model.organization_deleted = vec![false, true, false];
        let member = |n: usize| {
            SampleMembership::new(format!("orgmem_{n}"), org(0), format!("user_{n}"), 2_000)
        };
        model.memberships = vec![member(0), member(1), member(2)];
        model.membership_live = vec![true, false, true];

        let org_row = |o: &SampleOrganization, deleted: bool| -> OrgRow {
            (
                o.name.clone(),
                Some(o.slug.clone()),
                Some(o.image_url.clone()),
                Some(o.updated_at),
                deleted,
            )
        };
        let orgs = HashMap::from([
            ("org_0".to_owned(), org_row(&model.organizations[0], false)),
            // Deleted in Clerk, soft-deleted here: absent, as it should be.
            ("org_1".to_owned(), org_row(&model.organizations[1], true)),
            ("org_2".to_owned(), {
                let mut r = org_row(&model.organizations[2], false);
                r.1 = Some("taken".to_owned());
                r
            }),
        ]);
        let member_row = |m: &SampleMembership| -> MemberRow {
            (
                m.organization.id.clone(),
                m.user_id.clone(),
                m.role.clone(),
                Some(m.updated_at),
            )
        };
        let members = HashMap::from([
            ("orgmem_0".to_owned(), member_row(&model.memberships[0])),
            // Removed in Clerk, still here: a zombie.
            ("orgmem_1".to_owned(), member_row(&model.memberships[1])),
            ("orgmem_x".to_owned(), member_row(&model.memberships[0])),
        ]);

        let v = verify_organizations(&model, &orgs, &members);
        let o = &v["organizations"];
        assert_eq!(o["rows_in_table"], 2);
        assert_eq!(o["expected_rows"], 2);
        assert_eq!(o["field_mismatches"], 1);
        assert_eq!(o["mismatched_fields"], json!({"slug": 1}));
        assert_eq!(o["mismatches"], 1);
        let m = &v["memberships"];
        assert_eq!(m["rows_in_table"], 3);
        assert_eq!(m["expected_rows"], 2);
        assert_eq!(m["missing"], 1);
        assert_eq!(m["zombies"], 1);
        assert_eq!(m["unknown_rows"], 1);
        assert_eq!(m["mismatches"], 2);
        assert_eq!(mismatches(None, Some(&v)), 3);
    }
}
