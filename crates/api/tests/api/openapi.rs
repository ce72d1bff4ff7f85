//! The OpenAPI 3.1 document and the routes the server answers; health and metrics.

use std::collections::BTreeSet;

use serde_json::{json, Value};

use crate::support::{Backend, Body, City, Server, TestResult};

const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

/// Every `$ref` in the document, with where it was found.
fn refs(v: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(o) => {
            for (k, x) in o {
                if k == "$ref" {
                    out.push((at.to_owned(), x.as_str().unwrap_or("<not a string>").to_owned()));
                } else {
                    refs(x, &format!("{at}/{k}"), out);
                }
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, x)| refs(x, &format!("{at}/{i}"), out)),
        _ => {}
    }
}

pub fn openapi_document_and_routes(backend: Backend) -> TestResult {
    let c = City::new(backend, "0.00")?;
    let s = &c.s;
    let r = s.get_public("/openapi.json")?;
    let doc = r.expect(200)?.clone();
    check!(r.content_type.starts_with("application/json"), "content type {}", r.content_type);
    check!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "openapi version {}", doc["openapi"]);
    check!(doc["info"]["title"].is_string() && doc["info"]["version"].is_string(), "info: {}", doc["info"]);
    let documented = every_operation_is_well_formed(&doc)?;
    every_ref_resolves_and_every_route_is_documented(&doc, documented)?;
    every_route_answers(s)?;
    check_contract(&doc)?;
    leaves_page_with_their_cursor(s)?;
    unknown_routes_and_methods_are_problems(s)
}

/// Every path of the document has operations, each with responses that have a valid
/// status and a description, and declares its path parameters. Returns the documented
/// (method, path) pairs.
fn every_operation_is_well_formed(doc: &Value) -> Result<BTreeSet<(String, String)>, String> {
    let paths = doc["paths"].as_object().ok_or("paths")?;
    let mut documented = BTreeSet::new();
    for (path, item) in paths {
        check!(path.starts_with('/'), "path {path}");
        let item = item.as_object().ok_or_else(|| format!("path item {path}"))?;
        let operations: Vec<&String> = item.keys().filter(|k| METHODS.contains(&k.as_str())).collect();
        check!(!operations.is_empty(), "{path} has no operation");
        for method in operations {
            let op = &item[method];
            let responses = op["responses"].as_object().ok_or_else(|| format!("{method} {path}: no responses"))?;
            check!(!responses.is_empty(), "{method} {path}: empty responses");
            for (status, resp) in responses {
                check!(
                    status == "default" || status.parse::<u16>().is_ok_and(|s| (100..600).contains(&s)),
                    "{method} {path}: status {status}"
                );
                check!(
                    resp["description"].is_string() || resp["$ref"].is_string(),
                    "{method} {path} {status}: description"
                );
            }
            // Path parameters are declared.
            for seg in path.split('/').filter(|seg| seg.starts_with('{')) {
                let name = seg.trim_matches(|c| c == '{' || c == '}');
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == json!(name) && p["in"] == json!("path") && p["required"] == json!(true))
                });
                check!(declared, "{method} {path}: path parameter {name} is not declared");
            }
            documented.insert((method.clone(), path.clone()));
        }
    }
    Ok(documented)
}

/// Every `$ref` resolves inside the document; the problem document and the bearer scheme
/// are described; the documented operations are exactly `api::openapi::ROUTES`.
fn every_ref_resolves_and_every_route_is_documented(doc: &Value, documented: BTreeSet<(String, String)>) -> TestResult {
    let mut found = Vec::new();
    refs(doc, "#", &mut found);
    check!(!found.is_empty(), "the document uses components");
    for (at, target) in &found {
        let pointer =
            target.strip_prefix("#/components/").ok_or_else(|| format!("{at}: $ref {target} leaves the document"))?;
        check!(doc.pointer(&format!("/components/{pointer}")).is_some(), "{at}: $ref {target} does not resolve");
    }
    // The problem document is described.
    check!(doc.pointer("/components/schemas/Problem/properties/code").is_some(), "Problem schema");
    check!(doc.pointer("/components/securitySchemes/bearer").is_some(), "bearer security scheme");
    let routes: BTreeSet<(String, String)> =
        api::openapi::ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    check_eq!(documented, routes, "documented operations vs ROUTES");
    Ok(())
}

/// Every route answers (with a placeholder id and an operator token): never the default
/// "no such route".
fn every_route_answers(s: &Server) -> TestResult {
    for (method, path) in api::openapi::ROUTES {
        let concrete = path.replace("{id}", "1");
        let query = if path.contains("inclusion") {
            "?leaf_index=0&tree_size=1"
        } else if path.contains("consistency") {
            "?first=1&second=1"
        } else {
            ""
        };
        let body = json!({});
        let r = s.send(
            &method.to_uppercase(),
            &format!("{concrete}{query}"),
            Some(&s.operator),
            Some(&s.key()),
            if *method == "post" { Body::Json(&body) } else { Body::None },
        )?;
        check!(
            !(r.status == 404 && r.json["detail"] == json!("no such route")),
            "{method} {path} is not routed: {}",
            r.text
        );
        check!(r.status != 405 && r.status < 500, "{method} {path}: {} {}", r.status, r.text);
    }
    Ok(())
}

/// `GET /v1/audit/leaves` continues where its `next_cursor` says.
fn leaves_page_with_their_cursor(s: &Server) -> TestResult {
    let page = s.get("/v1/audit/leaves?limit=2", &s.operator)?;
    let cursor = page.expect(200)?["next_cursor"].as_str().ok_or("a cursor after a full page")?.to_owned();
    let next = s.get(&format!("/v1/audit/leaves?limit=2&cursor={cursor}"), &s.operator)?;
    check_eq!(next.expect(200)?["leaves"][0]["leaf_index"], json!(2), "the page after the cursor");
    s.get(&format!("/v1/audit/leaves?from=0&cursor={cursor}"), &s.operator)?.problem(400, "invalid_query")?;
    s.get("/v1/audit/leaves?cursor=x", &s.operator)?.problem(400, "invalid_query")?;
    Ok(())
}

/// Unknown routes are problem+json 404s; a method a route does not take is a 405 that
/// names the methods it takes; the shared parts' answers are documented; the docs UI is
/// served.
fn unknown_routes_and_methods_are_problems(s: &Server) -> TestResult {
    s.get("/v1/nothing-here", &s.operator)?.problem(404, "not_found")?;
    let r = s.send("PUT", "/v1/holders", Some(&s.operator), None, Body::None)?;
    r.problem(405, "method_not_allowed")?;
    check_eq!(r.header("allow"), Some("POST, GET"));
    let r = s.send("PUT", "/v1/service-points", Some(&s.operator), None, Body::None)?;
    r.problem(405, "method_not_allowed")?;
    check_eq!(r.header("allow"), Some("POST"));
    let r = s.send("DELETE", "/v1/payments", Some(&s.operator), None, Body::None)?;
    r.problem(405, "method_not_allowed")?;
    check_eq!(r.header("allow"), Some("POST, GET"));
    s.send("POST", "/v1/cards/7", Some(&s.operator), None, Body::None)?.problem(405, "method_not_allowed")?;
    let r = s.send("GET", "/v1/offline/journals", Some(&s.operator), None, Body::None)?;
    r.problem(405, "method_not_allowed")?;
    check_eq!(r.header("allow"), Some("POST"));
    // The answers the shared parts give, each documented (the conformance check of every
    // response holds them to the document).
    s.send("POST", "/v1/holders", Some(&s.operator), None, Body::Json(&json!({})))?
        .problem(400, "idempotency_key_required")?;
    s.post_empty("/v1/holders", &s.operator)?.problem(415, "unsupported_media_type")?;
    s.send("GET", "/v1/cards/1", None, None, Body::None)?.problem(401, "unauthorized")?;
    s.get("/v1/audit/entries?limit=0", &s.operator)?.problem(400, "invalid_query")?;
    s.get("/v1/audit/access-log?service_point_id=abc", &s.operator)?.problem(404, "not_found")?;
    // The docs UI.
    let r = s.get_public("/docs/")?;
    check!(
        r.status == 200 && r.text.to_lowercase().contains("swagger"),
        "/docs/: {} {}",
        r.status,
        &r.text[..r.text.len().min(200)]
    );
    let r = s.get_public("/docs")?;
    check!(r.status == 200 || (300..400).contains(&r.status), "/docs: {}", r.status);
    Ok(())
}

pub fn health_and_metrics(backend: Backend) -> TestResult {
    let c = City::new(backend, "10000.00")?;
    let s: &Server = &c.s;
    check_eq!(s.get_public("/healthz")?.expect(200)?["status"], json!("ok"));
    let r = s.get_public("/readyz")?;
    let v = r.expect(200)?;
    check_eq!(v["status"], json!("ready"));
    check!(v["tree_size"].as_i64().is_some_and(|n| n > 0), "tree size {v}");
    c.pay(&c.card, "100.00")?.expect(201)?;
    c.pay(&c.card, "100000.00")?.problem(422, "insufficient_funds")?;
    s.get("/v1/cards/424242", &s.operator)?.problem(404, "not_found")?;
    let r = s.get_public("/metrics")?;
    check!(r.status == 200 && r.content_type.starts_with("text/plain"), "metrics: {} {}", r.status, r.content_type);
    let m = &r.text;
    let has = |needle: &str| m.lines().any(|l| l.starts_with(needle));
    check!(has("kartu_payments_total{operation=\"payment\",result=\"approved\"} 1"), "approved payment counted:\n{m}");
    check!(
        has("kartu_payments_total{operation=\"payment\",result=\"insufficient_funds\"} 1"),
        "refused payment counted:\n{m}"
    );
    // Requests by route pattern, never by raw path (which carries ids).
    check!(
        has("kartu_http_requests_total{method=\"POST\",route=\"/v1/payments\",status=\"201\"} 1"),
        "requests by route:\n{m}"
    );
    check!(
        has("kartu_http_requests_total{method=\"GET\",route=\"/v1/cards/{id}\",status=\"404\"} 1"),
        "route pattern:\n{m}"
    );
    check!(!m.contains("/v1/cards/424242"), "a raw path in the metrics");
    check!(has("kartu_http_request_duration_seconds_bucket"), "latency histogram");
    check!(has("kartu_audit_tree_size "), "tree size gauge");
    // A replayed tap: counted once by the writer, as a Prometheus counter.
    let tap = s.tap(&c.card);
    s.post("/v1/payments", &c.pos_a, &json!({"tap": tap, "amount": "1.00"}))?.expect(201)?;
    s.post("/v1/payments", &c.pos_a, &json!({"tap": tap, "amount": "1.00"}))?.problem(409, "card_replay")?;
    let m = s.get_public("/metrics")?.text;
    prometheus_conventions(&m)?;
    let value = |name: &str| m.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')).map(str::to_owned);
    check_eq!(value("kartu_card_replays_total").as_deref(), Some("1"));
    check_eq!(value("kartu_writer_failed_batches_total").as_deref(), Some("0"));
    check_eq!(value("kartu_writer_halted").as_deref(), Some("0"));
    check_eq!(value("kartu_offline_risk_exposure_minor").as_deref(), Some("0"));
    check_eq!(value("kartu_offline_risk_cap_minor").as_deref(), Some("500000000"));
    let batches: u64 = value("kartu_writer_batches_total").and_then(|v| v.parse().ok()).unwrap_or(0);
    check!(batches >= 3, "writer batches {batches}");
    alert_rules_name_exported_metrics(&m)?;
    Ok(())
}

/// The scrape as Prometheus reads it: every `_total` family is a counter (not a gauge that
/// a restart or a `rate()` would misread), and `promtool check metrics` finds nothing.
fn prometheus_conventions(scrape: &str) -> TestResult {
    for line in scrape.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
        let (name, kind) = line.split_once(' ').unwrap_or((line, ""));
        if name.ends_with("_total") {
            check_eq!((name, kind), (name, "counter"));
        }
    }
    let lint = promtool(&["check", "metrics"], Some(scrape))?;
    check!(lint.trim().is_empty(), "promtool check metrics:\n{lint}");
    Ok(())
}

/// The alert rules in deploy/prometheus/ load and pass their own unit tests (`promtool`),
/// and every metric they name is one this server exports: a renamed metric would silence
/// an alert without anyone noticing.
fn alert_rules_name_exported_metrics(scrape: &str) -> TestResult {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus");
    let rules = dir.join("kartu.rules.yml");
    let rules_path = rules.to_str().ok_or("path")?;
    promtool(&["check", "rules", rules_path], None)?;
    promtool(&["test", "rules", dir.join("kartu.rules.test.yml").to_str().ok_or("path")?], None)?;
    let text = std::fs::read_to_string(&rules).map_err(|e| e.to_string())?;
    let mut named = 0;
    for expr in text.lines().filter_map(|l| l.trim().strip_prefix("expr:")) {
        for word in expr.split(|ch: char| !(ch.is_ascii_alphanumeric() || ch == '_')) {
            if word.starts_with("kartu_") {
                named += 1;
                let declared = format!("# TYPE {word} ");
                check!(scrape.lines().any(|l| l.starts_with(&declared)), "the rules name {word}, which /metrics lacks");
            }
        }
    }
    check!(named >= 6, "{named} metric names found in the rules");
    Ok(())
}

/// Runs Prometheus' `promtool` (scripts/setup.sh installs it); its output, or why it failed.
fn promtool(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("promtool")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool (scripts/setup.sh installs it): {e}"))?;
    let mut input = child.stdin.take().ok_or("stdin")?;
    input.write_all(stdin.unwrap_or("").as_bytes()).map_err(|e| e.to_string())?;
    drop(input);
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    check!(out.status.success(), "promtool {args:?}: {}\n{text}", out.status);
    Ok(text)
}

/// The routes anyone may call: the document declares them with no security requirement.
const PUBLIC: [(&str, &str); 12] = [
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/v1/audit/checkpoints/latest"),
    ("get", "/v1/audit/public-key"),
    ("get", "/v1/audit/public-keys"),
    ("get", "/v1/audit/proofs/inclusion"),
    ("get", "/v1/audit/proofs/consistency"),
    ("get", "/v1/transparency"),
    ("get", "/v1/receipts/{seq}"),
    ("get", "/v1/transit/routes"),
    ("get", "/v1/transit/fares"),
];

/// What every operation of the document says: errors as problem+json; a public route
/// declares no security, every other one inherits the bearer and documents 401 and 403; a
/// write documents its Idempotency-Key (bounded) and 400 and 409; a body 415 and 422; a
/// path id 404; `limit` is bounded.
fn check_contract(doc: &Value) -> TestResult {
    check_eq!(doc["security"], json!([{"bearer": []}]), "the default is the bearer");
    for (method, path) in api::openapi::ROUTES {
        let op = &doc["paths"][path][method];
        let at = format!("{method} {path}");
        let public = PUBLIC.contains(&(method, path));
        check_eq!(op["security"] == json!([{}]), public, "{at}: public {public}, security {}", op["security"]);
        let responses = op["responses"].as_object().ok_or_else(|| format!("{at}: responses"))?;
        for (status, r) in responses.iter().filter(|(s, _)| s.as_str() >= "400") {
            let types: Vec<&String> = r["content"].as_object().map(|c| c.keys().collect()).unwrap_or_default();
            check_eq!(types, vec!["application/problem+json"], "{at} {status}");
            check!(r["description"].as_str().is_some_and(|d| !d.is_empty()), "{at} {status}: says why");
        }
        let has = |status: &str| responses.contains_key(status);
        if !public {
            check!(has("401") && has("403") && has("429"), "{at}: 401, 403, 429");
        }
        let params = op["parameters"].as_array().cloned().unwrap_or_default();
        let key = params.iter().find(|p| p["name"] == "Idempotency-Key");
        if let Some(key) = key {
            check_eq!(key["required"], json!(true), "{at}: Idempotency-Key required");
            check_eq!(key["schema"]["maxLength"], json!(100), "{at}: Idempotency-Key bounded");
            check!(has("400") && has("409") && has("507"), "{at}: 400, 409, 507 of a write");
        }
        check_eq!(key.is_some(), *method != "get", "{at}: every write takes an Idempotency-Key");
        if op.get("requestBody").is_some() {
            check!(has("415") && has("422") && has("413"), "{at}: 413, 415, 422 of a body");
        }
        if path.contains('{') {
            check!(has("404"), "{at}: 404 of a path id");
        }
        for limit in params.iter().filter(|p| p["name"] == "limit") {
            check!(
                limit["schema"]["minimum"] == json!(1) && limit["schema"]["maximum"].is_number(),
                "{at}: limit bounds"
            );
        }
    }
    Ok(())
}

/// Every answer carries a `Request-Id` (made here, or a load balancer's when it is a plain
/// token), each request its own; a problem+json says the same id in `request_id`.
pub fn request_ids(backend: Backend) -> TestResult {
    let s = Server::start(backend)?;
    let header = |r: &crate::support::Resp| r.header("request-id").map(str::to_owned).unwrap_or_default();
    let made = |id: &str| {
        let (prefix, counter) = id.split_once('-').unwrap_or(("", ""));
        prefix.len() == 8 && counter.len() == 10 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
    };
    let (a, b) = (s.get_public("/healthz")?, s.get_public("/healthz")?);
    check!(made(&header(&a)) && made(&header(&b)) && header(&a) != header(&b), "{} {}", header(&a), header(&b));
    let r = s.get_public("/v1/audit/trial-balance")?;
    r.problem(401, "unauthorized")?;
    check!(made(&header(&r)), "{}", header(&r));
    check_eq!(r.json["request_id"], json!(header(&r)));
    let r = s.get("/v1/audit/trial-balance", "kt_nobody")?;
    check_eq!(r.json["request_id"], json!(header(&r)), "{}", r.text);
    // A load balancer's id is kept; one that is not a plain token is replaced.
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for (sent, kept) in [("lb-7f3a_0001", true), ("bad id!", false), (&*"x".repeat(65), false)] {
        let r =
            agent.get(format!("{}/v1/cards/1", s.base)).header("request-id", sent).call().map_err(crate::support::s)?;
        let got = r.headers().get("request-id").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
        check_eq!(got == sent, kept, "sent {sent:?}, got {got:?}");
        check!(kept || made(&got), "{got}");
    }
    Ok(())
}

/// `/readyz` says `checkpoint_behind` once the oldest leaf no checkpoint covers is older
/// than `checkpoint_lag_max_ms`, here with a signer that signs once a minute.
pub fn readyz_checkpoint_behind(backend: Backend) -> TestResult {
    let s = Server::start_with(backend, |c| {
        c.replace("checkpoint_interval_ms = 100\n", "checkpoint_interval_ms = 60000\n")
            .replace("checkpoint_lag_max_ms = 10000", "checkpoint_lag_max_ms = 400")
    })?;
    s.get_public("/readyz")?.expect(200)?;
    // An operator action is a leaf; until the signer's next turn no checkpoint covers it.
    s.holder("Ani Wijaya", "7371010101900009", &[])?;
    s.get_public("/readyz")?.expect(200)?;
    std::thread::sleep(std::time::Duration::from_millis(600));
    let r = s.get_public("/readyz")?;
    r.problem(503, "checkpoint_behind")?;
    check!(r.json["detail"].as_str().unwrap_or("").contains("at most 0.4 s"), "{}", r.text);
    Ok(())
}

/// `/readyz` says `writer_stuck` while one writer batch runs longer than
/// `writer_stall_max_ms`: here another connection holds the write lock (SQLite `BEGIN
/// IMMEDIATE`, PostgreSQL the head row `FOR UPDATE`) while a write waits for it; once the
/// lock is let go the write goes through and the server is ready again.
pub fn readyz_writer_stuck(backend: Backend) -> TestResult {
    use diesel::connection::SimpleConnection as _;
    use diesel::Connection as _;
    let s = Server::start_with(backend, |c| c.replace("writer_stall_max_ms = 10000", "writer_stall_max_ms = 300"))?;
    s.get_public("/readyz")?.expect(200)?;
    let url = s.owner_url().to_owned();
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || -> TestResult {
        let hold = std::time::Duration::from_millis(1500);
        match url.strip_prefix("sqlite://") {
            Some(path) => {
                let mut c = diesel::sqlite::SqliteConnection::establish(path).map_err(crate::support::s)?;
                c.batch_execute("BEGIN IMMEDIATE").map_err(crate::support::s)?;
                let _ = locked_tx.send(());
                std::thread::sleep(hold);
                c.batch_execute("COMMIT").map_err(crate::support::s)
            }
            None => {
                let mut c = diesel::pg::PgConnection::establish(&url).map_err(crate::support::s)?;
                c.batch_execute("BEGIN; SELECT 1 FROM ledger_head FOR UPDATE").map_err(crate::support::s)?;
                let _ = locked_tx.send(());
                std::thread::sleep(hold);
                c.batch_execute("COMMIT").map_err(crate::support::s)
            }
        }
    });
    locked_rx.recv_timeout(std::time::Duration::from_secs(10)).map_err(crate::support::s)?;
    std::thread::scope(|scope| -> TestResult {
        let write = scope.spawn(|| s.holder("Budi Santoso", "7371010101900008", &[]));
        std::thread::sleep(std::time::Duration::from_millis(700));
        let r = s.get_public("/readyz")?;
        r.problem(503, "writer_stuck")?;
        check!(r.json["detail"].as_str().unwrap_or("").contains("at most 0.3 s"), "{}", r.text);
        write.join().map_err(|_| "the write panicked")??;
        Ok(())
    })?;
    holder.join().map_err(|_| "the lock holder panicked")??;
    s.get_public("/readyz")?.expect(200)?;
    Ok(())
}
