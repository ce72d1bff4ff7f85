//! What a tap came to, typed ([`Answer`]), and the line the terminal shows for it.

use client::wire::{Decision, InquiryView, PaymentView, Problem, TopupView, TransitTapView};
use client::ClientError;
use offline::SignedRecord;

use crate::{Mode, Outcome};

/// The server's answer to a tap, or the offline record it became.
#[derive(Debug, Clone)]
pub enum Answer {
    /// A payment, approved (POS).
    Payment(PaymentView),
    /// A top-up (agent).
    Topup(TopupView),
    /// An access decision, allow or deny (gate).
    Access(Decision),
    /// The card's balance (kiosk).
    Balance(InquiryView),
    /// A validator's tap: the gate opens; what the rides it touched were held, charged or
    /// refunded, and why.
    Ride(TransitTapView),
    /// The server refused the tap with this problem document.
    Refused(Problem),
    /// The server answered something the API does not document.
    Unexpected(String),
    /// Taken offline: the signed record in the terminal's journal.
    Offline(Box<SignedRecord>),
    /// Refused offline: nothing was written.
    None,
}

impl Answer {
    /// The payment, when the tap was one.
    pub fn payment(&self) -> Option<&PaymentView> {
        match self {
            Answer::Payment(p) => Some(p),
            _ => None,
        }
    }

    /// The top-up, when the tap was one.
    pub fn topup(&self) -> Option<&TopupView> {
        match self {
            Answer::Topup(t) => Some(t),
            _ => None,
        }
    }

    /// The access decision, when the server gave one.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            Answer::Access(d) => Some(d),
            _ => None,
        }
    }

    /// The balance shown, when the tap was a balance inquiry.
    pub fn balance(&self) -> Option<&InquiryView> {
        match self {
            Answer::Balance(b) => Some(b),
            _ => None,
        }
    }

    /// The validator's answer, when the tap was a ride's.
    pub fn ride(&self) -> Option<&TransitTapView> {
        match self {
            Answer::Ride(r) => Some(r),
            _ => None,
        }
    }

    /// The problem's stable code, when the server refused the tap.
    pub fn code(&self) -> Option<&str> {
        match self {
            Answer::Refused(p) => Some(&p.code),
            _ => None,
        }
    }

    /// The offline record, when the tap was taken offline.
    pub fn record(&self) -> Option<&SignedRecord> {
        match self {
            Answer::Offline(r) => Some(r),
            _ => None,
        }
    }
}

/// The receipt's page on `server` (the QR code a POS prints), after the line.
fn receipt_link(server: &str, receipt: &client::wire::Receipt) -> String {
    receipt.receipt_url.as_deref().map(|path| format!(" — {}{path}", server.trim_end_matches('/'))).unwrap_or_default()
}

/// The outcome of a tap the server answered with success; `server` is the API's base URL,
/// which the receipts' links are relative to.
pub(crate) fn online(answer: Answer, server: &str) -> Outcome {
    let (ok, line) = match &answer {
        Answer::Payment(p) => (
            true,
            format!(
                "APPROVED {} — balance {} — receipt #{}{}",
                p.amount.amount,
                p.balance.amount,
                p.receipt.entry_seq,
                receipt_link(server, &p.receipt)
            ),
        ),
        Answer::Topup(t) => (
            true,
            format!(
                "TOPPED UP {} — balance {} — receipt #{}{}",
                t.amount.amount,
                t.balance.amount,
                t.receipt.entry_seq,
                receipt_link(server, &t.receipt)
            ),
        ),
        Answer::Access(d) => {
            let queue = d.queue_number.map(|q| format!(" — queue number {q}")).unwrap_or_default();
            (d.decision == "allow", format!("{} ({}){queue}", d.decision.to_uppercase(), d.reason))
        }
        Answer::Balance(b) => (true, format!("BALANCE {} {}", b.balance, b.currency)),
        Answer::Ride(r) => (true, ride_line(r)),
        _ => (false, String::new()),
    };
    Outcome { ok, online: true, line, detail: answer }
}

/// What a validator shows for an answered tap: each entry with its rules, the balance.
fn ride_line(r: &TransitTapView) -> String {
    let entries: Vec<String> = r
        .entries
        .iter()
        .map(|e| format!("{} {} ({})", e.kind, e.amount.amount, e.rules.as_deref().unwrap_or("")))
        .collect();
    let what = if entries.is_empty() { "nothing to pay".to_owned() } else { entries.join(", ") };
    format!("OPEN {} stop {}: {what} — balance {}", r.direction.to_uppercase(), r.stop, r.balance.amount)
}

/// The outcome of a tap the server refused.
pub(crate) fn refused(mode: Mode, e: &ClientError) -> Outcome {
    let detail = match e.problem() {
        Some(p) => Answer::Refused(p.clone()),
        None => Answer::Unexpected(e.to_string()),
    };
    let (code, why) = match e.problem() {
        Some(p) => (p.code.as_str(), p.detail.clone()),
        None => ("", e.to_string()),
    };
    let line = match mode {
        Mode::Gate => format!("DENY ({code})"),
        Mode::Validator => format!("SHUT ({code}): {why}"),
        _ => format!("REFUSED ({code}): {why}"),
    };
    Outcome { ok: false, online: true, line, detail }
}
