//! Service points (clinics, libraries, city offices) and their access policies.

use actix_web::{web, HttpResponse};
use domain::access::Policy;
use domain::registry::ServiceKind;
use ledger::registry::ServicePoint;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::log_action;
use crate::auth::{Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::wire;
use crate::{blocking, AppState};

/// `POST /v1/service-points`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewServicePoint {
    /// The service point's name, shown to citizens at the gate.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// clinic, library, city_office, other.
    #[schema(pattern = "^(clinic|library|city_office|other)$")]
    pub service: String,
    /// Who may enter and when.
    pub policy: Policy,
}

/// A service point as returned.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ServicePointView {
    /// The service point's id, for its gate's credential.
    pub id: String,
    /// The service point's name, shown to citizens at the gate.
    pub name: String,
    /// The public service it belongs to (clinic, library, ...), as the city's books total it.
    pub service: String,
    /// Who may enter, and when.
    pub policy: Policy,
}

fn service_point_view(s: &ServicePoint) -> Result<ServicePointView, ApiError> {
    Ok(ServicePointView {
        id: s.id.to_string(),
        name: s.name.clone(),
        service: s.service.clone(),
        policy: serde_json::from_str(&s.policy).map_err(ApiError::internal)?,
    })
}

/// Registers a service point with its access policy.
#[utoipa::path(post, path = "/v1/service-points", tag = "operator", request_body = NewServicePoint, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = ServicePointView), (status = 422, body = crate::error::Problem)))]
pub async fn create_service_point(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewServicePoint>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let name = wire::text("name", &body.name, 200)?;
    if ServiceKind::parse(&body.service).is_err() {
        return Err(ApiError::unprocessable(
            "invalid_field",
            format!("service must be one of {}", ServiceKind::NAMES.join(", ")),
        ));
    }
    body.policy.rules().map_err(|e| ApiError::unprocessable("invalid_field", e.to_string()))?;
    let policy = serde_json::to_string(&body.policy).map_err(ApiError::internal)?;
    let service = body.service.clone();
    let details = json!({"name": name, "service": service, "policy": body.policy});
    let rec = log_action(&state, &caller, &key, "create_service_point", details).await?;
    let st = state.clone();
    let s = blocking(move || {
        let now = st.ledger.now_us();
        Ok(st.ledger.registry_transaction(|r| match r.service_point_by_event(rec.event.id)? {
            Some(s) => Ok(s),
            None => r.insert_service_point(
                ledger::registry::NewServicePointRow { name: &name, service: &service, policy: &policy },
                now,
                rec.event.id,
            ),
        })?)
    })
    .await?;
    Ok(HttpResponse::Created().json(service_point_view(&s)?))
}
