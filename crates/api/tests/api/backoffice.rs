//! Issue 17: the back office's reads (cards, holders, merchants, credentials, offline
//! terminals) and CSV exports of the journal and of statements, checked against the JSON
//! answers through a CSV reader written here (RFC 4180), not the server's writer.

use serde_json::{json, Value};

use crate::support::{id, Backend, City, Server, TestResult};

/// Lists and searches, as an operator uses them; other roles are refused; no token leaks.
pub fn lists_and_search(backend: Backend) -> TestResult {
    let c = City::new(backend, "100.00")?;
    let s: &Server = &c.s;
    let op = &s.operator;
    let second = s.card(&c.holder, 2)?;
    let other = s.holder("Siti Rahma", "7371010101900077", &["student"])?;
    let third = s.card(&other, 3)?;
    s.post(&format!("/v1/cards/{}/block", second.id), op, &json!({"reason": "lost"}))?.expect(200)?;
    let ids = |v: &Value, list: &str| -> Vec<String> {
        v[list]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x["id"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    // By UID (either case), by holder, by status; the whole list in pages of two.
    let by_uid = s.get(&format!("/v1/cards?uid={}", third.uid.to_lowercase()), op)?.expect(200)?.clone();
    check_eq!(ids(&by_uid, "cards"), vec![third.id.clone()]);
    check_eq!(by_uid["cards"][0]["holder_id"], json!(other));
    let mine = s.get(&format!("/v1/cards?holder_id={}", c.holder), op)?.expect(200)?.clone();
    check_eq!(ids(&mine, "cards"), vec![c.card.id.clone(), second.id.clone()]);
    let blocked = s.get("/v1/cards?status=blocked", op)?.expect(200)?.clone();
    check_eq!(ids(&blocked, "cards"), vec![second.id.clone()]);
    let first = s.get("/v1/cards?limit=2", op)?.expect(200)?.clone();
    let cursor = first["next_cursor"].as_str().ok_or("a next page")?.to_owned();
    let rest = s.get(&format!("/v1/cards?limit=2&cursor={cursor}"), op)?.expect(200)?.clone();
    let mut all = ids(&first, "cards");
    all.extend(ids(&rest, "cards"));
    check_eq!(all, vec![c.card.id.clone(), second.id.clone(), third.id.clone()]);
    check!(rest["next_cursor"].is_null(), "the last page has no cursor: {rest}");
    s.get("/v1/cards?uid=XYZ", op)?.problem(400, "invalid_query")?;
    // Holders by part of the name, without case, and by NIK (hashed, never shown).
    let found = s.get("/v1/holders?name=rahm", op)?.expect(200)?.clone();
    check_eq!(ids(&found, "holders"), vec![other.clone()]);
    let by_nik = s.get("/v1/holders?nik=7371010101900001", op)?.expect(200)?.clone();
    check_eq!(ids(&by_nik, "holders"), vec![c.holder.clone()]);
    check!(!by_nik.to_string().contains("7371010101900001"), "the NIK in an answer");
    s.get("/v1/holders?nik=12", op)?.problem(400, "invalid_query")?;
    // Merchants; credentials without tokens, active only unless asked.
    let merchants = s.get("/v1/merchants", op)?.expect(200)?.clone();
    check_eq!(ids(&merchants, "merchants"), vec![c.merchant_a.clone(), c.merchant_b.clone()]);
    let (pos_id, pos_token) = s.credential_with_id("kiosk", "kiosk to revoke")?;
    s.delete(&format!("/v1/credentials/{pos_id}"), op)?.expect(200)?;
    let active = s.get("/v1/credentials?role=kiosk", op)?.expect(200)?.clone();
    check!(!ids(&active, "credentials").contains(&pos_id), "a revoked credential listed: {active}");
    check_eq!(active["credentials"].as_array().map(Vec::len), Some(1));
    let tills = s.get("/v1/credentials?role=merchant_terminal", op)?.expect(200)?.clone();
    check_eq!(tills["credentials"].as_array().map(Vec::len), Some(2));
    let with_revoked = s.get("/v1/credentials?revoked=true", op)?.expect(200)?.clone();
    check!(ids(&with_revoked, "credentials").contains(&pos_id), "{with_revoked}");
    for token in [&pos_token, &c.pos_a, &c.auditor, op] {
        check!(!with_revoked.to_string().contains(token.as_str()), "a token in the credential list");
    }
    check!(
        with_revoked["credentials"].as_array().is_some_and(|a| a.iter().all(|c| c.get("token").is_none())),
        "token field"
    );
    // Only operators read the back office.
    for path in ["/v1/cards", "/v1/holders", "/v1/merchants", "/v1/credentials", "/v1/offline/terminals"] {
        s.get(path, &c.pos_a)?.problem(403, "forbidden")?;
        s.get(path, &c.auditor)?.problem(403, "forbidden")?;
    }
    offline_terminals_listed(&c)
}

/// A merchant terminal with a journal key is listed with no upload yet and nothing exposed.
fn offline_terminals_listed(c: &City) -> TestResult {
    let s = &c.s;
    let body = json!({"role": "merchant_terminal", "name": "bus till", "merchant_id": c.merchant_a,
        "public_key": "11".repeat(32)});
    let till = id(s.post("/v1/credentials", &s.operator, &body)?.expect(201)?)?;
    let list = s.get("/v1/offline/terminals", &s.operator)?.expect(200)?.clone();
    let terminals = list["terminals"].as_array().ok_or("terminals")?;
    check_eq!(terminals.len(), 1);
    check_eq!(terminals[0]["credential_id"], json!(till));
    check_eq!(terminals[0]["merchant_id"], json!(c.merchant_a));
    check!(terminals[0]["last_upload"].is_null() && terminals[0]["last_record"].is_null(), "{list}");
    check_eq!(terminals[0]["exposure"]["amount"], json!("0.00"));
    Ok(())
}

/// The journal as CSV equals the JSON entries posting for posting; a statement as CSV
/// equals its JSON lines; a reference that a spreadsheet would run is defused; paging
/// goes through `Next-Cursor`.
pub fn csv_exports(backend: Backend) -> TestResult {
    let c = City::new(backend, "100.00")?;
    let s = &c.s;
    let tap = s.tap(&c.card);
    let body = json!({"tap": tap, "amount": "12.50", "reference": "=HYPERLINK(\"http://x\",\"a,b\")"});
    s.post("/v1/payments", &c.pos_a, &body)?.expect(201)?;
    c.pay(&c.card, "7.25")?.expect(201)?;
    let json_entries = s.get("/v1/audit/entries?limit=1000", &c.auditor)?.expect(200)?.clone();
    let r = s.get_csv("/v1/audit/entries?limit=1000", &c.auditor)?;
    check!(r.status == 200 && r.content_type.starts_with("text/csv"), "{} {}", r.status, r.content_type);
    let rows = parse_csv(&r.text)?;
    check_eq!(rows[0][..7].join(","), "entry_seq,time,kind,account_id,amount,currency,balance_after".to_owned());
    let col = |name: &str| rows[0].iter().position(|h| h == name).ok_or(format!("column {name}"));
    let (seq, account, amount, after, reference) =
        (col("entry_seq")?, col("account_id")?, col("amount")?, col("balance_after")?, col("merchant_reference")?);
    let mut expected = Vec::new();
    for e in json_entries["entries"].as_array().ok_or("entries")? {
        for p in e["postings"].as_array().ok_or("postings")? {
            expected.push(vec![
                e["entry_seq"].to_string(),
                p["account_id"].as_str().unwrap_or("").to_owned(),
                p["amount"]["amount"].as_str().unwrap_or("").to_owned(),
                p["balance_after"]["amount"].as_str().unwrap_or("").to_owned(),
            ]);
        }
    }
    let got: Vec<Vec<String>> = rows[1..]
        .iter()
        .map(|r| vec![r[seq].clone(), r[account].clone(), r[amount].clone(), r[after].clone()])
        .collect();
    check_eq!(got, expected);
    check!(
        rows.iter().any(|r| r[reference] == "'=HYPERLINK(\"http://x\",\"a,b\")"),
        "the formula is defused and its comma and quotes survive: {}",
        r.text
    );
    // Pages: the cursor in Next-Cursor continues where the page ended.
    let page = s.get_csv("/v1/audit/entries?limit=2", &c.auditor)?;
    let next = page.header("next-cursor").ok_or("Next-Cursor")?.to_owned();
    let page2 = s.get_csv(&format!("/v1/audit/entries?limit=2&cursor={next}"), &c.auditor)?;
    let first_seq_of = |text: &str| parse_csv(text).ok().and_then(|r| r.get(1).map(|row| row[0].clone()));
    check_eq!(first_seq_of(&page2.text), Some("3".to_owned()));
    statement_csv(&c)
}

/// The merchant's statement as CSV: the JSON lines, row for row.
fn statement_csv(c: &City) -> TestResult {
    let s = &c.s;
    let json_view = s.get("/v1/merchant/statement", &c.pos_a)?.expect(200)?.clone();
    let r = s.get_csv("/v1/merchant/statement", &c.pos_a)?;
    let rows = parse_csv(&r.text)?;
    check_eq!(rows[0].join(","), "entry_seq,time,kind,amount,currency,balance_after".to_owned());
    let expected: Vec<Vec<String>> = json_view["lines"]
        .as_array()
        .ok_or("lines")?
        .iter()
        .map(|l| {
            vec![
                l["entry_seq"].to_string(),
                l["time"].as_str().unwrap_or("").to_owned(),
                l["kind"].as_str().unwrap_or("").to_owned(),
                l["amount"]["amount"].as_str().unwrap_or("").to_owned(),
                l["amount"]["currency"].as_str().unwrap_or("").to_owned(),
                l["balance_after"]["amount"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    check!(expected.len() == 2, "two payments: {json_view}");
    check_eq!(rows[1..].to_vec(), expected);
    let auditor_view = s.get_csv(&format!("/v1/audit/accounts/{}/statement", c.merchant_a_account), &c.auditor)?;
    check_eq!(auditor_view.text, r.text);
    Ok(())
}

/// An RFC 4180 reader: rows of cells, quoted cells with doubled quotes, CRLF line ends.
pub fn parse_csv(text: &str) -> Result<Vec<Vec<String>>, String> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = text.chars().peekable();
    let mut quoted = false;
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, other) => cell.push(other),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\r') if chars.peek() == Some(&'\n') => {
                chars.next();
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, other) => cell.push(other),
        }
    }
    check!(!quoted && cell.is_empty() && row.is_empty(), "the CSV does not end with CRLF: {text:?}");
    let width = rows.first().map_or(0, Vec::len);
    check!(rows.iter().all(|r| r.len() == width), "rows of different widths");
    Ok(rows)
}
