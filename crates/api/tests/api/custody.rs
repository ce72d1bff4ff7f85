//! Custody (issue 13): what a card's key version, the files' modes and the log's leaves
//! defend against.

use serde_json::json;

use crate::support::{idr, tap_with, Backend, City, Server, TestResult};

/// A card issued at key version 2 refuses a tap that verifies only with version 1 (a copy
/// made with keys the card no longer holds); a card still at version 1 pays with it.
pub fn card_key_versions(backend: Backend) -> TestResult {
    let v2 = "\n[cards.2]\nsdm_meta_read_key = \"00112233445566778899AABBCCDDEEFF\"\n\
        sdm_file_read_master_key = \"FFEEDDCCBBAA99887766554433221100\"\n\
        app_master_key = \"0F1E2D3C4B5A69788796A5B4C3D2E1F0\"\n";
    let server = Server::start_edited(backend, |c| c, |keys| format!("{keys}{v2}"))?;
    check_eq!(server.keys.newest().version(), 2);
    let c = City::on(server, "0.00")?;
    let s = &c.s;
    let v1 = s.keys.version(1).ok_or("version 1")?;
    let old_tap = |uid: &str, counter: u32| {
        tap_with(v1.sdm_meta_read_key(), v1.sdm_file_read_master_key(), b"KARTU-MKS", uid, counter)
    };
    // The City's card was issued without a version: the newest, 2.
    check_eq!(s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?.expect(200)?["key_version"], json!(2));
    s.post("/v1/topups", &c.teller, &json!({"card_id": c.card.id, "amount": "100.00"}))?.expect(201)?;
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": old_tap(&c.card.uid, 1), "amount": "1.00"}))?;
    r.problem(422, "tap_key_outdated")?;
    c.pay(&c.card, "1.00")?.expect(201)?;
    // A card personalised at version 1 is issued so and pays with a version-1 tap.
    let h = s.holder("Hana", "7371010101900041", &["resident"])?;
    let uid = "04C0FFEE000141";
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": uid, "holder_id": h, "key_version": 1}))?;
    let card = r.expect(201)?.clone();
    check_eq!(card["key_version"], json!(1));
    let id = card["id"].as_str().ok_or("id")?;
    s.post("/v1/topups", &c.teller, &json!({"card_id": id, "amount": "10.00"}))?.expect(201)?;
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": old_tap(uid, 1), "amount": "1.00"}))?;
    check_eq!(r.expect(201)?["balance"], idr("9.00"));
    // A version the key file does not hold cannot be issued.
    let r = s.post("/v1/cards", &s.operator, &json!({"uid": "04C0FFEE000142", "holder_id": h, "key_version": 3}))?;
    r.problem(422, "invalid_field")?;
    Ok(())
}
