//! Public transport (issue 18): transit operators' routes and stops, validators (merchant
//! terminals bound to a route or a gate's stop), and taps at validators (the fare tables
//! are `operator::fares`), which the ledger's writer prices (`domain::fares`): the answer says
//! what each ride the tap touched was held, charged or refunded, and why.

use actix_web::{web, HttpResponse};
use domain::fares::{Tap as FareTap, TapKind};
use domain::registry::MerchantCategory;
use ledger::domain::{Entry, EntryKind, Event, OfflineTransit, TransitTap};
use ledger::transit::{NewRouteRow, Route, Validator};
use ledger::LedgerError;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::auth::{BearerToken, Caller, IdempotencyHeader, Role};
use crate::error::ApiError;
use crate::merchant::{check_active, check_tap_key};
use crate::operator::log_action;
use crate::wire::{self, money, receipt};
use crate::{blocking, hot_reads, AppState};
use client::wire::{
    CardConcession, CardJourney, NewTransitTap, RideEntryView, RideFix, SyncedTap, TransitSync, TransitTapView,
};

/// The modes a route may have.
pub const MODES: [&str; 4] = ["bus", "brt", "ferry", "rail"];
/// Most stops on a route.
pub const STOPS_MAX: usize = 500;

/// Registers the transit routes.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/v1/transit/routes", web::post().to(create_route))
        .route("/v1/transit/routes", web::get().to(list_routes))
        .route("/v1/transit/validators", web::post().to(bind_validator))
        .route("/v1/transit/fares", web::post().to(crate::operator::fares::request_fare_table))
        .route("/v1/transit/fares", web::get().to(crate::operator::fares::list_fare_tables))
        .route("/v1/transit/taps", web::post().to(tap))
        .route("/v1/transit/rides/{id}/tap-off", web::post().to(fix_ride))
        .route("/v1/transit/sync", web::get().to(sync));
}

// ---- routes and validators ----

/// `POST /v1/transit/routes`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewRoute {
    /// The transit operator: a merchant of category `transit`.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub merchant_id: String,
    /// The route's public name.
    #[schema(min_length = 1, max_length = 200)]
    pub name: String,
    /// bus, brt, ferry or rail.
    pub mode: String,
    /// The stops' names in order (2 to 500); a stop is named by its position (0, 1, …).
    pub stops: Vec<String>,
}

/// A route.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteView {
    /// The route's id, as fare tables name it.
    pub id: String,
    /// The transit operator.
    pub merchant_id: String,
    /// The route's public name.
    pub name: String,
    /// bus, brt, ferry or rail.
    pub mode: String,
    /// The stops in order.
    pub stops: Vec<String>,
    /// When it was created (RFC 3339).
    pub created_at: String,
    /// The operator_action event that created it.
    pub event_id: i64,
}

fn route_view(r: &Route) -> RouteView {
    RouteView {
        id: r.id.to_string(),
        merchant_id: r.merchant_id.to_string(),
        name: r.name.clone(),
        mode: r.mode.clone(),
        stops: r.stop_names(),
        created_at: wire::time(r.created_at_us),
        event_id: r.event_id,
    }
}

/// Every route with its stops (public: riders and validators read them).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RouteList {
    /// Oldest first.
    pub routes: Vec<RouteView>,
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::unprocessable("invalid_field", detail)
}

/// Adds a route of a transit operator (operators).
#[utoipa::path(post, path = "/v1/transit/routes", tag = "transit", request_body = NewRoute, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = RouteView), (status = 422, body = crate::error::Problem)))]
pub async fn create_route(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewRoute>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let merchant_id = wire::id(&body.merchant_id).map_err(|_| invalid("merchant_id names nothing"))?;
    let name = wire::text("name", &body.name, 200)?;
    if !MODES.contains(&body.mode.as_str()) {
        return Err(invalid("mode must be bus, brt, ferry or rail"));
    }
    if !(2..=STOPS_MAX).contains(&body.stops.len()) {
        return Err(invalid(format!("a route has 2 to {STOPS_MAX} stops")));
    }
    let stops = body.stops.iter().map(|s| wire::text("stops", s, 200)).collect::<Result<Vec<_>, _>>()?;
    let st = state.clone();
    let merchant = blocking(move || st.merchant(merchant_id)).await?;
    if merchant.is_none_or(|m| m.category != MerchantCategory::Transit) {
        return Err(invalid("merchant_id must name a merchant of category transit"));
    }
    let details = json!({"merchant_id": merchant_id, "name": name, "mode": body.mode, "stops": stops});
    let rec = log_action(&state, &caller, &key, "create_route", details).await?;
    let st = state.clone();
    let mode = body.mode.clone();
    let route = blocking(move || {
        let now = st.ledger.now_us();
        let stops = serde_json::to_string(&stops).map_err(ApiError::internal)?;
        Ok(st.ledger.registry_transaction(|r| match r.route_by_event(rec.event.id)? {
            Some(route) => Ok(route),
            None => {
                let new = NewRouteRow { merchant_id, name: &name, mode: &mode, stops: &stops };
                r.insert_route(new, now, rec.event.id)
            }
        })?)
    })
    .await?;
    Ok(HttpResponse::Created().json(route_view(&route)))
}

/// Every route (no token: the network is public).
#[utoipa::path(get, path = "/v1/transit/routes", tag = "public", security(()), responses((status = 200, body = RouteList)))]
pub async fn list_routes(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let st = state.clone();
    let routes = blocking(move || Ok(st.ledger.registry(|r| r.routes())?)).await?;
    Ok(HttpResponse::Ok().json(RouteList { routes: routes.iter().map(route_view).collect() }))
}

/// `POST /v1/transit/validators`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewValidator {
    /// A merchant_terminal credential of the route's operator (made with `POST
    /// /v1/credentials`, with its public key for offline journals).
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub credential_id: String,
    /// The route.
    #[schema(pattern = "^[0-9]{1,19}$")]
    pub route_id: String,
    /// A station gate's stop (its position on the route); omitted: on a vehicle, which
    /// names the stop with each tap.
    pub stop: Option<i64>,
}

/// A validator's binding.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ValidatorView {
    /// The credential.
    pub credential_id: String,
    /// The route.
    pub route_id: String,
    /// A gate's stop.
    pub stop: Option<i64>,
    /// The operator_action event that bound it.
    pub event_id: i64,
}

/// Binds a merchant terminal of a transit operator to one of its routes, or to a stop of
/// it for a station gate (operators). A credential is bound once.
#[utoipa::path(post, path = "/v1/transit/validators", tag = "transit", request_body = NewValidator, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = ValidatorView), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn bind_validator(
    state: web::Data<AppState>,
    caller: Caller,
    key: IdempotencyHeader,
    body: web::Json<NewValidator>,
) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::Operator])?;
    let credential_id = wire::id(&body.credential_id).map_err(|_| invalid("credential_id names nothing"))?;
    let route_id = wire::id(&body.route_id).map_err(|_| invalid("route_id names nothing"))?;
    let stop = body.stop;
    let st = state.clone();
    let (credential, route, bound) = blocking(move || {
        Ok(st.ledger.registry(|r| {
            let route = r.route(route_id)?;
            Ok((r.credential(credential_id)?, route, r.validator(credential_id)?))
        })?)
    })
    .await?;
    let route = route.ok_or_else(|| invalid("route_id names no route"))?;
    let fits = credential.as_ref().is_some_and(|c| {
        c.role == Role::MerchantTerminal && c.merchant_id == Some(route.merchant_id) && c.revoked_at_us.is_none()
    });
    if !fits {
        return Err(invalid("credential_id must name a live merchant_terminal credential of the route's operator"));
    }
    if stop.is_some_and(|s| !(0..route.stop_names().len() as i64).contains(&s)) {
        return Err(invalid("stop must be a position on the route"));
    }
    let details = json!({"credential_id": credential_id, "route_id": route_id, "stop": stop});
    if let Some(v) = bound {
        if (v.route_id, v.stop) != (route_id, stop) {
            return Err(ApiError::conflict("validator_bound", "this credential is bound to another route or stop"));
        }
    }
    let rec = log_action(&state, &caller, &key, "bind_validator", details).await?;
    let st = state.clone();
    let v = blocking(move || {
        Ok(st.ledger.registry_transaction(|r| match r.validator(credential_id)? {
            Some(v) => Ok(v),
            None => {
                let v = Validator { credential_id, route_id, stop, event_id: rec.event.id };
                r.insert_validator(&v)?;
                Ok(v)
            }
        })?)
    })
    .await?;
    Ok(HttpResponse::Created().json(ValidatorView {
        credential_id: v.credential_id.to_string(),
        route_id: v.route_id.to_string(),
        stop: v.stop,
        event_id: v.event_id,
    }))
}

// ---- taps ----

fn entry_view(e: &Entry, ride: i64) -> RideEntryView {
    RideEntryView {
        entry_seq: e.seq.to_string(),
        kind: match e.kind {
            EntryKind::Hold => "hold",
            EntryKind::Capture => "capture",
            EntryKind::Refund => "refund",
            EntryKind::Void => "void",
            _ => "payment",
        }
        .into(),
        ride_id: ride.to_string(),
        amount: money(e.amount_minor, e.currency),
        rules: e.references.memo.clone(),
        receipt: receipt(e),
    }
}

/// Who tapped: the card and its tap's counter (none for an operator's fix), the validator
/// (or the fixing terminal), the request's key.
#[derive(Debug)]
pub struct TapBy<'a> {
    /// The card.
    pub card: &'a ledger::registry::Card,
    /// The tap's read counter.
    pub counter: Option<i64>,
    /// The validator's credential.
    pub credential: i64,
    /// The idempotency key.
    pub key: ledger::domain::IdempotencyKey,
}

/// Where a tap comes from.
#[derive(Debug, Clone, Copy)]
pub enum TapSource {
    /// A validator online: priced at the writer's time.
    Online,
    /// A validator's journal record: its terms and fare.
    Offline(OfflineTransit),
    /// The ride's operator setting the missing tap-off of ride (event) `ride`.
    Fix {
        /// The ride.
        ride: i64,
    },
}

/// A `transit_tap` event: its leaf names the route, stop, direction, validator and UID, and
/// an uploaded tap's record number, time, sync and fare, or a fix's ride and time (what
/// `kartu audit verify` holds the tap's row to).
pub fn transit_event(by: TapBy<'_>, tap: FareTap, categories: Vec<String>, source: TapSource) -> Event {
    let mut payload = json!({"route_id": tap.route, "stop": tap.stop,
        "direction": if tap.kind == TapKind::On { "on" } else { "off" },
        "validator": by.credential, "uid": by.card.uid.to_string()});
    let extra = match source {
        TapSource::Online => None,
        TapSource::Offline(o) => Some(json!({"offline_seq": o.terms.record_seq,
            "terminal_time_us": o.terms.record_time_us, "sync_id": o.terms.sync_id, "fare_minor": o.fare_minor})),
        TapSource::Fix { ride } => Some(json!({"fix_of": ride, "tap_time_us": tap.time_us})),
    };
    if let (Some(p), Some(serde_json::Value::Object(more))) = (payload.as_object_mut(), extra) {
        p.extend(more);
    }
    Event {
        kind: "transit_tap".into(),
        scope: Some(format!("route:{}", tap.route)),
        card_id: Some(by.card.id),
        card_read_counter: by.counter,
        queue_key: None,
        idempotency_key: Some(by.key),
        payload: payload.to_string(),
        access: None,
        transit: Some(TransitTap {
            wallet: by.card.account_id,
            categories,
            tap: Some(tap),
            credential_id: by.credential,
            offline: match source {
                TapSource::Offline(o) => Some(o),
                _ => None,
            },
            fix: matches!(source, TapSource::Fix { .. }),
        }),
    }
}

/// What a validator needs to know of itself and the card.
struct TapContext {
    caller: Caller,
    validator: Validator,
    stop: i64,
    card: ledger::registry::Card,
    categories: Vec<String>,
    counter: i64,
}

/// The validator, its stop, and the tapped card (active, with a current key).
fn tap_context(st: &AppState, token: BearerToken, body: &NewTransitTap) -> Result<TapContext, ApiError> {
    let caller = Caller::resolve(st, token)?;
    caller.require(&[Role::MerchantTerminal])?;
    let validator = st
        .ledger
        .registry(|r| r.validator(caller.credential.id))?
        .ok_or_else(|| ApiError::forbidden("this terminal is not a transit validator (POST /v1/transit/validators)"))?;
    let route = st
        .ledger
        .registry(|r| r.route(validator.route_id))?
        .ok_or_else(|| ApiError::internal("a validator's route is gone"))?;
    let stop = match (validator.stop, body.stop) {
        (Some(gate), None) => gate,
        (Some(gate), Some(s)) if s == gate => gate,
        (Some(_), Some(_)) => return Err(invalid("a gate's stop is its own")),
        (None, Some(s)) if (0..route.stop_names().len() as i64).contains(&s) => s,
        (None, _) => return Err(invalid("a validator on a vehicle names the stop (a position on the route)")),
    };
    let tap = st.taps.verify(&body.tap)?;
    let card = st
        .ledger
        .registry(|r| r.card_by_uid(tap.uid))?
        .ok_or_else(|| ApiError::unprocessable("card_unknown", "this card is not registered"))?;
    check_active(&card)?;
    check_tap_key(&tap, &card)?;
    let holder = st.ledger.registry(|r| r.holder(card.holder_id))?;
    let categories = holder.map(|h| h.categories.names()).unwrap_or_default();
    Ok(TapContext { caller, validator, stop, card, categories, counter: tap.counter_value() })
}

/// A card tapped at a validator (a merchant terminal bound to a route): the writer prices
/// the card's rides again and the answer lists what it held, charged or refunded. An
/// online boarding the card cannot pay for is refused (`insufficient_funds`).
#[utoipa::path(post, path = "/v1/transit/taps", tag = "transit", request_body = NewTransitTap, params(("Idempotency-Key" = String, Header)),
    responses((status = 201, body = TransitTapView), (status = 403, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn tap(
    state: web::Data<AppState>,
    token: BearerToken,
    idem: IdempotencyHeader,
    body: web::Json<NewTransitTap>,
) -> Result<HttpResponse, ApiError> {
    let kind = match body.direction.as_str() {
        "on" => TapKind::On,
        "off" => TapKind::Off,
        _ => return Err(invalid("direction must be on or off")),
    };
    let st = state.clone();
    let body = body.into_inner();
    let ctx = hot_reads(&state, move || tap_context(&st, token, &body)).await?;
    let route = ctx.validator.route_id;
    let key = ledger::domain::IdempotencyKey::parse(&ctx.caller.key(&idem.0)).map_err(|_| ApiError::internal("key"))?;
    let tap = FareTap { time_us: state.ledger.now_us(), route, stop: ctx.stop, kind };
    let who = TapBy { card: &ctx.card, counter: Some(ctx.counter), credential: ctx.caller.credential.id, key };
    let event = transit_event(who, tap, ctx.categories.clone(), TapSource::Online);
    let recorded = state.ledger.record(event).await?;
    let view = tap_view(&state, &recorded.event, &ctx.card, tap, "open").await?;
    Ok(HttpResponse::Created().json(view))
}

/// The answer to a recorded tap: what it changed, ride by ride, and the card's balance.
async fn tap_view(
    state: &web::Data<AppState>,
    event: &ledger::domain::EventRecord,
    card: &ledger::registry::Card,
    tap: FareTap,
    decision: &str,
) -> Result<TransitTapView, ApiError> {
    let (st, event_id, wallet) = (state.clone(), event.id, card.account_id);
    let (entries, balance) = blocking(move || {
        let links = st.ledger.registry(|r| r.entries_of_tap(event_id))?;
        let mut entries = Vec::with_capacity(links.len());
        for l in links {
            let e =
                st.ledger.entry(l.entry_seq)?.ok_or_else(|| LedgerError::Invariant("a ride's entry is gone".into()))?;
            entries.push(entry_view(&e, l.ride_event_id));
        }
        Ok((entries, st.ledger.balance(wallet)?))
    })
    .await?;
    Ok(TransitTapView {
        decision: decision.into(),
        event_id,
        time: wire::time(event.time_us),
        card_id: card.id.to_string(),
        direction: if tap.kind == TapKind::On { "on" } else { "off" }.into(),
        route_id: tap.route.to_string(),
        stop: tap.stop,
        entries,
        balance: money(balance, state.settings.currency),
    })
}

// ---- a ride fixed by its operator ----

/// A ride without its tap-off, the card and the holder's categories, when the caller's
/// merchant runs its route and `stop` is on it.
fn fix_context(
    st: &AppState,
    merchant: i64,
    ride: i64,
    stop: i64,
) -> Result<(ledger::registry::Card, FareTap, Vec<String>), ApiError> {
    let no_ride = || ApiError::not_found("not_found", "no ride with this id (a ride is its boarding tap's event)");
    let (card_id, on) = st.ledger.registry(|r| r.tap_of_event(ride))?.ok_or_else(no_ride)?;
    if on.kind != TapKind::On {
        return Err(no_ride());
    }
    let route = st.ledger.registry(|r| r.route(on.route))?.ok_or_else(|| ApiError::internal("a ride's route"))?;
    if route.merchant_id != merchant {
        return Err(ApiError::forbidden("this ride is on another operator's route"));
    }
    if !(0..route.stop_names().len() as i64).contains(&stop) {
        return Err(invalid("stop must be a position on the ride's route"));
    }
    let schedule = st.ledger.registry(|r| r.fare_schedule())?;
    let by_distance = schedule.at(on.time_us).and_then(|t| t.routes.get(&on.route));
    if !matches!(by_distance, Some(domain::fares::RouteFare::Distance { .. })) {
        return Err(ApiError::unprocessable("ride_not_by_distance", "a flat-fare ride has no tap-off to set"));
    }
    let after = st.ledger.registry(|r| r.card_taps(card_id, on.time_us))?;
    let next = after.iter().skip_while(|t| t.0 != ride).nth(1);
    if next.is_some_and(|t| t.2.kind == TapKind::Off) {
        return Err(ApiError::unprocessable("ride_tapped_off", "this ride was tapped off: its fare is by its stops"));
    }
    let card = st.ledger.registry(|r| r.card(card_id))?.ok_or_else(|| ApiError::internal("a ride's card"))?;
    let holder = st.ledger.registry(|r| r.holder(card.holder_id))?;
    Ok((card, on, holder.map(|h| h.categories.names()).unwrap_or_default()))
}

/// A missing tap-off set by the ride's operator: the rider alighted at `stop`. The writer
/// prices the ride by its stops instead of the maximum and refunds the difference (a ride
/// still open has its hold captured for the fare), like a late tap-off. Only a terminal
/// of the operator of the ride's route may: a fix can only lower what its own ride earns
/// (a rider's journey and caps never cost more), so it needs no second person.
#[utoipa::path(post, path = "/v1/transit/rides/{id}/tap-off", tag = "transit", request_body = RideFix,
    params(("id" = String, Path, description = "The ride: its boarding tap's event id"), ("Idempotency-Key" = String, Header)),
    responses((status = 201, body = TransitTapView), (status = 403, body = crate::error::Problem), (status = 404, body = crate::error::Problem), (status = 409, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn fix_ride(
    state: web::Data<AppState>,
    caller: Caller,
    idem: IdempotencyHeader,
    path: web::Path<String>,
    body: web::Json<RideFix>,
) -> Result<HttpResponse, ApiError> {
    let merchant = caller.merchant_id()?;
    let ride: i64 = path.parse().map_err(|_| ApiError::not_found("not_found", "no ride with this id"))?;
    let (st, stop) = (state.clone(), body.stop);
    let (card, on, categories) = blocking(move || fix_context(&st, merchant, ride, stop)).await?;
    let key = ledger::domain::IdempotencyKey::parse(&caller.key(&idem.0)).map_err(|_| ApiError::internal("key"))?;
    // Just after its boarding: the tap-off the ride lacked (its time changes no fare).
    let tap = FareTap { time_us: on.time_us + 1, route: on.route, stop, kind: TapKind::Off };
    let by = TapBy { card: &card, counter: None, credential: caller.credential.id, key };
    // Priced at its own time; what it shifts beyond the wallet is a debt.
    let event = transit_event(by, tap, categories, TapSource::Fix { ride });
    let recorded = state.ledger.record(event).await?;
    Ok(HttpResponse::Created().json(tap_view(&state, &recorded.event, &card, tap, "fixed").await?))
}

// ---- offline validators ----

/// Where an offline tap was: the validator's binding and the route's stops, the holder's
/// categories, and the card's last counter at the validator's sync.
#[derive(Debug)]
pub struct OfflinePlace {
    validator: Validator,
    stops: usize,
    categories: Vec<String>,
    floor: Option<i64>,
}

impl OfflinePlace {
    /// The tap a transit record says (its direction and stop, at the record's time), with
    /// the holder's categories and the counter floor; none when the stop is not the
    /// validator's (a gate's own, or a position on a vehicle's route).
    pub fn tap(&self, rec: &offline::Record) -> Option<(FareTap, Vec<String>, Option<i64>)> {
        let (on, stop) = offline::transit_tap(rec.decision.as_deref())?;
        let fits = match self.validator.stop {
            Some(gate) => stop == gate,
            None => (0..self.stops as i64).contains(&stop),
        };
        let kind = if on { TapKind::On } else { TapKind::Off };
        let tap = FareTap { time_us: rec.time_us, route: self.validator.route_id, stop, kind };
        fits.then(|| (tap, self.categories.clone(), self.floor))
    }
}

/// What an offline transit record of this validator needs (blocking); none when the
/// credential is no validator.
pub fn offline_tap_place(
    st: &AppState,
    credential: i64,
    card: &ledger::registry::Card,
    sync_time_us: i64,
) -> Result<Option<OfflinePlace>, ApiError> {
    let Some(validator) = st.ledger.registry(|r| r.validator(credential))? else { return Ok(None) };
    let stops = st.ledger.registry(|r| r.route(validator.route_id))?.map_or(0, |r| r.stop_names().len());
    let holder = st.ledger.registry(|r| r.holder(card.holder_id))?;
    let categories = holder.map(|h| h.categories.names()).unwrap_or_default();
    let floor = st.ledger.card_counter_at(card.id, sync_time_us)?;
    Ok(Some(OfflinePlace { validator, stops, categories, floor }))
}

/// How far back a validator's sync reaches: the city's day so far (for the daily cap) and,
/// before it, the longest transfer window of any fare table (a journey begun before
/// midnight). The validator needs no more to price as the server will; the server
/// reprices the week's cap when the taps are uploaded. Without a table: nothing.
pub fn sync_since(tables: &[ledger::transit::FareTableRow], now_us: i64) -> i64 {
    let Some(newest) = tables.iter().max_by_key(|t| t.effective_from_us) else { return now_us };
    let tz: chrono_tz::Tz = newest.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let window_us = tables
        .iter()
        .filter_map(|t| t.table().ok()?.transfer.map(|x| x.window_minutes * 60_000_000))
        .max()
        .unwrap_or(0);
    let midnight = chrono::TimeZone::timestamp_micros(&tz, now_us)
        .single()
        .and_then(|local| local.date_naive().and_hms_opt(0, 0, 0))
        .and_then(|m| chrono::TimeZone::from_local_datetime(&tz, &m).earliest())
        .map_or(now_us - 86_400_000_000, |t| t.timestamp_micros());
    midnight - window_us
}

/// What a validator syncs to decide offline (its credential must be bound to a route).
#[utoipa::path(get, path = "/v1/transit/sync", tag = "transit",
    responses((status = 200, body = TransitSync), (status = 403, body = crate::error::Problem)))]
pub async fn sync(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    caller.require(&[Role::MerchantTerminal])?;
    let st = state.clone();
    let cred = caller.credential.id;
    let view = blocking(move || {
        let v = st.ledger.registry(|r| r.validator(cred))?.ok_or_else(|| {
            ApiError::forbidden("this terminal is not a transit validator (POST /v1/transit/validators)")
        })?;
        let now = st.ledger.now_us();
        st.ledger.registry(|r| sync_view(r, &v, now)).map_err(ApiError::from)
    })
    .await?;
    Ok(HttpResponse::Ok().json(view))
}

/// The sync's content, read in one registry pass.
fn sync_view(r: &mut ledger::registry::Registry<'_>, v: &Validator, now: i64) -> Result<TransitSync, LedgerError> {
    let stops = r.route(v.route_id)?.map(|x| x.stop_names()).unwrap_or_default();
    let tables = r.fare_tables()?;
    let since = sync_since(&tables, now);
    let conceded: std::collections::BTreeSet<String> =
        tables.iter().filter_map(|t| t.table().ok()).flat_map(|t| t.concessions.into_keys()).collect();
    let holders: std::collections::HashMap<i64, Vec<String>> = r
        .all_holders()?
        .into_iter()
        .map(|h| (h.id, h.categories.names().into_iter().filter(|c| conceded.contains(c)).collect::<Vec<_>>()))
        .filter(|(_, c)| !c.is_empty())
        .collect();
    let cards = r.all_cards()?;
    let uids: std::collections::HashMap<i64, String> = cards.iter().map(|c| (c.id, c.uid.to_string())).collect();
    let concessions = cards
        .iter()
        .filter_map(|c| {
            holders.get(&c.holder_id).map(|cats| CardConcession { uid: c.uid.to_string(), categories: cats.clone() })
        })
        .collect();
    let mut journeys: std::collections::BTreeMap<String, Vec<SyncedTap>> = std::collections::BTreeMap::new();
    for (card, tap) in r.taps_since(since)? {
        let Some(uid) = uids.get(&card) else { continue };
        journeys.entry(uid.clone()).or_default().push(SyncedTap {
            time_us: tap.time_us,
            route_id: tap.route.to_string(),
            stop: tap.stop,
            direction: if tap.kind == TapKind::On { "on" } else { "off" }.into(),
        });
    }
    Ok(TransitSync {
        route_id: v.route_id.to_string(),
        stop: v.stop,
        stops,
        fare_tables: tables.iter().map(crate::operator::fares::fare_view).collect(),
        concessions,
        journeys: journeys.into_iter().map(|(uid, taps)| CardJourney { uid, taps }).collect(),
    })
}
