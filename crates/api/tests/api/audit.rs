//! The auditor's reads, receipts, proofs, checkpoints and the public transparency totals,
//! checked against an independent RFC 9162 / C2SP verifier and hand-computed balances.

use chrono::DateTime;
use serde_json::{json, Value};

use crate::rfc9162::{self, unhex, verify_checkpoint};
use crate::support::{id, idr, Backend, Body, City, TestCard, TestResult};

fn time_us(t: &Value) -> Result<i64, String> {
    let text = t.as_str().ok_or_else(|| format!("time {t}"))?;
    Ok(DateTime::parse_from_rfc3339(text).map_err(|e| format!("{text}: {e}"))?.timestamp_micros())
}

fn rfc3339(us: i64) -> String {
    DateTime::from_timestamp_micros(us)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_default()
}

pub fn auditor_reads_and_proofs(backend: Backend) -> TestResult {
    let c = City::new(backend, "100000.00")?;
    let s = &c.s;
    // Activity: payments at both merchants, a refund, a kiosk tap, a top-up.
    let p1 = c.pay(&c.card, "12500.00")?.expect(201)?.clone();
    let p2 =
        s.post("/v1/payments", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "20000.00"}))?.expect(201)?.clone();
    s.post(&format!("/v1/payments/{}/refunds", id(&p1)?), &c.pos_a, &json!({"amount": "2500.00"}))?.expect(201)?;
    s.post("/v1/balance-inquiries", &c.kiosk, &json!({"tap": s.tap(&c.card)}))?.expect(200)?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": c.card.id, "amount": "10000.00"}))?.expect(201)?;

    let (entries, last_seq) = entries_are_the_logs_leaves(&c, &p1, &p2)?;
    the_trial_balance_adds_up(&c, &entries, last_seq)?;
    let card_entries: Vec<&Value> = entries
        .iter()
        .filter(|e| {
            e["postings"].as_array().is_some_and(|ps| ps.iter().any(|p| p["account_id"] == json!(c.card.account_id)))
        })
        .collect();
    the_card_balance_at_past_times(&c, &card_entries)?;
    statements_and_entries_page(&c, &card_entries)?;
    let (cp, key) = the_checkpoint_is_signed_over_the_leaves(&c)?;
    every_entry_has_an_inclusion_proof(&c, &entries, &cp)?;
    a_later_checkpoint_is_consistent(&c, &cp, &key)
}

/// Entries carry their leaf bytes; SHA-256(0x00 || leaf) is the leaf hash, and the bytes
/// are those of the log's leaf at leaf_index; sequences are gapless and postings sum to
/// zero. Returns the entries and the last sequence number.
fn entries_are_the_logs_leaves(c: &City, p1: &Value, p2: &Value) -> Result<(Vec<Value>, i64), String> {
    let s = &c.s;
    let entries = s.entries(&c.auditor)?;
    let leaves = s.leaves(&c.auditor)?;
    check!(
        leaves.len() > entries.len(),
        "events interleave with entries: {} leaves, {} entries",
        leaves.len(),
        entries.len()
    );
    for (i, (index, kind, leaf, hash)) in leaves.iter().enumerate() {
        check_eq!(*index, i as i64, "leaves are numbered from 0 without gaps");
        check_eq!(hex::encode(rfc9162::leaf_hash(leaf)), *hash, "leaf {i}");
        check!(!kind.is_empty(), "kind");
    }
    let mut last_seq = 0;
    for e in &entries {
        let seq = e["entry_seq"].as_i64().ok_or("entry_seq")?;
        check_eq!(seq, last_seq + 1, "gapless sequence");
        last_seq = seq;
        let leaf = hex::decode(e["leaf"].as_str().ok_or("leaf")?).map_err(|e| e.to_string())?;
        check_eq!(json!(hex::encode(rfc9162::leaf_hash(&leaf))), e["leaf_hash"], "entry {seq}");
        // docs/AUDIT.md: version 1, type 1 (journal entry), then the sequence, big-endian.
        check_eq!(leaf[..2], [1u8, 1u8], "entry {seq} leaf header");
        check_eq!(i64::from_be_bytes(leaf[2..10].try_into().map_err(|_| "seq")?), seq);
        let index = e["leaf_index"].as_i64().ok_or("leaf_index")? as usize;
        check_eq!(leaves[index].2, leaf, "entry {seq}: the log's leaf {index}");
        check_eq!(leaves[index].1, "entry".to_owned());
        // Postings sum to zero.
        let sum: i64 = e["postings"].as_array().ok_or("postings")?.iter().map(|p| minor(&p["amount"]["amount"])).sum();
        check_eq!(sum, 0, "entry {seq} postings sum to zero");
    }
    check_eq!(p1["leaf_hash"], entries[(p1["entry_seq"].as_i64().ok_or("seq")? - 1) as usize]["leaf_hash"]);
    check!(p2["leaf_index"].as_i64() > p1["leaf_index"].as_i64(), "leaf indexes grow");
    Ok((entries, last_seq))
}

/// Trial balance: balanced; debits and credits equal the sum of positive postings.
fn the_trial_balance_adds_up(c: &City, entries: &[Value], last_seq: i64) -> TestResult {
    let r = c.s.get("/v1/audit/trial-balance", &c.auditor)?;
    let tb = r.expect(200)?;
    check_eq!(tb["last_entry_seq"], json!(last_seq));
    let line = &tb["currencies"][0];
    check_eq!(line["currency"], json!("IDR"));
    check_eq!(line["balances_sum"], json!("0.00"));
    check_eq!(line["balanced"], json!(true));
    let positive: i64 = entries
        .iter()
        .flat_map(|e| e["postings"].as_array().cloned().unwrap_or_default())
        .map(|p| minor(&p["amount"]["amount"]))
        .filter(|m| *m > 0)
        .sum();
    check_eq!(minor(&line["debits"]), positive);
    check_eq!(minor(&line["credits"]), positive);
    Ok(())
}

/// The card's balance now and at past times, against a hand-kept history: topped up
/// 100 000.00, paid 12 500.00 and 20 000.00, refunded 2 500.00, topped up 10 000.00.
fn the_card_balance_at_past_times(c: &City, card_entries: &[&Value]) -> TestResult {
    let s = &c.s;
    let history = ["100000.00", "87500.00", "67500.00", "70000.00", "80000.00"];
    check_eq!(card_entries.len(), history.len());
    let account = &c.card.account_id;
    let at = |us: i64| {
        let r = s.get(&format!("/v1/audit/accounts/{account}/balance?at={}", rfc3339(us)), &c.auditor)?;
        Ok::<String, String>(r.expect(200)?["balance"]["amount"].as_str().unwrap_or("?").to_owned())
    };
    check_eq!(at(time_us(&card_entries[0]["time"])? - 1)?, "0.00".to_owned(), "before the first entry");
    for (i, expected) in history.iter().enumerate() {
        let t = time_us(&card_entries[i]["time"])?;
        let next = card_entries.get(i + 1).map(|e| time_us(&e["time"])).transpose()?.unwrap_or(t + 2_000_000);
        check!(next > t, "entries of the card have increasing times");
        check_eq!(at(t + (next - t) / 2)?, expected.to_string(), "balance after entry {i}");
    }
    check_eq!(s.balance(&c.auditor, account)?, "80000.00".to_owned());
    s.get(&format!("/v1/audit/accounts/{account}/balance?at=yesterday"), &c.auditor)?.problem(400, "invalid_time")?;
    s.get("/v1/audit/accounts/987654/balance", &c.auditor)?.problem(404, "not_found")?;
    Ok(())
}

/// A statement for the period from the first payment to just before the top-up; paging
/// statements and entries with limit and cursor; bad cursors and limits are refused.
fn statements_and_entries_page(c: &City, card_entries: &[&Value]) -> TestResult {
    let s = &c.s;
    let account = &c.card.account_id;
    let from = time_us(&card_entries[1]["time"])?;
    let to = time_us(&card_entries[4]["time"])?;
    let r = s.get(
        &format!("/v1/audit/accounts/{account}/statement?from={}&to={}", rfc3339(from), rfc3339(to)),
        &c.auditor,
    )?;
    let st = r.expect(200)?;
    check_eq!(st["opening"], idr("100000.00"));
    check_eq!(st["closing"], idr("70000.00"));
    let amounts: Vec<&str> =
        st["lines"].as_array().ok_or("lines")?.iter().filter_map(|l| l["amount"]["amount"].as_str()).collect();
    check_eq!(amounts, vec!["-12500.00", "-20000.00", "2500.00"]);
    let kinds: Vec<&str> = st["lines"].as_array().ok_or("lines")?.iter().filter_map(|l| l["kind"].as_str()).collect();
    check_eq!(kinds, vec!["payment", "payment", "refund"]);
    // Paging with limit and cursor gives the same lines.
    let r = s.get(&format!("/v1/audit/accounts/{account}/statement?limit=2"), &c.auditor)?;
    let page1 = r.expect(200)?.clone();
    let cursor = page1["next_cursor"].as_str().ok_or("a cursor after a full page")?;
    let r = s.get(&format!("/v1/audit/accounts/{account}/statement?limit=2&cursor={cursor}"), &c.auditor)?;
    let page2 = r.expect(200)?;
    let all: Vec<Value> =
        page1["lines"].as_array().into_iter().chain(page2["lines"].as_array()).flatten().cloned().collect();
    let seqs: Vec<i64> = all.iter().filter_map(|l| l["entry_seq"].as_i64()).collect();
    check_eq!(seqs.len(), 4);
    check!(seqs.windows(2).all(|w| w[0] < w[1]), "pages continue in order: {seqs:?}");
    s.get(&format!("/v1/audit/accounts/{account}/statement?cursor=zzz"), &c.auditor)?.problem(400, "invalid_query")?;
    s.get("/v1/audit/entries?limit=0", &c.auditor)?.problem(400, "invalid_query")?;
    s.get("/v1/audit/entries?limit=1001", &c.auditor)?.problem(400, "invalid_query")?;
    // Entries page too.
    let r = s.get("/v1/audit/entries?limit=3", &c.auditor)?;
    let e1 = r.expect(200)?.clone();
    let r = s.get(
        &format!("/v1/audit/entries?limit=3&cursor={}", e1["next_cursor"].as_str().ok_or("cursor")?),
        &c.auditor,
    )?;
    check_eq!(r.expect(200)?["entries"][0]["entry_seq"], json!(4));
    Ok(())
}

/// The checkpoint: a C2SP signed note by the published key, over the root that an
/// independent computation gets from the leaves; a tampered note does not verify. Returns
/// the checkpoint and the published key.
fn the_checkpoint_is_signed_over_the_leaves(c: &City) -> Result<(rfc9162::Checkpoint, String), String> {
    let s = &c.s;
    let size = s.tree_size()?;
    let note = s.checkpoint_covering(size)?;
    let key = s.get_public("/v1/audit/public-key")?;
    check!(key.status == 200 && key.content_type.starts_with("text/plain"), "public key: {}", key.text);
    check_eq!(key.text.trim(), s.verifier_key.as_str());
    let r = s.get_public("/v1/audit/checkpoints/latest")?;
    check!(r.content_type.starts_with("text/plain"), "checkpoint content type {}", r.content_type);
    let cp = verify_checkpoint(&note, &key.text)?;
    check_eq!(cp.origin, "kartu.example/log".to_owned());
    check!(cp.extensions.iter().any(|e| e.starts_with("time ")), "time extension: {:?}", cp.extensions);
    check!(cp.size as i64 >= size, "checkpoint of {} leaves", cp.size);
    let leaves = s.leaves(&c.auditor)?;
    let hashes: Vec<rfc9162::Hash> = leaves.iter().map(|l| rfc9162::leaf_hash(&l.2)).collect();
    check_eq!(rfc9162::root(&hashes[..cp.size as usize]), cp.root, "independent root of {} leaves", cp.size);
    // A tampered note does not verify.
    let tampered = note.replacen(&format!("\n{}\n", cp.size), &format!("\n{}\n", cp.size + 1), 1);
    check!(verify_checkpoint(&tampered, &key.text).is_err(), "a tampered checkpoint verified");
    Ok((cp, key.text))
}

/// Inclusion proofs for every entry of the checkpoint (anyone may ask); out-of-range
/// queries are refused.
fn every_entry_has_an_inclusion_proof(c: &City, entries: &[Value], cp: &rfc9162::Checkpoint) -> TestResult {
    let s = &c.s;
    for e in entries {
        let index = e["leaf_index"].as_i64().ok_or("leaf_index")? as u64;
        let r = s.get_public(&format!("/v1/audit/proofs/inclusion?leaf_index={index}&tree_size={}", cp.size))?;
        let proof = r.expect(200)?;
        let path: Vec<rfc9162::Hash> = proof["hashes"]
            .as_array()
            .ok_or("hashes")?
            .iter()
            .map(|h| unhex(h.as_str().unwrap_or("")))
            .collect::<Result<_, _>>()?;
        let leaf = unhex(e["leaf_hash"].as_str().ok_or("leaf_hash")?)?;
        check!(
            rfc9162::verify_inclusion(index, cp.size, &leaf, &path, &cp.root),
            "inclusion of leaf {index} in {}",
            cp.size
        );
    }
    s.get_public(&format!("/v1/audit/proofs/inclusion?leaf_index={}&tree_size={}", cp.size, cp.size))?
        .problem(400, "invalid_query")?;
    s.get_public("/v1/audit/proofs/inclusion?leaf_index=0&tree_size=999999")?.problem(400, "invalid_query")?;
    s.get_public("/v1/audit/proofs/inclusion?leaf_index=0")?.problem(400, "invalid_query")?;
    Ok(())
}

/// More activity, a later checkpoint, and a consistency proof between the two.
fn a_later_checkpoint_is_consistent(c: &City, cp: &rfc9162::Checkpoint, key: &str) -> TestResult {
    let s = &c.s;
    for _ in 0..3 {
        c.pay(&c.card, "100.00")?.expect(201)?;
    }
    let later_size = s.tree_size()?;
    let later = verify_checkpoint(&s.checkpoint_covering(later_size)?, key)?;
    check!(later.size > cp.size, "the log grew");
    let r = s.get_public(&format!("/v1/audit/proofs/consistency?first={}&second={}", cp.size, later.size))?;
    let proof = r.expect(200)?;
    check_eq!(proof["first"], json!(cp.size));
    let path: Vec<rfc9162::Hash> = proof["hashes"]
        .as_array()
        .ok_or("hashes")?
        .iter()
        .map(|h| unhex(h.as_str().unwrap_or("")))
        .collect::<Result<_, _>>()?;
    check!(
        rfc9162::verify_consistency(cp.size, later.size, &cp.root, &later.root, &path),
        "consistency {} → {}",
        cp.size,
        later.size
    );
    check!(
        !rfc9162::verify_consistency(cp.size, later.size, &later.root, &later.root, &path),
        "a wrong first root passed"
    );
    s.get_public(&format!("/v1/audit/proofs/consistency?first={}&second={}", later.size, cp.size))?
        .problem(400, "invalid_query")?;
    Ok(())
}

/// Minor units of a decimal string with two places.
fn minor(v: &Value) -> i64 {
    let t = v.as_str().unwrap_or("0");
    let (neg, t) = t.strip_prefix('-').map_or((false, t), |r| (true, r));
    let (w, f) = t.split_once('.').unwrap_or((t, "00"));
    let m = w.parse::<i64>().unwrap_or(0) * 100 + f.parse::<i64>().unwrap_or(0);
    if neg {
        -m
    } else {
        m
    }
}

pub fn receipts_are_provable(backend: Backend) -> TestResult {
    let c = City::new(backend, "50000.00")?;
    let s = &c.s;
    let r = c.pay(&c.card, "12500.00")?;
    let receipt = r.expect(201)?.clone();
    let (seq, index) =
        (receipt["entry_seq"].as_i64().ok_or("entry_seq")?, receipt["leaf_index"].as_i64().ok_or("leaf_index")?);
    let leaf_hash = unhex(receipt["leaf_hash"].as_str().ok_or("leaf_hash")?)?;
    check!(index != seq, "journal entries and events interleave: leaf_index {index}, entry_seq {seq}");
    // The citizen keeps (leaf_index, leaf_hash) and later asks, with no token at all.
    let key = s.get_public("/v1/audit/public-key")?.text;
    let cp = verify_checkpoint(&s.checkpoint_covering(index + 1)?, &key)?;
    let r = s.get_public(&format!("/v1/audit/proofs/inclusion?leaf_index={index}&tree_size={}", cp.size))?;
    let proof = r.expect(200)?;
    check_eq!(proof["leaf_index"], json!(index));
    check_eq!(proof["tree_size"], json!(cp.size));
    let path: Vec<rfc9162::Hash> = proof["hashes"]
        .as_array()
        .ok_or("hashes")?
        .iter()
        .map(|h| unhex(h.as_str().unwrap_or("")))
        .collect::<Result<_, _>>()?;
    check!(rfc9162::verify_inclusion(index as u64, cp.size, &leaf_hash, &path, &cp.root), "the receipt is in the log");
    // A forged receipt (another amount) is not.
    let forged = rfc9162::leaf_hash(b"payment of 1.00");
    check!(!rfc9162::verify_inclusion(index as u64, cp.size, &forged, &path, &cp.root), "a forged receipt verified");
    // The leaf behind the receipt is the entry: the auditor's leaf bytes hash to it.
    let leaves = s.leaves(&c.auditor)?;
    check_eq!(rfc9162::leaf_hash(&leaves[index as usize].2), leaf_hash);
    // Top-ups, refunds and captures carry receipts too.
    let r = s.post(&format!("/v1/payments/{}/refunds", id(&receipt)?), &c.pos_a, &json!({"amount": "1.00"}))?;
    let v = r.expect(201)?;
    check!(v["entry_seq"].as_i64() == Some(seq + 1) && v["leaf_hash"].is_string(), "refund receipt: {v}");
    Ok(())
}

/// `/v1/transparency` answers from a per-day cache: a flood after the cache expired costs
/// one computation (one `miss`, every other answer a `hit` with the same body); today's
/// totals are at most `transparency_cache_ms` old and then show new payments; a closed day
/// is computed once.
pub fn transparency_cache(backend: Backend) -> TestResult {
    let server = crate::support::Server::start_with(backend, |c| {
        c.replace("transparency_cache_ms = 5000", "transparency_cache_ms = 1500")
    })?;
    let c = City::on(server, "100.00")?;
    let s = &c.s;
    c.pay(&c.card, "1.00")?.expect(201)?;
    let grocery = |r: &crate::support::Resp| -> Result<Value, String> {
        let t = r.expect(200)?;
        let m = t["merchants"].as_array().ok_or("merchants")?;
        Ok(m.iter().find(|m| m["category"] == json!("grocery")).map(|m| m["payments"].clone()).unwrap_or(json!(0)))
    };
    let first = s.get_public("/v1/transparency")?;
    check_eq!(first.header("x-kartu-cache"), Some("miss"));
    check_eq!(grocery(&first)?, json!(1));
    // A payment within the cache's life is not shown yet; after it, it is.
    c.pay(&c.card, "1.00")?.expect(201)?;
    let cached = s.get_public("/v1/transparency")?;
    check_eq!(cached.header("x-kartu-cache"), Some("hit"));
    check_eq!(cached.text, first.text);
    std::thread::sleep(std::time::Duration::from_millis(1600));
    // The flood: 40 requests at once after the cache expired; one computes.
    let answers: Vec<Result<crate::support::Resp, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..40).map(|_| scope.spawn(|| s.get_public("/v1/transparency"))).collect();
        handles.into_iter().map(|h| h.join().map_err(|_| "panicked".to_string())?).collect()
    });
    let answers = answers.into_iter().collect::<Result<Vec<_>, _>>()?;
    let misses = answers.iter().filter(|r| r.header("x-kartu-cache") == Some("miss")).count();
    check_eq!(misses, 1);
    for r in &answers {
        check_eq!(grocery(r)?, json!(2));
        check_eq!(&r.text, &answers[0].text);
    }
    // A closed day: computed once, then kept.
    let past = s.get_public("/v1/transparency?date=2001-01-01")?;
    check_eq!((past.status, past.header("x-kartu-cache")), (200, Some("miss")));
    std::thread::sleep(std::time::Duration::from_millis(1600));
    let again = s.get_public("/v1/transparency?date=2001-01-01")?;
    check_eq!(again.header("x-kartu-cache"), Some("hit"));
    check!(again.header("cache-control").is_some_and(|v| v.starts_with("public")), "cache-control");
    Ok(())
}

pub fn transparency_and_secrets(backend: Backend) -> TestResult {
    let c = City::new(backend, "300000.00")?;
    let nik = "7371066606660006";
    let name = "Rahmawati Daeng Ngai";
    let card = a_holders_nik_is_never_returned(&c, nik, name)?;
    a_day_of_activity(&c, &card)?;
    transparency_shows_totals_and_no_personal_data(&c, &card, nik, name)?;
    the_nik_is_in_no_leaf(&c, nik, name)?;
    tokens_are_shown_only_at_creation(&c, nik)
}

/// A holder's NIK is not in the holder's creation response nor in the card view. Returns
/// the holder's card, topped up with 1 000.00.
fn a_holders_nik_is_never_returned(c: &City, nik: &str, name: &str) -> Result<TestCard, String> {
    let s = &c.s;
    let r =
        s.post("/v1/holders", &s.operator, &json!({"name": name, "nik": nik, "categories": ["insured", "resident"]}))?;
    let holder = r.expect(201)?.clone();
    check!(!r.text.contains(nik), "the NIK is returned: {}", r.text);
    check!(holder.get("nik").is_none() && holder.get("nik_hash").is_none(), "{holder}");
    check_eq!(holder["categories"], json!(["insured", "resident"]));
    let card = s.card(&id(&holder)?, 42)?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": card.id, "amount": "1000.00"}))?.expect(201)?;
    let r = s.get(&format!("/v1/cards/{}", card.id), &s.operator)?;
    check!(!r.text.contains(nik), "card view: {}", r.text);
    Ok(card)
}

/// Activity of the day: grocery 2 payments (12 500.00 + 7 500.00) and a refund of
/// 500.00; hotel 1 payment (100 000.00) and a capture (40 000.00); top-ups 300 000.00
/// + 1 000.00 (the City) + 5 000.00; a clinic allows two and denies one.
fn a_day_of_activity(c: &City, card: &TestCard) -> TestResult {
    let s = &c.s;
    let p = id(c.pay(&c.card, "12500.00")?.expect(201)?)?;
    c.pay(&c.card, "7500.00")?.expect(201)?;
    s.post(&format!("/v1/payments/{p}/refunds"), &c.pos_a, &json!({"amount": "500.00"}))?.expect(201)?;
    s.post("/v1/payments", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "100000.00"}))?.expect(201)?;
    let h = id(s.post("/v1/holds", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "50000.00"}))?.expect(201)?)?;
    s.post(&format!("/v1/holds/{h}/capture"), &c.pos_b, &json!({"amount": "40000.00"}))?.expect(201)?;
    s.post("/v1/topups", &c.teller, &json!({"tap": s.tap(&c.card), "amount": "5000.00"}))?.expect(201)?;
    let sp = s.post(
        "/v1/service-points",
        &s.operator,
        &json!({"name": "RSUD", "service": "clinic", "policy": {"categories": ["insured"]}}),
    )?;
    let desk = s.credential("service_point", "RSUD desk", Some(("service_point_id", &id(sp.expect(201)?)?)))?;
    for (t, decision) in [(s.tap(card), "allow"), (s.tap(card), "allow"), (s.tap(&c.card), "deny")] {
        check_eq!(s.post("/v1/access-checks", &desk, &json!({"tap": t}))?.expect(200)?["decision"], json!(decision));
    }
    Ok(())
}

/// `/v1/transparency` shows the day's totals per category and service, and no name, NIK,
/// UID, card, holder or account id; a past day is empty; a bad date is refused.
fn transparency_shows_totals_and_no_personal_data(c: &City, card: &TestCard, nik: &str, name: &str) -> TestResult {
    let s = &c.s;
    let r = s.get_public("/v1/transparency")?;
    let t = r.expect(200)?.clone();
    // The city's today: the installation's default time zone, Asia/Jakarta (not UTC's
    // day, which differs from 17:00 to 24:00 UTC).
    let today = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Jakarta).format("%Y-%m-%d").to_string();
    check_eq!(t["date"], json!(today));
    let merchants = t["merchants"].as_array().ok_or("merchants")?;
    let grocery = merchants.iter().find(|m| m["category"] == json!("grocery")).ok_or("grocery")?;
    check_eq!(grocery["payments"], json!(2));
    check_eq!(grocery["amount"], idr("20000.00"));
    check_eq!(grocery["refunded"], idr("500.00"));
    let hotel = merchants.iter().find(|m| m["category"] == json!("hotel")).ok_or("hotel")?;
    check_eq!(hotel["payments"], json!(2));
    check_eq!(hotel["amount"], idr("140000.00"));
    check_eq!(hotel["refunded"], idr("0.00"));
    check_eq!(t["topups"], idr("306000.00"));
    let clinic =
        t["services"].as_array().ok_or("services")?.iter().find(|x| x["service"] == json!("clinic")).ok_or("clinic")?;
    check_eq!((clinic["allowed"].clone(), clinic["denied"].clone()), (json!(2), json!(1)));
    check_eq!(t["tree_size"], json!(s.tree_size()?));
    // No personal data: no name, NIK, UID, card, holder or account id.
    for secret in [name, nik, "Andi Wijaya", card.uid.as_str(), c.card.uid.as_str(), "Toko Sinar", "Hotel Losari"] {
        check!(!r.text.contains(secret), "transparency shows {secret:?}: {}", r.text);
    }
    for field in ["card_id", "holder_id", "account_id", "uid", "name", "nik"] {
        check!(!r.text.contains(&format!("\"{field}\"")), "transparency has a {field} field: {}", r.text);
    }
    let r = s.get_public("/v1/transparency?date=2001-01-01")?;
    check_eq!(r.expect(200)?["merchants"], json!([]));
    s.get_public("/v1/transparency?date=yesterday")?.problem(400, "invalid_query")?;
    Ok(())
}

/// The NIK is in no leaf of the audit log, neither in clear nor as a plain SHA-256 (16
/// digits are easily enumerated); the leaves keep only a keyed hash.
fn the_nik_is_in_no_leaf(c: &City, nik: &str, name: &str) -> TestResult {
    let leaves = c.s.leaves(&c.auditor)?;
    let nik_sha = ring::digest::digest(&ring::digest::SHA256, nik.as_bytes());
    let all: Vec<u8> = leaves.iter().flat_map(|l| l.2.clone()).collect();
    let contains = |needle: &[u8]| all.windows(needle.len()).any(|w| w == needle);
    check!(!contains(nik.as_bytes()), "the NIK is in the audit log");
    check!(!contains(nik_sha.as_ref()), "SHA-256(NIK) is in the audit log");
    check!(!contains(hex::encode(nik_sha).as_bytes()), "hex SHA-256(NIK) is in the audit log");
    check!(contains(name.as_bytes()), "the holder's creation is logged (by name)");
    Ok(())
}

/// Tokens: in the creation response only; never in a retry, a revocation, a list, the
/// log, the entries or the metrics.
fn tokens_are_shown_only_at_creation(c: &City, nik: &str) -> TestResult {
    let s = &c.s;
    let key = s.key();
    let body = json!({"role": "merchant_terminal", "name": "secret till", "merchant_id": c.merchant_a});
    let r = s.post_k("/v1/credentials", &s.operator, &key, &body)?;
    let v = r.expect(201)?.clone();
    let token = v["token"].as_str().ok_or("token")?.to_owned();
    let retry = s.post_k("/v1/credentials", &s.operator, &key, &body)?;
    check!(retry.status == 201 && !retry.text.contains(&token), "a retry shows the token: {}", retry.text);
    c.s.post("/v1/payments", &token, &json!({"tap": s.tap(&c.card), "amount": "1.00"}))?.expect(201)?;
    let revoked =
        s.send("DELETE", &format!("/v1/credentials/{}", id(&v)?), Some(&s.operator), Some(&s.key()), Body::None)?;
    check!(revoked.status == 200 && !revoked.text.contains(&token), "revocation shows the token: {}", revoked.text);
    let leaves = s.leaves(&c.auditor)?;
    let all: Vec<u8> = leaves.iter().flat_map(|l| l.2.clone()).collect();
    let token_hash = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    check!(!all.windows(token.len()).any(|w| w == token.as_bytes()), "a token is in the audit log");
    check!(!all.windows(32).any(|w| w == token_hash.as_ref()), "a token's hash is in the audit log");
    for path in ["/v1/audit/entries?limit=1000", "/v1/audit/access-log", "/v1/payments"] {
        let who = if path == "/v1/payments" { &c.pos_a } else { &c.auditor };
        let r = s.get(path, who)?;
        check!(r.status == 200 && !r.text.contains(&token) && !r.text.contains(&s.operator), "{path} shows a token");
        check!(!r.text.contains(nik), "{path} shows the NIK");
    }
    let r = s.get_public("/metrics")?;
    check!(!r.text.contains(&token) && !r.text.contains(&s.operator), "metrics show a token");
    Ok(())
}
