//! The city's transit fare tables (issue 18): a new table is a request a second operator
//! approves (`approvals`), and takes effect no earlier than its approval, so no one prices
//! rides already taken; every table is public.

use actix_web::{web, HttpResponse};
use domain::fares::{FareTable, RouteFare};
use domain::registry::Category;
use ledger::registry::Approval;
use ledger::transit::{FareTableRow, Route};
use serde::Deserialize;
use serde_json::json;

use super::approvals::{accepted, approval_view, ApprovalView};
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire;
use crate::{blocking, AppState};
use client::wire::{FareTableList, FareTableView};

/// The approval kind of a fare table.
pub const FARE_TABLE: &str = "fare_table";

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_field", detail)
}

/// `POST /v1/transit/fares`: a new fare table, for a second operator's approval.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewFareTable {
    /// When it takes effect (RFC 3339); never before its approval (omitted: at approval).
    pub effective_from: Option<String>,
    /// The city's time zone for days and weeks (IANA, e.g. Asia/Jakarta).
    pub time_zone: String,
    /// `routes` (by route id: `{"kind": "flat", "fare_minor"}` or `{"kind": "distance",
    /// "base_minor", "per_stop_minor", "max_minor", "time_limit_minutes"}`), `transfer`
    /// (`window_minutes`, `integrated_fare_minor`) or null, `daily_cap_minor`,
    /// `weekly_cap_minor`, `concessions` (holder category → percent off); minor units.
    #[schema(value_type = Object)]
    pub table: FareTable,
}

/// The view of a fare table row.
pub fn fare_view(f: &FareTableRow) -> FareTableView {
    FareTableView {
        id: f.id.to_string(),
        effective_from: wire::time(f.effective_from_us),
        time_zone: f.time_zone.clone(),
        table: serde_json::from_str(&f.body).unwrap_or_default(),
        event_id: f.event_id,
    }
}

/// Checks a fare table against the routes there are: every fare of a known route, amounts
/// within the city's limit, a distance fare's base at most its maximum, percentages of
/// holder categories at most 100.
pub fn check_table(table: &FareTable, routes: &[Route], amount_max: i64) -> Result<(), ApiError> {
    let amount = |v: i64, what: &str| {
        if (0..=amount_max).contains(&v) {
            Ok(())
        } else {
            Err(invalid(format!("{what} must be 0 to {amount_max} minor units")))
        }
    };
    for (route, fare) in &table.routes {
        if !routes.iter().any(|r| r.id == *route) {
            return Err(invalid(format!("the table prices route {route}, which does not exist")));
        }
        match fare {
            RouteFare::Flat { fare_minor } => amount(*fare_minor, "a flat fare")?,
            RouteFare::Distance { base_minor, per_stop_minor, max_minor, time_limit_minutes } => {
                amount(*base_minor, "base_minor")?;
                amount(*per_stop_minor, "per_stop_minor")?;
                amount(*max_minor, "max_minor")?;
                if base_minor > max_minor || !(1..=24 * 60).contains(time_limit_minutes) {
                    return Err(invalid(
                        "a distance fare's base is at most its maximum, its time limit 1 to 1440 minutes",
                    ));
                }
            }
        }
    }
    if let Some(t) = &table.transfer {
        amount(t.integrated_fare_minor, "integrated_fare_minor")?;
        if !(1..=24 * 60).contains(&t.window_minutes) {
            return Err(invalid("the transfer window is 1 to 1440 minutes"));
        }
    }
    for cap in [table.daily_cap_minor, table.weekly_cap_minor].into_iter().flatten() {
        amount(cap, "a cap")?;
    }
    for (category, percent) in &table.concessions {
        if Category::parse(category).is_err() || *percent > 100 {
            return Err(invalid("concessions map holder categories to a percent off (0 to 100)"));
        }
    }
    Ok(())
}

/// Asks for a new fare table; a second operator's approval puts it in force (operators).
#[utoipa::path(post, path = "/v1/transit/fares", tag = "transit", request_body = NewFareTable, params(("Idempotency-Key" = String, Header)),
    responses((status = 202, body = ApprovalView), (status = 422, body = crate::error::Problem)))]
pub async fn request_fare_table(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewFareTable>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let table = body.table.clone();
    if domain::access::timezone(&body.time_zone).is_err() {
        return Err(invalid("time_zone must be an IANA time zone, e.g. Asia/Jakarta"));
    }
    let effective_from = body.effective_from.as_deref().map(wire::parse_time).transpose()?;
    let st = state.clone();
    let routes = blocking(move || Ok(st.ledger.registry(|r| r.routes())?)).await?;
    check_table(&table, &routes, state.settings.amount_max_minor)?;
    let payload = json!({"effective_from_us": effective_from, "time_zone": body.time_zone, "table": table});
    let a = super::approvals::request(&state, &caller, &key, FARE_TABLE, payload).await?;
    Ok(accepted(&a))
}

/// Every fare table (no token: riders may read the fares and the rules).
#[utoipa::path(get, path = "/v1/transit/fares", tag = "public", security(()), responses((status = 200, body = FareTableList)))]
pub async fn list_fare_tables(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let rows = blocking(move || Ok(st.ledger.registry(|r| r.fare_tables())?)).await?;
    Ok(HttpResponse::Ok().json(FareTableList { fare_tables: rows.iter().map(fare_view).collect() }))
}

/// Carries out an approved fare table: recorded under the decision's event, in force from
/// its requested start or from the decision, whichever is later (a table never reprices
/// rides taken before it was approved). The decision's time is its leaf's (`decided_us`,
/// the event's time, the same on a retry), so `kartu audit verify` recomputes the start
/// exactly from the log.
pub async fn put_in_force(
    state: &web::Data<AppState>,
    a: Approval,
    d: (i64, String, i64),
    decided_us: i64,
) -> Result<ApprovalView, ApiError> {
    let v: serde_json::Value = serde_json::from_str(&a.payload).map_err(ApiError::internal)?;
    let (tz, table) = match (v["time_zone"].as_str(), v.get("table")) {
        (Some(tz), Some(t)) => (tz.to_owned(), t.to_string()),
        _ => return Err(ApiError::internal("fare table request without time zone or table")),
    };
    let requested = v["effective_from_us"].as_i64();
    let st = state.clone();
    let approval = blocking(move || {
        let now = st.ledger.now_us();
        st.ledger.registry_transaction(|r| {
            match super::approvals::decide_in(r, &a, "approved", &d, now)? {
                Err(e) => return Ok(Err(e)),
                Ok(false) => {}
                Ok(true) => {
                    let from = requested.unwrap_or(decided_us).max(decided_us);
                    let row = r.insert_fare_table(from, &tz, &table, now, d.2)?;
                    let result = json!({"fare_table_id": row.id.to_string(), "effective_from": wire::time(from)});
                    r.set_approval_result(a.id, &result.to_string())?;
                }
            }
            Ok(r.approval(a.id)?.ok_or_else(|| ApiError::internal("approval vanished")))
        })?
    })
    .await?;
    Ok(approval_view(&approval))
}
