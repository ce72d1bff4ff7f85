//! The published contract is the server's contract: every response the suite receives
//! through [`crate::support::Server::send`] is checked against the server's own
//! `/openapi.json` — its status must be documented for the route and method, its media type
//! among the documented ones, its JSON body valid under the documented schema (OpenAPI 3.1
//! schemas are JSON Schema 2020-12; `#/components/...` references resolve in the
//! document). Each (method, route template, status) seen is recorded; at the end of the
//! run [`report`] fails the run if any response was undocumented. [`self_test`] proves
//! the check can fail.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::{json, Value};

/// A response as the check sees it.
pub struct Seen<'a> {
    pub method: &'a str,
    /// The request's path, query included.
    pub path: &'a str,
    pub status: u16,
    pub content_type: &'a str,
    /// The `Allow` header, for a 405.
    pub allow: Option<&'a str>,
    pub text: &'a str,
}

/// A document and the validators built from it so far (by schema pointer).
pub struct Contract {
    doc: Value,
    validators: Mutex<HashMap<String, Arc<jsonschema::Validator>>>,
}

/// What the whole run saw: (method, route template, status) → count, and every response
/// that broke the contract.
#[derive(Default)]
struct Record {
    seen: BTreeMap<(String, String, u16), usize>,
    violations: Vec<String>,
}

fn record() -> &'static Mutex<Record> {
    static RECORD: OnceLock<Mutex<Record>> = OnceLock::new();
    RECORD.get_or_init(Default::default)
}

static CONTRACT: OnceLock<Contract> = OnceLock::new();

/// The contract of the server's document, fetched once per run by `fetch` (every server
/// of the suite serves the same document).
pub fn contract(fetch: impl FnOnce() -> Result<Value, String>) -> Result<&'static Contract, String> {
    if let Some(c) = CONTRACT.get() {
        return Ok(c);
    }
    let doc = fetch()?;
    Ok(CONTRACT.get_or_init(|| Contract::new(doc)))
}

/// Checks a response and records it; the error names what is undocumented.
pub fn observe(contract: &Contract, seen: &Seen<'_>) -> Result<(), String> {
    let result = contract.check(seen);
    let mut r = record().lock().map_err(|_| "conformance record poisoned")?;
    match &result {
        Ok(Some(template)) => {
            *r.seen.entry((seen.method.to_uppercase(), template.clone(), seen.status)).or_default() += 1;
        }
        Ok(None) => {}
        Err(e) => r.violations.push(e.clone()),
    }
    result.map(|_| ())
}

/// Prints the triples seen; `Err` listing every undocumented response, if any.
pub fn report() -> Result<(), String> {
    let r = record().lock().map_err(|_| "conformance record poisoned")?;
    if !r.seen.is_empty() {
        eprintln!("openapi conformance: {} (method, route, status) triples documented and seen", r.seen.len());
        for ((method, template, status), n) in &r.seen {
            eprintln!("  {method} {template} {status} ×{n}");
        }
    }
    if r.violations.is_empty() {
        return Ok(());
    }
    let mut unique: BTreeMap<&String, usize> = BTreeMap::new();
    for v in &r.violations {
        *unique.entry(v).or_default() += 1;
    }
    let lines: Vec<String> = unique.into_iter().map(|(v, n)| format!("{v} (×{n})")).collect();
    Err(format!(
        "{} responses broke the published contract (/openapi.json):\n  {}",
        r.violations.len(),
        lines.join("\n  ")
    ))
}

/// Paths outside the API's document: the documentation UI, the document itself, and the
/// HTML pages (`api::pages::PAGES`).
fn outside_the_document(path: &str) -> bool {
    let bare = path.split('?').next().unwrap_or(path);
    path == "/openapi.json"
        || path == "/docs"
        || path.starts_with("/docs/")
        || ["/t", "/transparency", "/audit"].contains(&bare)
        || bare.starts_with("/receipts/")
        || bare.starts_with("/assets/")
}

impl Contract {
    pub fn new(doc: Value) -> Contract {
        Contract { doc, validators: Mutex::new(HashMap::new()) }
    }

    /// The route template a concrete path matches (`{id}` matches one non-empty segment).
    fn template(&self, path: &str) -> Option<String> {
        let segments: Vec<&str> = path.split('/').collect();
        let paths = self.doc["paths"].as_object()?;
        paths
            .keys()
            .find(|t| {
                let t: Vec<&str> = t.split('/').collect();
                t.len() == segments.len()
                    && t.iter().zip(&segments).all(|(t, s)| t == s || (t.starts_with('{') && !s.is_empty()))
            })
            .cloned()
    }

    /// `Ok(Some(template))` for a documented response, `Ok(None)` for one outside the
    /// document (the docs UI), `Err` naming what the document does not say.
    pub fn check(&self, seen: &Seen<'_>) -> Result<Option<String>, String> {
        let path = seen.path.split('?').next().unwrap_or("");
        if outside_the_document(path) {
            return Ok(None);
        }
        // Named by route template, so one kind of undocumented answer is listed once.
        let what = format!("{} {} → {}", seen.method, self.template(path).as_deref().unwrap_or(path), seen.status);
        let Some(template) = self.template(path) else {
            // No route: the one documented answer is 404 problem+json.
            self.check_problem(seen, 404, &what)?;
            return Ok(None);
        };
        let method = seen.method.to_lowercase();
        let Some(op) = self.doc["paths"][&template].get(&method) else {
            self.check_method_not_allowed(seen, &template, &what)?;
            return Ok(None);
        };
        let status = seen.status.to_string();
        let response = op["responses"]
            .get(&status)
            .or_else(|| op["responses"].get("default"))
            .ok_or_else(|| format!("{what}: status {status} is not documented for {method} {template}"))?;
        self.check_content(response, seen, &what)?;
        Ok(Some(template))
    }

    /// The media type and body of a documented response.
    fn check_content(&self, response: &Value, seen: &Seen<'_>, what: &str) -> Result<(), String> {
        let content = response["content"].as_object();
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return if seen.text.is_empty() {
                Ok(())
            } else {
                Err(format!("{what}: a body is sent but none is documented"))
            };
        };
        let media = seen.content_type.split(';').next().unwrap_or("").trim();
        let Some(entry) = content.get(media) else {
            let documented: Vec<&String> = content.keys().collect();
            return Err(format!("{what}: content type {media:?} is not documented (documented: {documented:?})"));
        };
        if !(media == "application/json" || media.ends_with("+json")) {
            return Ok(());
        }
        let Some(schema) = entry.get("schema") else { return Ok(()) };
        let body: Value =
            serde_json::from_str(seen.text).map_err(|e| format!("{what}: the {media} body is not JSON: {e}"))?;
        let validator = self.validator(schema)?;
        let errors: Vec<String> =
            validator.iter_errors(&body).map(|e| format!("{} at {}", e, e.instance_path())).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!("{what}: the body does not match its schema: {}", errors.join("; ")))
        }
    }

    /// A problem+json answer of `status` with the `Problem` schema.
    fn check_problem(&self, seen: &Seen<'_>, status: u16, what: &str) -> Result<(), String> {
        if seen.status != status {
            return Err(format!("{what}: no route has this path, so only {status} is documented"));
        }
        let problem =
            json!({"content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}});
        self.check_content(&problem, seen, what)
    }

    /// A method the path does not take: 405 problem+json with an `Allow` header naming
    /// exactly the documented methods.
    fn check_method_not_allowed(&self, seen: &Seen<'_>, template: &str, what: &str) -> Result<(), String> {
        self.check_problem(seen, 405, &format!("{what} (the document has no {} {template})", seen.method))?;
        let documented: BTreeSet<String> = self.doc["paths"][template]
            .as_object()
            .map(|o| o.keys().filter(|k| k.as_str() != "parameters").map(|k| k.to_uppercase()).collect())
            .unwrap_or_default();
        let allow: BTreeSet<String> =
            seen.allow.unwrap_or("").split(',').map(|m| m.trim().to_owned()).filter(|m| !m.is_empty()).collect();
        if allow != documented {
            return Err(format!("{what}: Allow {allow:?}, but the document lists {documented:?}"));
        }
        Ok(())
    }

    /// The validator of a schema of the document, its references resolved in the document.
    fn validator(&self, schema: &Value) -> Result<Arc<jsonschema::Validator>, String> {
        let key = schema.to_string();
        if let Some(v) = self.validators.lock().map_err(|_| "validators poisoned")?.get(&key) {
            return Ok(v.clone());
        }
        // The schema beside the document's components, so `#/components/schemas/X` resolves.
        let root = json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "components": self.doc["components"],
            "allOf": [schema],
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| format!("the document's schema {key} does not compile: {e}"))?;
        let validator = Arc::new(validator);
        self.validators.lock().map_err(|_| "validators poisoned")?.insert(key, validator.clone());
        Ok(validator)
    }
}

/// The check can fail: against the server's document, a wrong body, an undocumented
/// status, a wrong media type, a 404 for a route and a 405 without its `Allow` are each
/// refused, and the right answers pass.
pub fn self_test() -> Result<(), String> {
    let contract = Contract::new(api::openapi::document().clone());
    let seen =
        |method, path, status, content_type, text| Seen { method, path, status, content_type, allow: None, text };
    let holder = r#"{"id":"1","name":"Andi","categories":["resident"],"created_at":"2026-01-01T00:00:00.000000Z"}"#;
    let problem =
        r#"{"type":"urn:kartu:problem:not_found","title":"Not Found","status":404,"detail":"x","code":"not_found"}"#;
    let good = [
        seen("POST", "/v1/holders", 201, "application/json", holder),
        seen("GET", "/v1/cards/7", 404, "application/problem+json", problem),
        seen("GET", "/v1/nothing", 404, "application/problem+json", problem),
        seen("GET", "/healthz", 200, "application/json", r#"{"status":"ok"}"#),
    ];
    for s in &good {
        contract.check(s).map_err(|e| format!("a documented response was refused: {e}"))?;
    }
    let wrong_type = holder.replace(r#""1""#, "1");
    let not_allowed = problem.replace("not_found", "method_not_allowed");
    let bad = [
        ("a body missing a field", seen("POST", "/v1/holders", 201, "application/json", r#"{"id":"1","name":"Andi"}"#)),
        ("a field of the wrong type", seen("POST", "/v1/holders", 201, "application/json", &wrong_type)),
        ("an undocumented status", seen("POST", "/v1/holders", 418, "application/json", "{}")),
        ("an error as application/json", seen("GET", "/v1/cards/7", 404, "application/json", problem)),
        (
            "a problem without its code",
            seen("GET", "/v1/cards/7", 404, "application/problem+json", r#"{"status":404}"#),
        ),
        ("a 404 for a routed method", seen("GET", "/v1/nothing", 200, "application/json", "{}")),
        ("a 405 without Allow", seen("PUT", "/v1/holders", 405, "application/problem+json", problem)),
        ("a 404 for a wrong method", seen("PUT", "/v1/holders", 404, "application/problem+json", problem)),
    ];
    for (why, s) in &bad {
        if contract.check(s).is_ok() {
            return Err(format!("the conformance check let through {why}"));
        }
    }
    let allowed =
        Seen { allow: Some("POST, GET"), ..seen("PUT", "/v1/holders", 405, "application/problem+json", &not_allowed) };
    contract.check(&allowed).map_err(|e| format!("a 405 with its Allow was refused: {e}"))?;
    Ok(())
}
