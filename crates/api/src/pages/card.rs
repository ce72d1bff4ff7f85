//! `/t?picc_data=…&cmac=…`: the page a phone opens when a citizen holds the card to it.
//! The tap is verified like any other and spent: it becomes a `balance_inquiry` event (a
//! leaf) under the writer's counter check, so the same link shows nothing a second time
//! and a link copied off the phone is worth nothing. The page shows the balance, the status
//! and the last movements, with the holder's name masked; no NIK, no UID. A blocked or
//! replaced card says so and where to go, and shows no data.

use std::collections::HashMap;

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use domain::registry::CardStatus;
use ledger::domain::{AccountId, Entry, Event};
use ledger::registry::Card;
use maud::{html, Markup};
use serde::Deserialize;

use super::{city_time, mask_name, notice, rupiah, Lang, Page, Text};
use crate::error::ApiError;
use crate::wire::Tap;
use crate::{blocking, AppState};

/// Movements the page lists.
const MOVEMENTS: i64 = 10;

#[derive(Debug, Deserialize)]
struct TapQuery {
    picc_data: Option<String>,
    cmac: Option<String>,
}

/// Why the page shows no card data.
enum Refused {
    Used,
    Invalid,
    Unknown,
    Blocked,
    Replaced,
    Outdated,
    Unavailable,
}

/// My card (`GET /t`).
pub async fn card_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (lang, chosen) = Lang::of(&req);
    let t = lang.text();
    let page = Page { lang, chosen, title: t.card_title, here: "/t".into(), script: false };
    let q = web::Query::<TapQuery>::from_query(req.query_string()).ok();
    let Some((picc_data, cmac)) = q.and_then(|q| q.0.picc_data.zip(q.0.cmac)) else {
        return page.respond(StatusCode::OK, notice("info", t.card_hold.0, t.card_hold.1), true);
    };
    match show(&state, Tap { picc_data, cmac }, t).await {
        Ok(main) => page.respond(StatusCode::OK, main, true),
        Err(refused) => {
            let (status, (heading, body)) = match refused {
                Refused::Used => (StatusCode::CONFLICT, t.card_used),
                Refused::Invalid => (StatusCode::UNPROCESSABLE_ENTITY, t.card_invalid),
                Refused::Unknown => (StatusCode::UNPROCESSABLE_ENTITY, t.card_unknown),
                Refused::Blocked => (StatusCode::FORBIDDEN, t.card_blocked),
                Refused::Replaced => (StatusCode::FORBIDDEN, t.card_replaced),
                Refused::Outdated => (StatusCode::UNPROCESSABLE_ENTITY, t.card_outdated),
                Refused::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, t.unavailable),
            };
            page.respond(status, notice("bad", heading, body), true)
        }
    }
}

/// What the card holds, after its tap was verified and spent.
struct CardView {
    masked_name: String,
    balance: i64,
    movements: Vec<Entry>,
    names: HashMap<AccountId, String>,
    wallet: AccountId,
    /// Each transit ride's rules as its latest entry names them (a hold's "no tap-off" is
    /// superseded by the capture's "5 stops" once the rider taps off).
    ride_rules: HashMap<i64, String>,
}

async fn show(state: &web::Data<AppState>, tap: Tap, t: &Text) -> Result<Markup, Refused> {
    let verified = state.taps.verify(&tap).map_err(|_| Refused::Invalid)?;
    let st = state.clone();
    let uid = verified.uid;
    // The card and its last accepted counter in one trip to the database.
    let (card, last) = blocking(move || {
        let Some(card) = st.ledger.registry(|r| r.card_by_uid(uid))? else { return Ok(None) };
        let last = st.ledger.card_last_counter(card.id)?;
        Ok(Some((card, last)))
    })
    .await
    .map_err(|_| Refused::Unavailable)?
    .ok_or(Refused::Unknown)?;
    match card.status {
        CardStatus::Active => {}
        CardStatus::Blocked => return Err(Refused::Blocked),
        CardStatus::Replaced => return Err(Refused::Replaced),
    }
    crate::merchant::check_tap_key(&verified, &card).map_err(|_| Refused::Outdated)?;
    // A link opened again (a reload, a copy) is refused here without asking the writer, so
    // that a citizen's reload is not counted as a suspected clone; the writer's own check
    // below decides every tap that gets past this one.
    let counter = verified.counter_value();
    if last.is_some_and(|l| counter <= l) {
        return Err(Refused::Used);
    }
    let event = Event {
        kind: "balance_inquiry".into(),
        scope: Some("web:card_page".into()),
        card_id: Some(card.id),
        card_read_counter: Some(counter),
        queue_key: None,
        idempotency_key: None,
        payload: "{}".into(),
        access: None,
        transit: None,
    };
    if let Err(e) = state.ledger.record(event).await {
        return Err(match ApiError::from(e).code {
            "card_replay" => Refused::Used,
            _ => Refused::Unavailable,
        });
    }
    let view = load(state, card).await.map_err(|_| Refused::Unavailable)?;
    Ok(render(&view, state, t))
}

async fn load(state: &web::Data<AppState>, card: Card) -> Result<CardView, ApiError> {
    let st = state.clone();
    blocking(move || {
        let wallet = card.account_id;
        let holder = st.ledger.registry(|r| r.holder(card.holder_id))?;
        let balance = st.ledger.balance(wallet)?;
        let movements = st.ledger.account_entries(wallet, 0, MOVEMENTS, true)?;
        let names = crate::audit::place_names(&st)?;
        let ride_rules = ride_rules(&st, card.id, &movements)?;
        Ok(CardView {
            masked_name: holder.map(|h| mask_name(&h.name)).unwrap_or_default(),
            balance,
            movements,
            names,
            wallet,
            ride_rules,
        })
    })
    .await
}

fn render(v: &CardView, state: &AppState, t: &Text) -> Markup {
    let currency = state.settings.currency;
    let tz = state.settings.timezone;
    html! {
        section.card aria-labelledby="balance-label" {
            p #balance-label .label { (t.balance) }
            p #balance .balance data-minor=(v.balance) { (rupiah(v.balance, currency)) }
            dl {
                dt { (t.holder) } dd #holder { (v.masked_name) }
                dt { (t.status) } dd #status data-status="active" { (t.status_active) }
            }
        }
        h2 { (t.movements) }
        @if v.movements.is_empty() {
            p #movements-empty { (t.no_movements) }
        } @else {
            div.scroll {
                table #movements .stack {
                    thead { tr { @for c in t.columns { th scope="col" { (c) } } } }
                    tbody {
                        @for e in &v.movements {
                            (movement(e, v, t, currency, tz))
                        }
                    }
                }
            }
        }
    }
}

fn movement(e: &Entry, v: &CardView, t: &Text, currency: ledger::money::Currency, tz: chrono_tz::Tz) -> Markup {
    let amount: i64 = e.postings.iter().filter(|p| p.account_id == v.wallet).map(|p| p.amount_minor).sum();
    let after = e.postings.iter().rev().find(|p| p.account_id == v.wallet).map_or(0, |p| p.balance_after_minor);
    let kind = Text::name(t.kinds, e.kind.as_str());
    let place = e.counterparty_id.and_then(|a| v.names.get(&a));
    html! {
        @let [when, place_label, amount_label, after_label, receipt_label] = t.columns;
        tr data-seq=(e.seq) data-amount-minor=(amount) data-balance-minor=(after) {
            td data-label=(when) { time datetime=(crate::wire::time(e.time_us)) { (city_time(tz, e.time_us)) } }
            td data-label=(place_label) {
                (kind) @if let Some(p) = place { br; span.place { (p) } }
                @if let Some(rules) = ride_of(e).and_then(|r| v.ride_rules.get(&r)) {
                    br; span.rules data-rules=(rules) { (t.fare_rules(rules)) }
                }
            }
            td.num data-label=(amount_label) { (rupiah(amount, currency)) }
            td.num data-label=(after_label) { (rupiah(after, currency)) }
            td data-label=(receipt_label) {
                @if let Some(a) = e.audit {
                    a href={ "/receipts/" (e.seq) "?h=" (hex::encode(a.leaf_hash)) } { (t.receipt_link) }
                }
            }
        }
    }
}

/// The rules that priced a transit ride, for its entries (their memo; the writer links a
/// ride's entries with the merchant reference `ride:<id>`).
pub fn fare_rules(e: &Entry) -> Option<&str> {
    let ride = e.references.merchant_reference.as_deref().is_some_and(|r| r.starts_with("ride:"));
    e.references.memo.as_deref().filter(|m| ride && !m.is_empty())
}

/// The transit ride an entry belongs to.
fn ride_of(e: &Entry) -> Option<i64> {
    e.references.merchant_reference.as_deref()?.strip_prefix("ride:")?.parse().ok()
}

/// The rules of each ride among `movements`, from the ride's latest entry (blocking).
fn ride_rules(st: &AppState, card: i64, movements: &[Entry]) -> Result<HashMap<i64, String>, ApiError> {
    let rides: Vec<i64> = movements.iter().filter_map(ride_of).collect();
    if rides.is_empty() {
        return Ok(HashMap::new());
    }
    let mut latest: HashMap<i64, i64> = HashMap::new();
    for (seq, ride) in st.ledger.registry(|r| r.ride_entries(card, &rides))? {
        latest.insert(ride, seq);
    }
    let mut out = HashMap::new();
    for (ride, seq) in latest {
        if let Some(rules) = st.ledger.entry(seq)?.as_ref().and_then(fare_rules) {
            out.insert(ride, rules.to_owned());
        }
    }
    Ok(out)
}
