//! `/audit`: for auditors — what the log guarantees, how to verify it independently
//! (`kartu audit verify`, `kartu audit watch`, any RFC 9162 tool), the public key line, the
//! origin, and links to the raw public endpoints.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use maud::html;

use super::{Lang, Page};
use crate::AppState;

/// The public endpoints an auditor's own tools read.
const ENDPOINTS: &[(&str, &str)] = &[
    ("/v1/audit/checkpoints/latest", "C2SP signed note"),
    ("/v1/audit/public-key", "<name>+<key id>+<base64 key>"),
    ("/v1/audit/proofs/inclusion?leaf_index=0&tree_size=1", "RFC 9162 §2.1.3"),
    ("/v1/audit/proofs/consistency?first=1&second=1", "RFC 9162 §2.1.4"),
    ("/v1/transparency", "JSON"),
    ("/openapi.json", "OpenAPI 3.1"),
];

/// For auditors (`GET /audit`).
pub async fn audit_page(state: web::Data<AppState>, req: HttpRequest) -> HttpResponse {
    let (lang, chosen) = Lang::of(&req);
    let t = lang.text();
    let page = Page { lang, chosen, title: t.audit_title, here: "/audit".into(), script: false };
    let [origin, key, script, endpoints] = t.audit_labels;
    let key_line = state.settings.verifier_key.clone().unwrap_or_default();
    let origin_line = key_line.split('+').next().unwrap_or("").to_owned();
    let main = html! {
        @for (heading, body) in t.audit_sections {
            section { h2 { (heading) } p { (super::prose(body)) } }
        }
        dl.summary {
            dt { (origin) } dd { code #origin { (origin_line) } }
            dt { (key) } dd { code #public-key .hash { (key_line) } }
            dt { (script) } dd { code #script-sha256 .hash { (super::script_sha256()) } }
        }
        h2 { (endpoints) }
        ul #endpoints {
            @for (path, what) in ENDPOINTS {
                li { a href=(path) { code { (path) } } " — " (what) }
            }
        }
    };
    page.respond(StatusCode::OK, main, false)
}
