//! The organization and membership routes (reference §i): their query parameters, checked as
//! strictly as the user list's, and their `{"data": [...], "total_count": n}` answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::organizations::{
    Listing, MembershipScope, OrganizationField, OrganizationView, parse_order_by,
};
use super::{Invalid, Params, Shared, json_response, not_found, param_error, parse_page};

/// Membership lists order by creation only (reference §i); Clerk's other orders for members
/// (names, email address, …) are not emulated.
const MEMBERSHIP_FIELDS: &[(&str, ())] = &[("created_at", ())];

const INCLUDE_COUNTS: &str = "include_members_count";
const INCLUDE_ELEVATED: &str = "include_missing_member_with_elevated_permissions";

impl Shared {
    /// `GET /v1/organizations`.
    pub(super) fn list_organizations(&self, query: &str) -> Response {
        let parsed = Params::parse(
            query,
            &[
                "limit",
                "offset",
                "order_by",
                INCLUDE_COUNTS,
                INCLUDE_ELEVATED,
            ],
        )
        .and_then(|params| {
            let order = order_by(
                &params,
                OrganizationField::ALL,
                (OrganizationField::CreatedAt, true),
            )?;
            Ok((parse_page(&params)?, order, view(&params)?))
        });
        let (page, order, view) = match parsed {
            Ok(parsed) => parsed,
            Err(invalid) => return invalid.into_response(),
        };
        let listing = self
            .lock()
            .organizations
            .list_organizations(order, page, view);
        listing_response(listing)
    }

    /// `GET /v1/organizations/{organization_id}`, where Clerk also takes the slug.
    pub(super) fn get_organization(&self, id_or_slug: &str, query: &str) -> Response {
        let view = match Params::parse(query, &[INCLUDE_COUNTS, INCLUDE_ELEVATED])
            .and_then(|params| view(&params))
        {
            Ok(view) => view,
            Err(invalid) => return invalid.into_response(),
        };
        let organization = {
            let instance = self.lock();
            let store = &instance.organizations;
            store
                .find_organization(id_or_slug)
                .and_then(|id| store.organization(id, view))
        };
        match organization {
            Some(organization) => json_response(StatusCode::OK, &organization),
            None => not_found(),
        }
    }

    /// The three membership lists; a list of an organization the instance does not have is a
    /// 404, a list of a user without memberships is empty.
    pub(super) fn list_memberships(&self, scope: MembershipScope<'_>, query: &str) -> Response {
        let parsed = Params::parse(query, &["limit", "offset", "order_by"]).and_then(|params| {
            let ((), descending) = order_by(&params, MEMBERSHIP_FIELDS, ((), true))?;
            Ok((parse_page(&params)?, descending))
        });
        let (page, descending) = match parsed {
            Ok(parsed) => parsed,
            Err(invalid) => return invalid.into_response(),
        };
        let listing = {
            let instance = self.lock();
            let store = &instance.organizations;
            if let MembershipScope::Organization(id) = scope
                && !store.contains_organization(id)
            {
                return not_found();
            }
            store.list_memberships(scope, descending, page)
        };
        listing_response(listing)
    }
}

/// Serialized outside the lock: building a page's JSON is the expensive part of a request.
fn listing_response(listing: Listing) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"data": listing.data, "total_count": listing.total_count}),
    )
}

fn order_by<F: Copy>(
    params: &Params,
    fields: &[(&str, F)],
    default: (F, bool),
) -> Result<(F, bool), Invalid> {
    let Some(text) = params.first("order_by") else {
        return Ok(default);
    };
    parse_order_by(text, fields).ok_or_else(|| {
        let names: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
        param_error(
            "form_param_value_invalid",
            "order_by",
            &format!(
                "order_by {text:?} is not one of {} with an optional + or - (the Clerk emulator \
                 orders this list by nothing else)",
                names.join(", ")
            ),
        )
    })
}

fn view(params: &Params) -> Result<OrganizationView, Invalid> {
    Ok(OrganizationView {
        counts: flag(params, INCLUDE_COUNTS)?,
        elevated: flag(params, INCLUDE_ELEVATED)?,
    })
}

fn flag(params: &Params, name: &str) -> Result<bool, Invalid> {
    match params.first(name) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(param_error(
            "form_param_format_invalid",
            name,
            &format!("{name} must be true or false"),
        )),
    }
}
