//! The citizens' and the public's pages in a real browser (headless chromium) against the
//! real server: the card page after a genuine tap, a receipt verified in the browser (and
//! each lie a proxy tells caught by the check it breaks), the city's books with totals
//! computed here, and "check the books" across new checkpoints and a rolled-back log.
//! Expected amounts are written out by hand: fees at 0.7 % and 1.5 %, half-even.

use serde_json::json;

use crate::browser::{attr, attr_in, tag, tags_with, text, Browser, Proxy, Tamper};
use crate::support::{self, id, s, Backend, City, Server, TestCard, TestResult};

/// The URL a card's NDEF file gives a phone.
pub fn tap_url(s: &Server, card: &TestCard) -> String {
    let tap = s.tap(card);
    format!(
        "{}/t?picc_data={}&cmac={}",
        s.base,
        tap["picc_data"].as_str().unwrap_or(""),
        tap["cmac"].as_str().unwrap_or("")
    )
}

/// A page's body as the server sends it: (status, body).
fn raw(server: &Server, path: &str, lang: &str) -> Result<(u16, String), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    let mut r = agent.get(format!("{}{path}", server.base)).header("accept-language", lang).call().map_err(s)?;
    let body = r.body_mut().read_to_string().map_err(s)?;
    Ok((r.status().as_u16(), body))
}

/// Pages load nothing from elsewhere and stay under 100 KB.
fn self_contained(path: &str, body: &str) -> TestResult {
    check!(body.len() < 100 * 1024, "{path} is {} bytes", body.len());
    for marker in ["src=\"", "href=\"", "action=\""] {
        for (at, _) in body.match_indices(marker) {
            let url = &body[at + marker.len()..];
            check!(
                url.starts_with('/') || url.starts_with('#') || url.starts_with('?'),
                "{path} links out: {}",
                &url[..40.min(url.len())]
            );
        }
    }
    Ok(())
}

/// `/t`: the balance, the status, the masked holder and the last movements after a genuine
/// tap; nothing for a reused link (and no clone suspicion for a reload), a forged one or a
/// blocked card; the language from `Accept-Language`.
pub fn card_page(backend: Backend) -> TestResult {
    let c = City::new(backend, "75000.00")?;
    let s = &c.s;
    let paid = c.pay(&c.card, "12500.00")?;
    let v = paid.expect(201)?;
    let seq = id(v)?;
    let leaf_hash = v["leaf_hash"].as_str().ok_or("leaf_hash")?;
    check_eq!(v["receipt_url"], json!(format!("/receipts/{seq}?h={leaf_hash}")));
    s.post("/v1/payments", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "2500.50"}))?.expect(201)?;
    let b = Browser::new()?;
    let url = tap_url(s, &c.card);
    let tree = s.tree_size()?;
    let dom = b.dom(&url, "id-ID,id;q=0.9")?;
    check_eq!(attr(&dom, "balance", "data-minor"), Some("5999950".into()), "{dom}");
    check_eq!(text(&dom, "balance"), Some("Rp 59.999,50".into()));
    check_eq!(text(&dom, "holder"), Some("A*** W***".into()));
    check!(dom.contains("<html lang=\"id\"") && dom.contains("Saldo"), "not Indonesian: {dom}");
    for secret in ["Andi", "Wijaya", "7371010101900001", c.card.uid.as_str()] {
        check!(!dom.contains(secret), "the card page shows {secret:?}");
    }
    let rows: Vec<(String, String, String)> = tags_with(&dom, "data-balance-minor")
        .iter()
        .map(|t| {
            (
                attr_in(t, "data-seq").unwrap_or_default(),
                attr_in(t, "data-amount-minor").unwrap_or_default(),
                attr_in(t, "data-balance-minor").unwrap_or_default(),
            )
        })
        .collect();
    let amounts: Vec<(&str, &str)> = rows.iter().map(|(_, a, b)| (a.as_str(), b.as_str())).collect();
    check_eq!(amounts, vec![("-250050", "5999950"), ("-1250000", "6250000"), ("7500000", "7500000")]);
    check_eq!(rows[1].0, seq);
    for place in ["Hotel Losari", "Toko Sinar", "Bank Sulsel teller", "Rp 62.500,00", "\u{2212}Rp 12.500,00"] {
        check!(dom.contains(place), "the card page lacks {place:?}");
    }
    // The tap was spent as a leaf: a reload shows nothing, and is no suspected clone.
    check_eq!(s.tree_size()?, tree + 1);
    let again = b.dom(&url, "id")?;
    check!(tag(&again, "balance").is_none() && again.contains("Tautan ini sudah dipakai"), "a reused link: {again}");
    let card = s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?;
    check_eq!(card.expect(200)?["replays"], json!(0));
    card_page_refusals(&c, &b)?;
    // A receipt link on the page opens a receipt that verifies.
    let href = attr_in(
        tags_with(&dom, "href").into_iter().find(|t| t.contains("/receipts/")).ok_or("no receipt link")?,
        "href",
    )
    .ok_or("href")?;
    s.checkpoint_covering(tree + 1)?;
    let receipt = b.dom(&format!("{}{href}", s.base), "en")?;
    check_eq!(attr(&receipt, "verify-status", "data-check"), Some("ok".into()), "{receipt}");
    Ok(())
}

/// English by `Accept-Language`; a forged link; a blocked card; no tap at all.
fn card_page_refusals(c: &City, b: &Browser) -> TestResult {
    let s = &c.s;
    let en = b.dom(&tap_url(s, &c.card), "en-US,en;q=0.9")?;
    check!(en.contains("<html lang=\"en\"") && en.contains("My card") && en.contains("Last movements"), "{en}");
    check_eq!(text(&en, "balance"), Some("Rp 59.999,50".into()));
    // A fresh tap whose MAC lost its last digit: a forged link.
    let fresh = tap_url(s, &c.card);
    let last = if fresh.ends_with('0') { '1' } else { '0' };
    let forged = format!("{}{last}", &fresh[..fresh.len() - 1]);
    let dom = b.dom(&forged, "en")?;
    check!(tag(&dom, "balance").is_none() && dom.contains("Not a genuine card"), "a forged link: {dom}");
    let r = s.post(&format!("/v1/cards/{}/block", c.card.id), &s.operator, &json!({"reason": "lost"}))?;
    r.expect(200)?;
    let dom = b.dom(&tap_url(s, &c.card), "en")?;
    check!(tag(&dom, "balance").is_none() && dom.contains("This card is blocked"), "a blocked card: {dom}");
    let (status, body) = raw(s, "/t", "en")?;
    check!(status == 200 && body.contains("Hold your card to the phone"), "/t: {status} {body}");
    self_contained("/t", &body)
}

/// `/receipts/{seq}`: the details, and "Verified" from the browser's own checks; through a
/// lying proxy, the check that each lie breaks; a wrong link shows nothing.
pub fn receipt_page(backend: Backend) -> TestResult {
    let c = City::new(backend, "75000.00")?;
    let s = &c.s;
    for amount in ["1000.00", "2000.00", "3000.00"] {
        c.pay(&c.card, amount)?.expect(201)?;
    }
    let v = c.pay(&c.card, "12500.00")?.expect(201)?.clone();
    for amount in ["10.00", "20.00"] {
        c.pay(&c.card, amount)?.expect(201)?;
    }
    let seq = id(&v)?;
    let url = v["receipt_url"].as_str().ok_or("receipt_url")?.to_owned();
    s.checkpoint_covering(s.tree_size()?)?;
    let b = Browser::new()?;
    let dom = b.dom(&format!("{}{url}", s.base), "en")?;
    check_eq!(attr(&dom, "verify-status", "data-state"), Some("ok".into()), "{dom}");
    let status = text(&dom, "verify-status").unwrap_or_default();
    check!(
        status.starts_with(&format!("Verified: this payment is entry {seq} of the city's books, signed at 20")),
        "{status}"
    );
    check_eq!(text(&dom, "r-amount"), Some("Rp 12.500,00".into()));
    check_eq!(text(&dom, "r-fee"), Some("Rp 87,50".into()));
    check_eq!(text(&dom, "r-place"), Some("Toko Sinar".into()));
    check_eq!(text(&dom, "r-leaf-hash").as_deref(), v["leaf_hash"].as_str());
    let (status, body) = raw(s, &url, "id")?;
    check!(
        status == 200 && body.contains("Terverifikasi") && body.contains("Verifikasi memerlukan JavaScript"),
        "{body}"
    );
    self_contained(&url, &body)?;
    // The leaf hash is the link's capability: another hash, or none, shows nothing.
    let wrong = format!("/receipts/{seq}?h={}", "0".repeat(64));
    for path in [wrong.as_str(), &format!("/receipts/{seq}"), "/receipts/999999?h=00", "/receipts/x"] {
        let (status, body) = raw(s, path, "en")?;
        check!(status == 404 && body.contains("Receipt not found") && !body.contains("Toko Sinar"), "{path}: {status}");
    }
    receipt_json(s, &seq, v["leaf_hash"].as_str().ok_or("leaf_hash")?)?;
    let proxy = Proxy::start(&s.base)?;
    for (lie, check) in [
        (Tamper::LeafBytes, "leaf"),
        (Tamper::Details, "details"),
        (Tamper::InclusionProof, "proof"),
        (Tamper::Signature, "signature"),
    ] {
        proxy.set(lie.clone());
        let before = proxy.changed();
        let dom = b.dom(&format!("{}{url}", proxy.base), "en")?;
        check!(proxy.changed() > before, "{lie:?} changed nothing");
        check_eq!(attr(&dom, "verify-status", "data-state"), Some("failed".into()), "{lie:?}: {dom}");
        check_eq!(attr(&dom, "verify-status", "data-check"), Some(check.into()), "{lie:?}");
        check!(text(&dom, "verify-status").unwrap_or_default().starts_with("Failed:"), "{lie:?}: {dom}");
    }
    // A script swapped on the way does not run (Subresource Integrity): nothing is verified.
    proxy.set(Tamper::Script);
    let before = proxy.changed();
    let dom = Browser::new()?.dom(&format!("{}{url}", proxy.base), "en")?;
    check!(proxy.changed() > before, "the script was not swapped");
    check_eq!(attr(&dom, "verify-status", "data-state"), Some("nojs".into()), "a swapped script ran: {dom}");
    proxy.set(Tamper::Honest);
    let dom = b.dom(&format!("{}{url}", proxy.base), "id")?;
    check_eq!(attr(&dom, "verify-status", "data-check"), Some("ok".into()), "through an honest proxy: {dom}");
    Ok(())
}

/// `GET /v1/receipts/{seq}?h=`: the leaf bytes hash (RFC 9162, independently) to the
/// receipt's hash and say what the receipt says; another hash is 404, none 400.
fn receipt_json(s: &Server, seq: &str, hash: &str) -> TestResult {
    let r = s.get_public(&format!("/v1/receipts/{seq}?h={hash}"))?;
    let v = r.expect(200)?;
    let leaf = hex::decode(v["leaf"].as_str().ok_or("leaf")?).map_err(support::s)?;
    check_eq!(hex::encode(crate::rfc9162::leaf_hash(&leaf)), hash.to_owned());
    check_eq!(leaf[2..10].to_vec(), seq.parse::<i64>().map_err(support::s)?.to_be_bytes().to_vec(), "the leaf's seq");
    check_eq!(
        (v["kind"].clone(), v["amount"]["amount"].clone(), v["place"].clone()),
        (json!("payment"), json!("12500.00"), json!("Toko Sinar"))
    );
    s.get_public(&format!("/v1/receipts/{seq}?h={}", "0".repeat(64)))?.problem(404, "not_found")?;
    s.get_public(&format!("/v1/receipts/{seq}"))?.problem(400, "invalid_query")?;
    Ok(())
}

/// `/transparency`: the day's totals equal the sums of what this test did, per category,
/// per service and by refusal reason; the 30-day chart ends with today's amount; the log's
/// size; every page is self-contained and readable without a script.
pub fn books_page(backend: Backend) -> TestResult {
    let c = City::new(backend, "75000.00")?;
    let s = &c.s;
    let p = c.pay(&c.card, "12500.00")?.expect(201)?.clone();
    s.post("/v1/payments", &c.pos_b, &json!({"tap": s.tap(&c.card), "amount": "2500.50"}))?.expect(201)?;
    let r = s.post(&format!("/v1/payments/{}/refunds", id(&p)?), &c.pos_a, &json!({"amount": "1000.00"}))?;
    r.expect(201)?;
    let r = s.post(
        "/v1/service-points",
        &s.operator,
        &json!({"name": "Puskesmas Mamajang", "service": "clinic", "policy": {"categories": ["resident"], "timezone": "Asia/Makassar"}}),
    )?;
    let sp = id(r.expect(201)?)?;
    let desk = s.credential("service_point", "desk", Some(("service_point_id", &sp)))?;
    let stranger = s.card(&s.holder("Budi Santoso", "7371010101900002", &[])?, 2)?;
    for card in [&c.card, &stranger, &stranger] {
        s.post("/v1/access-checks", &desk, &json!({"tap": s.tap(card)}))?.expect(200)?;
    }
    let b = Browser::new()?;
    let dom = b.dom(&format!("{}/transparency", s.base), "en")?;
    let value = |id: &str, name: &str| attr(&dom, id, name).unwrap_or_default();
    let summary = ["s-payments", "s-paid", "s-refunded", "s-topups", "s-decisions"].map(|i| {
        if i.ends_with("payments") || i.ends_with("decisions") {
            value(i, "data-value")
        } else {
            value(i, "data-minor")
        }
    });
    check_eq!(summary, ["2", "1500050", "100000", "7500000", "3"].map(String::from), "{dom}");
    check_eq!(text(&dom, "s-paid"), Some("Rp 15.000,50".into()));
    let categories: Vec<[String; 4]> = tags_with(&dom, "data-category")
        .iter()
        .map(|t| {
            ["data-category", "data-payments", "data-amount-minor", "data-refunded-minor"]
                .map(|a| attr_in(t, a).unwrap_or_default())
        })
        .collect();
    check_eq!(
        categories,
        vec![["grocery", "1", "1250000", "100000"].map(String::from), ["hotel", "1", "250050", "0"].map(String::from)]
    );
    let services: Vec<[String; 3]> = tags_with(&dom, "data-service")
        .iter()
        .map(|t| ["data-service", "data-allowed", "data-denied"].map(|a| attr_in(t, a).unwrap_or_default()))
        .collect();
    check_eq!(services, vec![["clinic", "1", "2"].map(String::from)]);
    let reasons: Vec<[String; 2]> = tags_with(&dom, "data-reason")
        .iter()
        .map(|t| ["data-reason", "data-count"].map(|a| attr_in(t, a).unwrap_or_default()))
        .collect();
    check_eq!(reasons, vec![["not_entitled", "2"].map(String::from)]);
    let bars: Vec<String> =
        tags_with(&dom, "data-day").iter().map(|t| attr_in(t, "data-value").unwrap_or_default()).collect();
    check_eq!(bars.len(), 30);
    check!(bars[..29].iter().all(|v| v == "0") && bars[29] == "1500050", "chart: {bars:?}");
    check!(value("log-size", "data-value").parse::<i64>().map_err(support::s)? >= 1, "log size");
    for secret in ["Andi", "Budi", "7371010101900001", c.card.uid.as_str()] {
        check!(!dom.contains(secret), "the books show {secret:?}");
    }
    around_the_books(s, &b)
}

/// The other days, `/audit`, the assets and the language switch: self-contained pages.
fn around_the_books(s: &Server, b: &Browser) -> TestResult {
    for path in ["/transparency", "/transparency?date=2001-01-01", "/audit", "/assets/kartu.js", "/assets/kartu.css"] {
        let (status, body) = raw(s, path, "id")?;
        check!(status == 200, "{path}: {status}");
        self_contained(path, &body)?;
    }
    // The switch: `?lang=` chooses, and the browser's cookie remembers it.
    let chosen = b.dom(&format!("{}/audit?lang=en", s.base), "id")?;
    let remembered = b.dom(&format!("{}/audit", s.base), "id")?;
    for dom in [&chosen, &remembered] {
        check!(dom.contains("<html lang=\"en\"") && dom.contains("For auditors"), "{dom}");
    }
    check!(raw(s, "/audit", "id")?.1.contains("Untuk auditor"), "without the cookie: Indonesian");
    let (_, audit) = raw(s, "/audit", "en")?;
    check!(audit.contains(&s.verifier_key) && audit.contains("kartu audit verify"), "/audit: {audit}");
    // Commands are set as code, not as literal backticks.
    check!(!audit.contains('`') && audit.contains("<code>kartu audit verify --url "), "/audit: {audit}");
    let source = include_str!("../../assets/kartu.js");
    let published = hex::encode(ring::digest::digest(&ring::digest::SHA256, source.as_bytes()));
    check_eq!(text(&audit, "script-sha256"), Some(published));
    check_eq!(raw(s, "/assets/kartu.js", "en")?.1, source.to_owned());
    let (status, _) = raw(s, "/transparency?date=yesterday", "en")?;
    check_eq!(status, 400);
    Ok(())
}

/// "Check the books": the browser remembers the checkpoint it saw, accepts a newer one only
/// with a valid consistency proof, and refuses a rolled-back log and a forged proof.
pub fn check_the_books(backend: Backend) -> TestResult {
    let c = City::new(backend, "75000.00")?;
    let s = &c.s;
    let proxy = Proxy::start(&s.base)?;
    let b = Browser::new()?;
    let page = format!("{}/transparency#check", proxy.base);
    let checked = |lang: &str| -> Result<(String, String, String), String> {
        let dom = b.dom(&page, lang)?;
        let get = |a: &str| attr(&dom, "check-status", a).unwrap_or_default();
        Ok((get("data-state"), get("data-check"), text(&dom, "check-status").unwrap_or_default()))
    };
    let first = s.checkpoint_covering(s.tree_size()?)?;
    let first_size: i64 = first.lines().nth(1).and_then(|l| l.parse().ok()).ok_or("size")?;
    let (state, check, said) = checked("en")?;
    check_eq!((state.as_str(), check.as_str()), ("ok", "first"), "{said}");
    check!(said.contains(&format!("size {first_size}")), "{said}");
    let grow = || -> TestResult {
        let before = s.tree_size()?;
        c.pay(&c.card, "100.00")?.expect(201)?;
        c.pay(&c.card, "200.00")?.expect(201)?;
        s.checkpoint_covering(before + 2).map(|_| ())
    };
    grow()?;
    let (state, check, said) = checked("en")?;
    check_eq!((state.as_str(), check.as_str()), ("ok", "extends"), "{said}");
    // The server (or the network) serves the first checkpoint again: a rolled-back log.
    proxy.set(Tamper::Checkpoint(first));
    let (state, check, said) = checked("id")?;
    check_eq!((state.as_str(), check.as_str()), ("failed", "rollback"), "{said}");
    check!(said.starts_with("Gagal"), "{said}");
    // A newer checkpoint with a forged consistency proof.
    proxy.set(Tamper::Honest);
    grow()?;
    proxy.set(Tamper::ConsistencyProof);
    let (state, check, said) = checked("en")?;
    check_eq!((state.as_str(), check.as_str()), ("failed", "consistency"), "{said}");
    // The truth again: the browser still trusts what it saw last and accepts the extension.
    proxy.set(Tamper::Honest);
    let (state, check, said) = checked("en")?;
    check_eq!((state.as_str(), check.as_str()), ("ok", "extends"), "{said}");
    Ok(())
}

/// RFC 9162's published vectors (shared/VECTORS.md), for `kartu.js`'s own checks.
const ROOT6: &str = "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef";
const ROOT8: &str = "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328";
const INCLUSION_0_8: [&str; 3] = [
    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
];
const CONSISTENCY_6_8: [&str; 3] = [
    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
];

/// The self-test page: runs `window.kartuVerify` over the vectors and a note signed here with
/// ring, and writes each result into `#out` as JSON.
const SELF_TEST_PAGE: &str = r#"<!DOCTYPE html><html><body><pre id="out">running</pre>
<script src="kartu.js"></script><script>
(async function () {
  var k = window.kartuVerify, out = [];
  var hex = function (h) { return new Uint8Array(h.match(/../g).map(function (b) { return parseInt(b, 16); })); };
  var toHex = function (b) { return Array.from(b, function (x) { return x.toString(16).padStart(2, '0'); }).join(''); };
  var V = __VECTORS__;
  async function run(name, f) {
    try { out.push([name, await f()]); } catch (e) { out.push([name, 'threw ' + (e.check || e)]); }
  }
  var leaf0 = await k.leafHash(new Uint8Array(0));
  await run('inclusion', async function () { return toHex(await k.rootFromInclusion(0, 8, leaf0, V.inclusion.map(hex))) === V.root8; });
  await run('inclusion_other_index', async function () { return toHex(await k.rootFromInclusion(1, 8, leaf0, V.inclusion.map(hex))) !== V.root8; });
  await run('consistency', function () { return k.consistent(6, 8, hex(V.root6), hex(V.root8), V.consistency.map(hex)); });
  await run('consistency_forged', async function () {
    var forged = V.consistency.map(hex); forged[1][0] ^= 1;
    return !(await k.consistent(6, 8, hex(V.root6), hex(V.root8), forged));
  });
  await run('consistency_wrong_sizes', async function () { return !(await k.consistent(5, 8, hex(V.root6), hex(V.root8), V.consistency.map(hex))); });
  await run('checkpoint', async function () {
    var cp = await k.verifyCheckpoint(V.note, V.key);
    return cp.size === 8 && toHex(cp.root) === V.root8 && cp.time === '2026-12-07T00:00:00Z';
  });
  await run('checkpoint_other_key', async function () {
    try { await k.verifyCheckpoint(V.note, V.other_key); return false; } catch (e) { return e.check === 'signature'; }
  });
  await run('checkpoint_changed_size', async function () {
    try { await k.verifyCheckpoint(V.note.replace('\n8\n', '\n9\n'), V.key); return false; } catch (e) { return e.check === 'signature'; }
  });
  document.getElementById('out').textContent = JSON.stringify(out);
})();
</script></body></html>"#;

/// A checkpoint note of the vectors' tree of 8, signed with ring (not with Kartu's
/// signer) under a key whose base64 holds a `+` and a `/`, and that key's verifier line.
fn signed_note(origin: &str) -> Result<(String, String), String> {
    use base64::Engine as _;
    use ring::signature::KeyPair as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let rng = ring::rand::SystemRandom::new();
    for _ in 0..1000 {
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| "keygen")?;
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).map_err(|_| "key")?;
        let mut key = vec![0x01];
        key.extend_from_slice(pair.public_key().as_ref());
        let encoded = b64.encode(&key);
        if !(encoded.contains('+') && encoded.contains('/')) {
            continue;
        }
        let name_line = format!("{origin}\n");
        let id_input = [name_line.as_bytes(), &key].concat();
        let digest = ring::digest::digest(&ring::digest::SHA256, &id_input);
        let key_id = &digest.as_ref()[..4];
        let root = hex::decode(ROOT8).map_err(s)?;
        let text = format!("{origin}\n8\n{}\ntime 2026-12-07T00:00:00Z\n", b64.encode(root));
        let sig = [key_id, pair.sign(text.as_bytes()).as_ref()].concat();
        let note = format!("{text}\n\u{2014} {origin} {}\n", b64.encode(sig));
        return Ok((note, format!("{origin}+{}+{encoded}", hex::encode(key_id))));
    }
    Err("no key with + and / in 1000 tries".into())
}

/// `kartu.js`'s Merkle and note checks against RFC 9162's published vectors and a note
/// signed with ring, in the browser (no server: the page is a file).
pub fn script_self_test() -> TestResult {
    let (note, key) = signed_note("city.example/log")?;
    let (_, other_key) = signed_note("city.example/log")?;
    let vectors = json!({
        "root6": ROOT6, "root8": ROOT8, "inclusion": INCLUSION_0_8, "consistency": CONSISTENCY_6_8,
        "note": note, "key": key, "other_key": other_key,
    });
    let dir = tempfile::tempdir().map_err(s)?;
    std::fs::write(dir.path().join("kartu.js"), include_str!("../../assets/kartu.js")).map_err(s)?;
    let page = dir.path().join("self-test.html");
    std::fs::write(&page, SELF_TEST_PAGE.replace("__VECTORS__", &vectors.to_string())).map_err(s)?;
    let dom = Browser::new()?.dom(&format!("file://{}", page.display()), "en")?;
    let results: serde_json::Value =
        serde_json::from_str(&text(&dom, "out").unwrap_or_default()).map_err(|e| format!("{e}: {dom}"))?;
    let names: Vec<&str> = results.as_array().ok_or("results")?.iter().filter_map(|r| r[0].as_str()).collect();
    check_eq!(names.len(), 8, "{results}");
    for r in results.as_array().ok_or("results")? {
        check_eq!(r[1], json!(true), "{}", r[0]);
    }
    Ok(())
}
