//! Issue 17: `POST /v1/cards/{id}/key-version`, what `kartu card rotate` calls after it
//! rotated a card's keys. The server records a newer version only when shown a fresh,
//! genuine tap of that card made with exactly that version's two SDM keys; afterwards the
//! old version's taps are refused and the new one's pay. A card pulled away half-way through
//! a rotation (its meta-read key of one version, its file-read key of another) still pays
//! as its old version, and cannot prove the new one. `kartu audit verify` accepts the
//! rotation's leaf and reports a key version changed behind the API.

use ledger::verify::{verify, VerifyError, VerifyOptions};
use serde_json::{json, Value};

use crate::support::{idr, tap_with, Backend, City, Server, TestResult};

/// The second key version the server's key file gets.
pub const V2: &str = "\n[cards.2]\nsdm_meta_read_key = \"00112233445566778899AABBCCDDEEFF\"\n\
    sdm_file_read_master_key = \"FFEEDDCCBBAA99887766554433221100\"\n";
/// The rotated card's UID.
const UID: &str = "04C0FFEE001701";

/// Taps of the rotated card at a key version, or half-rotated.
struct Taps<'a> {
    s: &'a Server,
}

impl Taps<'_> {
    /// A tap whose PICCData is encrypted with version `meta`'s key and whose MAC is made
    /// with version `file`'s (the same for a whole card).
    fn at(&self, meta: u8, file: u8, counter: u32) -> Result<Value, String> {
        let (m, f) = (self.s.keys.version(meta).ok_or("meta version")?, self.s.keys.version(file).ok_or("file")?);
        Ok(tap_with(m.sdm_meta_read_key(), f.sdm_file_read_master_key(), b"KARTU-MKS", UID, counter))
    }
}

/// What a refusal must leave as it was: the card's key version, the operator actions.
fn unchanged(c: &City, card: &str, version: i64, actions: usize) -> TestResult {
    let s = &c.s;
    check_eq!(s.get(&format!("/v1/cards/{card}"), &s.operator)?.expect(200)?["key_version"], json!(version));
    check_eq!(operator_actions(c)?, actions, "a refusal logged an operator action");
    Ok(())
}

fn operator_actions(c: &City) -> Result<usize, String> {
    Ok(c.s.leaves(&c.auditor)?.iter().filter(|l| l.1 == "operator_action").count())
}

pub fn key_version_after_rotation(backend: Backend) -> TestResult {
    let server = Server::start_edited(backend, |c| c, |keys| format!("{keys}{V2}"))?;
    let c = City::on(server, "0.00")?;
    let s = &c.s;
    let taps = Taps { s };
    let holder = s.holder("Rina", "7371010101901701", &["resident"])?;
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": UID, "holder_id": holder, "key_version": 1}))?;
    let card = r.expect(201)?["id"].as_str().ok_or("id")?.to_owned();
    s.post("/v1/topups", &c.teller, &json!({"card_id": card, "amount": "10.00"}))?.expect(201)?;
    let pay = |tap: Value| s.post("/v1/payments", &c.pos_a, &json!({"tap": tap, "amount": "1.00"}));
    check_eq!(pay(taps.at(1, 1, 1)?)?.expect(201)?["balance"], idr("9.00"));
    // Half-rotated (key 1 at version 2, key 2 still at 1): pays as version 1.
    check_eq!(pay(taps.at(2, 1, 2)?)?.expect(201)?["balance"], idr("8.00"));
    let path = format!("/v1/cards/{card}/key-version");
    refusals(&c, &card, &path, &taps)?;

    // The real one; a retry with its key gets the same answer.
    let body = json!({"key_version": 2, "tap": taps.at(2, 2, 3)?});
    let done = s.post_k(&path, &s.operator, "rotate-1", &body)?.expect(200)?.clone();
    check_eq!((done["id"].as_str(), done["key_version"].clone()), (Some(card.as_str()), json!(2)));
    check_eq!(done["last_counter"], json!(3));
    check_eq!(s.post_k(&path, &s.operator, "rotate-1", &body)?.expect(200)?, &done);
    let leaves = s.leaves(&c.auditor)?;
    let last = leaves.iter().rev().find(|l| l.1 == "operator_action").ok_or("no operator action")?;
    let leaf = String::from_utf8_lossy(&last.2);
    check!(leaf.contains("rotate_card_keys") && leaf.contains("\"key_version\":2"), "the last action: {leaf}");
    // Back to a lower version: refused, though the tap is a genuine version-1 tap.
    let r = s.post(&path, &s.operator, &json!({"key_version": 1, "tap": taps.at(1, 1, 4)?}))?;
    r.problem(409, "key_version_not_newer")?;

    // Version 2 pays; version 1 and a half-rotated tap are now copies.
    check_eq!(pay(taps.at(2, 2, 5)?)?.expect(201)?["balance"], idr("7.00"));
    pay(taps.at(1, 1, 6)?)?.problem(422, "tap_key_outdated")?;
    pay(taps.at(2, 1, 7)?)?.problem(422, "tap_key_outdated")?;
    registry_verifies_and_finds_a_typed_version(&c, &card)
}

/// Each refusal writes nothing: the card stays at version 1, no operator action is logged.
fn refusals(c: &City, card: &str, path: &str, taps: &Taps<'_>) -> TestResult {
    let s = &c.s;
    let actions = operator_actions(c)?;
    let refused = |body: Value, status: u16, code: &str| -> TestResult {
        s.post(path, &s.operator, &body)?.problem(status, code)?;
        unchanged(c, card, 1, actions)
    };
    // The version the card has already.
    refused(json!({"key_version": 1, "tap": taps.at(1, 1, 10)?}), 409, "key_version_not_newer")?;
    // A version the key file lacks.
    refused(json!({"key_version": 3, "tap": taps.at(2, 2, 10)?}), 422, "invalid_field")?;
    // A tap at the old version: the card was not rotated.
    refused(json!({"key_version": 2, "tap": taps.at(1, 1, 10)?}), 422, "tap_version_mismatch")?;
    // Half-rotated, either way round: not a proof of version 2.
    refused(json!({"key_version": 2, "tap": taps.at(2, 1, 10)?}), 422, "tap_version_mismatch")?;
    refused(json!({"key_version": 2, "tap": taps.at(1, 2, 10)?}), 422, "tap_version_mismatch")?;
    // Another card's genuine version-2 tap.
    refused(json!({"key_version": 2, "tap": s.tap(&c.card)}), 422, "tap_card_mismatch")?;
    // A forged MAC.
    let mut forged = taps.at(2, 2, 10)?;
    forged["cmac"] = json!("0000000000000000");
    refused(json!({"key_version": 2, "tap": forged}), 422, "tap_mac_invalid")?;
    // A replayed counter (2 paid above): refused by the ledger writer as a possible clone,
    // which records the replay (as for any replayed tap) and nothing else.
    refused(json!({"key_version": 2, "tap": taps.at(2, 2, 2)?}), 409, "card_replay")?;
    let view = s.get(&format!("/v1/cards/{card}"), &s.operator)?;
    check_eq!((view.expect(200)?["replays"].clone(), view.json["last_counter"].clone()), (json!(1), json!(2)));
    Ok(())
}

/// `kartu audit verify` passes with the rotation's leaf; a key version typed into the table
/// is reported on that card's row and field.
fn registry_verifies_and_finds_a_typed_version(c: &City, card: &str) -> TestResult {
    let s = &c.s;
    check!(verify_db(s)?.is_empty(), "an honest registry with a rotation verifies");
    let card: i64 = card.parse().map_err(|_| "card id")?;
    s.owner_sql(&format!("UPDATE cards SET key_version = 3 WHERE id = {card}"))?;
    let findings = verify_db(s)?;
    check_eq!(
        findings.iter().map(|f| f.0.clone()).collect::<Vec<_>>(),
        vec![("cards".to_owned(), Some(card), "key_version")]
    );
    check!(findings[0].1.contains("key_version 3 but its leaf says 2"), "finding: {}", findings[0].1);
    s.owner_sql(&format!("UPDATE cards SET key_version = 2 WHERE id = {card}"))?;
    check!(verify_db(s)?.is_empty(), "undone, and verify still fails");
    Ok(())
}

/// A registry finding as the test compares it: (table, row, field), with its text.
type Finding = ((String, Option<i64>, &'static str), String);

/// The registry findings of `audit verify` on the server's database (none: it verifies).
fn verify_db(s: &Server) -> Result<Vec<Finding>, String> {
    let verifier = merkle::Verifier::parse(&s.verifier_key).map_err(|e| e.to_string())?;
    let options = VerifyOptions { allow_unsigned_tail: true, ..Default::default() };
    match verify(s.database_url(), &verifier, &options, |_, _| {}) {
        Ok(_) => Ok(Vec::new()),
        Err(VerifyError::Registry(findings)) => {
            Ok(findings.iter().map(|f| ((f.table.to_owned(), f.row, f.field), f.to_string())).collect())
        }
        Err(e) => Err(format!("verify failed outside the registry: {e}")),
    }
}

/// A payment reads the card with the caller's credential, by the UID the tap's PICCData
/// claims under the newest meta-read key that decrypts it to a Kartu tag, before the MAC
/// is checked (`Caller::resolve_with_card`). That UID is a hint: here a genuine version-1
/// tap of card A whose PICCData the version-2 key also decrypts to a Kartu tag, naming
/// another UID, under which the test registers card B. The payment must charge A, the card
/// the verified tap names, and leave B as it was.
pub fn a_claimed_uid_never_picks_the_card(backend: Backend) -> TestResult {
    let server = Server::start_edited(backend, |c| c, |keys| format!("{keys}{V2}"))?;
    let c = City::on(server, "0.00")?;
    let s = &c.s;
    let taps = Taps { s };
    let v2 = s.keys.version(2).ok_or("version 2")?;
    // About one counter in 256 gives such a tap.
    let (counter, claimed) = (1..20_000)
        .find_map(|n| {
            let tap = taps.at(1, 1, n).ok()?;
            let picc: [u8; 16] = hex::decode(tap["picc_data"].as_str()?).ok()?.try_into().ok()?;
            let p = card::sun::decrypt_picc_data(v2.sdm_meta_read_key(), &picc).ok()?;
            (p.uid.to_string() != UID).then(|| (n, p.uid.to_string()))
        })
        .ok_or("no counter gives a second Kartu tag")?;
    let holder = s.holder("Rina", "7371010101901702", &["resident"])?;
    let mut cards = Vec::new();
    for uid in [UID, claimed.as_str()] {
        let r = s.post("/v1/cards", &s.operator, &json!({"uid": uid, "holder_id": holder, "key_version": 1}))?;
        let card = r.expect(201)?["id"].as_str().ok_or("id")?.to_owned();
        s.post("/v1/topups", &c.teller, &json!({"card_id": card, "amount": "10.00"}))?.expect(201)?;
        cards.push(card);
    }
    let paid = s.post("/v1/payments", &c.pos_a, &json!({"tap": taps.at(1, 1, counter)?, "amount": "1.00"}))?;
    let paid = paid.expect(201)?;
    check_eq!((paid["card_id"].as_str(), paid["balance"].clone()), (Some(cards[0].as_str()), idr("9.00")));
    let balance =
        |card: &str| Ok::<_, String>(s.get(&format!("/v1/cards/{card}"), &s.operator)?.expect(200)?["balance"].clone());
    check_eq!((balance(&cards[0])?, balance(&cards[1])?), (idr("9.00"), idr("10.00")));
    Ok(())
}
