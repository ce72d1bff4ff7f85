//! The journal as CSV (RFC 4180), one row per posting: what an accountant loads into a
//! spreadsheet or another ledger. `GET /v1/audit/entries` and `GET
//! /v1/merchant/statement` with `Accept: text/csv` and `kartu ledger export --format csv`
//! all write it here, so the three agree column for column.
//!
//! Text a terminal or an operator chose (references, memos) that a spreadsheet would run as
//! a formula (starting with `=`, `+`, `-`, `@`, tab or carriage return) is written with a
//! leading `'`, so opening an export never runs a cell.

use crate::domain::Entry;

/// The header row of the journal export.
pub const JOURNAL_HEADER: &str = "entry_seq,time,kind,account_id,amount,currency,balance_after,entry_amount,entry_fee,\
                                  counterparty_id,related_seq,card_id,card_read_counter,terminal_id,\
                                  merchant_reference,memo,leaf_index,leaf_hash\r\n";

/// Appends one row per posting of `entry` to `out` (CRLF line ends).
pub fn journal_rows(entry: &Entry, out: &mut String) {
    let time = humantime::format_rfc3339_micros(
        std::time::UNIX_EPOCH + std::time::Duration::from_micros(entry.time_us.max(0) as u64),
    )
    .to_string();
    let r = &entry.references;
    let opt = |v: Option<i64>| v.map(|n| n.to_string()).unwrap_or_default();
    for p in &entry.postings {
        let cells = [
            entry.seq.to_string(),
            time.clone(),
            entry.kind.as_str().to_owned(),
            p.account_id.0.to_string(),
            p.currency.format_minor(p.amount_minor),
            p.currency.code().to_owned(),
            p.currency.format_minor(p.balance_after_minor),
            entry.currency.format_minor(entry.amount_minor),
            entry.currency.format_minor(entry.fee_minor),
            opt(entry.counterparty_id.map(|a| a.0)),
            opt(entry.related_seq),
            opt(r.card_id),
            opt(r.card_read_counter),
            r.terminal_id.clone().unwrap_or_default(),
            r.merchant_reference.clone().unwrap_or_default(),
            r.memo.clone().unwrap_or_default(),
            opt(entry.audit.map(|a| a.leaf_index)),
            entry.audit.map(|a| hex::encode(a.leaf_hash)).unwrap_or_default(),
        ];
        row(&cells, out);
    }
}

/// Appends one CSV row of `cells`.
pub fn row(cells: &[String], out: &mut String) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        cell_into(cell, out);
    }
    out.push_str("\r\n");
}

/// One cell: quoted when it holds a comma, a quote or a line break; a would-be formula
/// defused with a leading `'`.
fn cell_into(cell: &str, out: &mut String) {
    let formula = cell.starts_with(['=', '+', '@', '\t', '\r']) || (cell.starts_with('-') && !is_number(cell));
    let text = if formula { format!("'{cell}") } else { cell.to_owned() };
    if text.contains([',', '"', '\r', '\n']) {
        out.push('"');
        out.push_str(&text.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(&text);
    }
}

/// A negative amount or number (kept as is: it is not a formula).
fn is_number(cell: &str) -> bool {
    let digits = cell.strip_prefix('-').unwrap_or(cell);
    !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit() || c == '.') && digits.matches('.').count() <= 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(text: &str) -> String {
        let mut out = String::new();
        cell_into(text, &mut out);
        out
    }

    #[test]
    fn cells_are_quoted_and_formulas_defused() {
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("-12.50"), "-12.50");
        assert_eq!(cell("-1+1"), "'-1+1");
        assert_eq!(cell(""), "");
    }
}
