//! `/transparency?date=YYYY-MM-DD`: the city's books for a day (city time): totals per
//! merchant category and public service, payments, top-ups, refunds, access decisions by
//! reason, a 30-day chart, the audit log's size and latest checkpoint, and "check the
//! books": `kartu.js` verifies that the newest checkpoint extends the one this browser saw
//! before (kept in localStorage) with a consistency proof. No personal data: the same
//! totals as `GET /v1/transparency`, from its cache.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::chart::{self, Bar};
use super::{city_time, notice, rupiah, Lang, Page, Text};
use crate::error::ApiError;
use crate::transparency::{self, DayTotals};
use crate::{blocking, AppState};

/// Days the chart shows, ending with the chosen day.
const CHART_DAYS: i64 = 30;

#[derive(Debug, Deserialize)]
struct BooksQuery {
    date: Option<String>,
}

/// The city's books (`GET /transparency`).
pub async fn books_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (lang, chosen) = Lang::of(&req);
    let t = lang.text();
    let date = web::Query::<BooksQuery>::from_query(req.query_string()).ok().and_then(|q| q.0.date);
    let here = date.as_ref().map_or_else(|| "/transparency".to_owned(), |d| format!("/transparency?date={d}"));
    let page = Page { lang, chosen, title: t.books_title, here, script: true };
    let day = match transparency::day_of(&state, date.as_deref().filter(|d| !d.is_empty())) {
        Ok(d) => d,
        Err(e) => return page.respond(StatusCode::BAD_REQUEST, notice("bad", t.books_title, &e.detail), false),
    };
    match gather(&state, day).await {
        Ok(books) => page.respond(StatusCode::OK, render(&books, &state, t), false),
        Err(_) => page.respond(StatusCode::SERVICE_UNAVAILABLE, notice("bad", t.unavailable.0, t.unavailable.1), false),
    }
}

struct Books {
    day: std::sync::Arc<DayTotals>,
    history: Vec<std::sync::Arc<DayTotals>>,
    tree_size: i64,
    checkpoint: Option<ledger::CheckpointRow>,
}

async fn gather(state: &web::Data<AppState>, day: chrono::NaiveDate) -> Result<Books, ApiError> {
    let mut history = Vec::with_capacity(CHART_DAYS as usize);
    for back in (0..CHART_DAYS).rev() {
        let d = day - chrono::Duration::days(back);
        history.push(transparency::totals(state, d).await?.0);
    }
    let st = state.clone();
    let (tree_size, checkpoint) =
        blocking(move || Ok((st.ledger.tree_size()?, st.ledger.latest_checkpoint()?))).await?;
    let day = history.last().cloned().ok_or_else(|| ApiError::internal("no day"))?;
    Ok(Books { day, history, tree_size, checkpoint })
}

fn render(b: &Books, state: &AppState, t: &Text) -> Markup {
    let currency = state.settings.currency;
    let d = &b.day;
    let [payments, paid, refunded, topups, decisions] = t.books_summary;
    let [by_category, by_service, last_days, log] = t.books_headings;
    let date = d.day.format("%Y-%m-%d").to_string();
    html! {
        form.day method="get" action="/transparency" {
            label for="date" { (t.books_day.0) }
            " "
            input #date type="date" name="date" value=(date) required;
            " "
            button type="submit" { (t.books_day.1) }
        }
        p.zone { (date) " · " (state.settings.timezone.name()) }
        dl.summary #summary {
            dt { (payments) } dd #s-payments data-value=(d.payments()) { (d.payments()) }
            dt { (paid) } dd #s-paid data-minor=(d.paid()) { (rupiah(d.paid(), currency)) }
            dt { (refunded) } dd #s-refunded data-minor=(d.refunded()) { (rupiah(d.refunded(), currency)) }
            dt { (topups) } dd #s-topups data-minor=(d.topups) { (rupiah(d.topups, currency)) }
            dt { (decisions) } dd #s-decisions data-value=(d.decisions()) { (d.decisions()) }
        }
        h2 { (by_category) }
        (categories(d, t, currency))
        h2 { (by_service) }
        (services(d, t))
        h2 { (last_days) }
        (chart::bars(&bars(b, currency), &t.books_chart.replace("{n}", &CHART_DAYS.to_string())))
        h2 { (log) }
        (log_section(b, state, t))
    }
}

fn categories(d: &DayTotals, t: &Text, currency: ledger::money::Currency) -> Markup {
    let [category, payments, amount, refunded] = t.books_category_columns;
    html! {
        @if d.merchants.is_empty() {
            p { (t.books_empty) }
        } @else {
            div.scroll { table #categories .stack {
                thead { tr { th scope="col" { (category) } th scope="col" { (payments) } th scope="col" { (amount) } th scope="col" { (refunded) } } }
                tbody {
                    @for (name, (n, paid, back)) in &d.merchants {
                        tr data-category=(name) data-payments=(n) data-amount-minor=(paid) data-refunded-minor=(back) {
                            th scope="row" { (Text::name(t.categories, name)) }
                            td.num data-label=(payments) { (n) }
                            td.num data-label=(amount) { (rupiah(*paid, currency)) }
                            td.num data-label=(refunded) { (rupiah(*back, currency)) }
                        }
                    }
                }
            } }
        }
    }
}

fn services(d: &DayTotals, t: &Text) -> Markup {
    let [service, allowed, denied, reasons] = t.books_service_columns;
    html! {
        @if d.services.is_empty() {
            p { (t.books_empty) }
        } @else {
            div.scroll { table #services .stack {
                thead { tr { th scope="col" { (service) } th scope="col" { (allowed) } th scope="col" { (denied) } th scope="col" { (reasons) } } }
                tbody {
                    @for (name, s) in &d.services {
                        tr data-service=(name) data-allowed=(s.allowed) data-denied=(s.denied) {
                            th scope="row" { (Text::name(t.categories, name)) }
                            td.num data-label=(allowed) { (s.allowed) }
                            td.num data-label=(denied) { (s.denied) }
                            td data-label=(reasons) {
                                @for (i, (reason, n)) in s.reasons.iter().enumerate() {
                                    @if i > 0 { ", " }
                                    span data-reason=(reason) data-count=(n) { (Text::name(t.reasons, reason)) ": " (n) }
                                }
                            }
                        }
                    }
                }
            } }
        }
    }
}

fn bars(b: &Books, currency: ledger::money::Currency) -> Vec<Bar> {
    b.history
        .iter()
        .map(|d| Bar {
            label: d.day.format("%Y-%m-%d").to_string(),
            value: d.paid(),
            title: format!("{}: {} ({})", d.day.format("%Y-%m-%d"), rupiah(d.paid(), currency), d.payments()),
        })
        .collect()
}

fn log_section(b: &Books, state: &AppState, t: &Text) -> Markup {
    let [size, latest, signed_at, ago, none] = t.books_log;
    let now = state.ledger.now_us();
    html! {
        dl.summary #log {
            dt { (size) } dd #log-size data-value=(b.tree_size) { (b.tree_size) }
            dt { (latest) }
            @if let Some(c) = &b.checkpoint {
                dd #log-checkpoint data-size=(c.tree_size) {
                    (c.tree_size) " · " (signed_at) " " (city_time(state.settings.timezone, c.time_us))
                    " (" ((now - c.time_us).max(0) / 1_000_000) " " (ago) ")"
                }
            } @else {
                dd #log-checkpoint { (none) }
            }
        }
        section #check .verify aria-labelledby="check-heading" {
            h2 #check-heading { (t.books_check.0) }
            p { (t.books_check.1) }
            (super::receipt::messages(t))
            button #check-button type="button" disabled { (t.books_check.0) }
            p #check-status .status data-state="nojs" role="status" aria-live="polite" { (super::prose(t.verify_nojs)) }
        }
    }
}
