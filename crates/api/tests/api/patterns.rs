//! Every `pattern` the published document gives a request field or a query parameter is
//! tied to the parser the server runs on that field: a value the parser takes must match
//! the pattern (the document never calls valid input invalid), and for fields whose pattern
//! is the whole rule (names, UIDs, NIKs, hex) the two agree both ways. A pattern no parser
//! is tied to fails the test, so a new pattern cannot drift from its parser unseen.

use std::collections::BTreeSet;

use domain::money::{parse_signed_minor, Amount, Currency, FeeRate, AMOUNT_MAX_MINOR};
use domain::registry::{BlockReason, MerchantCategory, ServiceKind};
use serde_json::Value;

use crate::support::TestResult;

/// How a pattern relates to its parser: `Exact` (accepts the same strings) or `Looser`
/// (the pattern accepts everything the parser accepts, and more: bounds are the parser's).
#[derive(Clone, Copy, PartialEq)]
enum Tie {
    Exact,
    Looser,
}

type Parser = Box<dyn Fn(&str) -> bool>;

/// The parser behind a pattern, by the pattern's text; `None` for an untied pattern.
fn parser_for(pattern: &str) -> Option<(Tie, Parser)> {
    let names = |names: &'static [&'static str]| format!("^({})$", names.join("|"));
    let amount = |c: Currency| move |t: &str| Amount::parse(t, c, AMOUNT_MAX_MINOR).is_ok();
    let tie: (Tie, Parser) = match pattern {
        "^[0-9]+(\\.[0-9]{1,3})?$" => (
            Tie::Looser,
            Box::new(move |t| [Currency::IDR, Currency::parse("USD").expect("USD")].iter().any(|c| amount(*c)(t))),
        ),
        "^-?[0-9]+(\\.[0-9]{1,3})?$" => (Tie::Looser, Box::new(|t| parse_signed_minor(t, Currency::IDR).is_ok())),
        "^[0-9]+(\\.[0-9]{1,6})?$" => (Tie::Looser, Box::new(|t| FeeRate::parse(t).is_ok())),
        "^[0-9A-Fa-f]{14}$" => (Tie::Exact, Box::new(|t| t.parse::<card::CardUid>().is_ok())),
        "^[0-9]{1,19}$" => (Tie::Looser, Box::new(|t| api::wire::id(t).is_ok())),
        "^[A-Z]{3}$" => (Tie::Looser, Box::new(|t| Currency::parse(t).is_ok())),
        "^[0-9]{16}$" => (Tie::Exact, Box::new(domain::registry::is_nik)),
        "^[0-9A-Fa-f]{32}$" => (Tie::Exact, Box::new(|t| card::SunTap::from_hex(t, "00112233445566AA", None).is_ok())),
        "^[0-9A-Fa-f]{16}$" => {
            (Tie::Exact, Box::new(|t| card::SunTap::from_hex("00112233445566778899AABBCCDDEEFF", t, None).is_ok()))
        }
        "^[0-9A-Fa-f]{64}$" => (Tie::Exact, Box::new(api::operator::credentials::is_public_key)),
        p if p == names(MerchantCategory::NAMES) => (Tie::Exact, Box::new(|t| MerchantCategory::parse(t).is_ok())),
        p if p == names(BlockReason::NAMES) => (Tie::Exact, Box::new(|t| BlockReason::parse(t).is_ok())),
        p if p == names(ServiceKind::NAMES) => (Tie::Exact, Box::new(|t| ServiceKind::parse(t).is_ok())),
        p if p == names(&api::operator::approvals::STATUSES) => {
            (Tie::Exact, Box::new(|t| api::operator::approvals::STATUSES.contains(&t)))
        }
        "^[!-~]+$" => (Tie::Looser, Box::new(|t| ledger::domain::IdempotencyKey::parse(t).is_ok())),
        // A constant a response carries (`"status": "ok"`): the pattern is the value.
        p if p.len() > 2 && p[1..p.len() - 1].bytes().all(|b| b.is_ascii_lowercase()) => {
            let word = p[1..p.len() - 1].to_owned();
            (Tie::Exact, Box::new(move |t| t == word))
        }
        _ => return None,
    };
    Some(tie)
}

/// Strings near every rule's edges: signs, spaces, decimals, lengths, cases.
#[rustfmt::skip]
const EDGES: &[&str] = &[
    "", " ", "0", "1", "+1", "-1", "01", "42", " 1", "1 ", "1.", ".5", "1.0", "1.00", "1.000", "1.0000", "0.007",
    "0.0000001", "1.000001", "2", "1e3", "0x1", "-0", "-2500.00", "-.5", "12500.00", "9223372036854775807",
    "9223372036854775808", "99999999999999999999", "IDR", "USD", "idr", "ID", "IDRR", "XYZ", "abc", "١٢",
    "1234567890123456", "123456789012345", "12345678901234567", "123456789012345a", "04A1B2C3D4C080",
    "04a1b2c3d4c080", "04A1B2C3D4C08", "04A1B2C3D4C0800", "04A1B2C3D4C08G", "kt_key", "!", "~", "a b", "ok", "ready",
];

/// [`EDGES`], hex strings around each length a pattern names, and every name with its
/// near misses.
fn corpus() -> Vec<String> {
    let mut c: Vec<String> = EDGES.iter().map(|s| (*s).to_owned()).collect();
    for hex in ["00112233445566778899aabbccddeeff", "0123456789ABCDEF", &"ab".repeat(32)] {
        c.push(hex.to_owned());
        c.push(hex[1..].to_owned());
        c.push(format!("{hex}0"));
        c.push(hex.replace('0', "g"));
    }
    let named = [MerchantCategory::NAMES, BlockReason::NAMES, ServiceKind::NAMES, &api::operator::approvals::STATUSES];
    for name in named.iter().flat_map(|n| n.iter()) {
        c.extend([(*name).to_owned(), name.to_uppercase(), format!("{name} "), format!("{name}s")]);
    }
    c.push("k".repeat(128));
    c.push("k".repeat(129));
    c
}

/// Every `(where, pattern)` in the document: schema properties and parameters.
fn patterns(v: &Value, at: &str, out: &mut BTreeSet<(String, String)>) {
    match v {
        Value::Object(o) => {
            if let Some(Value::String(p)) = o.get("pattern") {
                out.insert((at.to_owned(), p.clone()));
            }
            for (k, x) in o {
                patterns(x, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| patterns(x, &format!("{at}/{i}"), out)),
        _ => {}
    }
}

pub fn patterns_match_the_parsers() -> TestResult {
    let mut found = BTreeSet::new();
    patterns(api::openapi::document(), "", &mut found);
    if found.len() < 20 {
        return Err(format!("only {} patterns in the document: the walk is broken", found.len()));
    }
    let corpus = corpus();
    let mut problems = Vec::new();
    for (at, pattern) in &found {
        let Some((tie, parses)) = parser_for(pattern) else {
            problems.push(format!("{at}: pattern {pattern:?} is tied to no parser"));
            continue;
        };
        let regex = jsonschema::validator_for(&serde_json::json!({"type": "string", "pattern": pattern}))
            .map_err(|e| format!("{at}: {pattern:?} is not a valid pattern: {e}"))?;
        let mut accepted = 0;
        for text in &corpus {
            let (matches, parsed) = (regex.is_valid(&Value::String(text.clone())), parses(text));
            accepted += usize::from(parsed);
            if parsed && !matches {
                problems.push(format!("{at}: the parser takes {text:?} but the pattern {pattern:?} refuses it"));
            }
            if tie == Tie::Exact && matches && !parsed {
                problems.push(format!("{at}: the pattern {pattern:?} takes {text:?} but the parser refuses it"));
            }
        }
        if accepted == 0 {
            problems.push(format!("{at}: no string of the corpus parses for {pattern:?}: the check proves nothing"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!("{} disagreement(s):\n{}", problems.len(), problems.join("\n")))
    }
}
