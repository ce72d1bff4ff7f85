//! `/receipts/{entry_seq}?h=<leaf_hash>`: a receipt anyone holding its link can read and
//! verify. The leaf hash in the link is the capability: without it the entry is not shown
//! (a receipt names a merchant, an amount and a time; the links are not enumerable). The
//! page carries the leaf's bytes; `kartu.js` recomputes the leaf hash from them, checks the
//! details shown against the bytes, fetches the latest signed checkpoint, the published key
//! and an inclusion proof from the public API, and checks the proof and the signature.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use serde::Deserialize;

use super::{city_time, notice, rupiah, Lang, Page, Text};
use crate::audit::{find_receipt, FoundReceipt};
use crate::AppState;

#[derive(Debug, Deserialize)]
struct ReceiptQuery {
    h: Option<String>,
}

/// The receipt page (`GET /receipts/{seq}`).
pub async fn receipt_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (lang, chosen) = Lang::of(&req);
    let t = lang.text();
    let seq_text = req.match_info().get("seq").unwrap_or("").to_owned();
    let h = web::Query::<ReceiptQuery>::from_query(req.query_string()).ok().and_then(|q| q.0.h).unwrap_or_default();
    let here = format!("/receipts/{}?h={}", seq_text, h);
    let page = Page { lang, chosen, title: t.receipt_title, here, script: true };
    let missing = || notice("bad", t.receipt_missing.0, t.receipt_missing.1);
    let Ok(seq) = crate::wire::id(&seq_text) else {
        return page.respond(StatusCode::NOT_FOUND, missing(), false);
    };
    match find_receipt(&state, seq, &h).await {
        Ok(Some(found)) => {
            let main = render(&found, &state, t);
            page.respond(StatusCode::OK, main, false)
        }
        Ok(None) => page.respond(StatusCode::NOT_FOUND, missing(), false),
        Err(_) => page.respond(StatusCode::SERVICE_UNAVAILABLE, notice("bad", t.unavailable.0, t.unavailable.1), false),
    }
}

fn render(f: &FoundReceipt, state: &AppState, t: &Text) -> Markup {
    let e = &f.entry;
    let currency = e.currency;
    let [what, amount, place, when, fee, entry, leaf_index, leaf_hash] = t.receipt_fields;
    html! {
        dl.receipt #receipt {
            dt { (what) } dd #r-kind { (Text::name(t.kinds, e.kind.as_str())) }
            dt { (amount) } dd #r-amount .amount { (rupiah(e.amount_minor, currency)) }
            @if let Some(p) = &f.place { dt { (place) } dd #r-place { (p) } }
            dt { (when) } dd #r-time { time datetime=(crate::wire::time(e.time_us)) { (city_time(state.settings.timezone, e.time_us)) } }
            dt { (fee) } dd #r-fee { (rupiah(e.fee_minor, currency)) }
            @if let Some(rules) = super::card::fare_rules(e) {
                dt { (t.fare_rules_label) } dd #r-rules data-rules=(rules) { (t.fare_rules(rules)) }
            }
            dt { (entry) } dd #r-seq { (e.seq) }
            dt { (leaf_index) } dd #r-leaf-index { (f.leaf_index) }
            dt { (leaf_hash) } dd #r-leaf-hash .hash { (hex::encode(f.leaf_hash)) }
        }
        section #verify .verify aria-labelledby="verify-heading"
            data-leaf=(hex::encode(&f.leaf))
            data-leaf-index=(f.leaf_index)
            data-leaf-hash=(hex::encode(f.leaf_hash))
            data-seq=(e.seq)
            data-time-us=(e.time_us)
            data-kind=(e.kind.as_str())
            data-currency=(currency.code())
            data-amount-minor=(e.amount_minor)
            data-fee-minor=(e.fee_minor)
        {
            h2 #verify-heading { (t.verify_heading) }
            p { (t.verify_intro) }
            (messages(t))
            p #verify-status .status data-state="nojs" role="status" aria-live="polite" { (super::prose(t.verify_nojs)) }
        }
    }
}

/// The verification messages, for the script (it holds no text of its own).
pub fn messages(t: &Text) -> Markup {
    html! {
        ul #messages hidden {
            @for (k, m) in t.verify_msgs { li data-key=(k) { (m) } }
        }
    }
}
