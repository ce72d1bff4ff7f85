//! Pages for citizens and the public, server-rendered HTML (maud, escaped by construction):
//! `/t` (my card, after a genuine tap), `/receipts/{seq}` (a receipt with its proof checked
//! in the browser), `/transparency` (the city's books by day) and `/audit` (how to verify
//! independently). They are readable without JavaScript; only the verification panels run
//! the embedded `kartu.js` (WebCrypto: SHA-256, Ed25519), served by this server with the
//! stylesheet — no external resource, and a Content-Security-Policy that allows none.
//!
//! Language: `?lang=id|en` (remembered in a cookie), else the cookie, else
//! `Accept-Language`, else Indonesian. Amounts are written the Indonesian way in both
//! (`Rp 12.500,00`), times in the city's time zone (`timezone` in `kartu.toml`).

mod audit;
mod books;
mod card;
mod chart;
mod receipt;
mod text;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use ledger::money::Currency;
use maud::{html, Markup, DOCTYPE};

pub use text::Text;

/// The pages' paths (OpenAPI form), beside the API's `ROUTES`: they answer HTML, so the
/// API document does not list them, and `openapi::methods_of` knows them for `405`.
pub const PAGES: &[&str] =
    &["/t", "/receipts/{seq}", "/transparency", "/audit", "/assets/kartu.css", "/assets/kartu.js"];

const CSS: &str = include_str!("../../assets/kartu.css");
const JS: &str = include_str!("../../assets/kartu.js");

/// What a page may load: its own stylesheet and script and its own API, nothing else; no
/// inline script, no frame, no form to another site.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; \
                   base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Registers the pages and their assets.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/t", web::get().to(card::card_page))
        .route("/receipts/{seq}", web::get().to(receipt::receipt_page))
        .route("/transparency", web::get().to(books::books_page))
        .route("/audit", web::get().to(audit::audit_page))
        .route("/assets/kartu.css", web::get().to(|| async { asset(CSS, "text/css; charset=utf-8") }))
        .route("/assets/kartu.js", web::get().to(|| async { asset(JS, "text/javascript; charset=utf-8") }));
}

/// The verification script's SHA-256, hex: `/audit` publishes it, so anyone can compare
/// the script a page runs with the one in Kartu's source.
pub fn script_sha256() -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, JS.as_bytes()))
}

/// The pages' `integrity` of the script (Subresource Integrity): a browser refuses to run
/// a script that anything between it and the page's HTML changed.
fn script_integrity() -> &'static str {
    static SRI: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SRI.get_or_init(|| {
        use base64::Engine as _;
        let digest = ring::digest::digest(&ring::digest::SHA256, JS.as_bytes());
        format!("sha256-{}", base64::engine::general_purpose::STANDARD.encode(digest))
    })
}

fn asset(body: &'static str, media: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(media)
        .insert_header((header::CACHE_CONTROL, "public, max-age=300"))
        .insert_header(("x-content-type-options", "nosniff"))
        .body(body)
}

/// The language a page is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// Bahasa Indonesia (the default).
    Id,
    /// English, for visitors.
    En,
}

const LANG_COOKIE: &str = "kartu_lang";

impl Lang {
    fn parse(s: &str) -> Option<Lang> {
        match s.trim().to_ascii_lowercase().split(['-', '_']).next() {
            Some("id" | "in") => Some(Lang::Id),
            Some("en") => Some(Lang::En),
            _ => None,
        }
    }

    /// `?lang=`, then the cookie, then the first of `Accept-Language` (by q) that is ours.
    pub fn of(req: &HttpRequest) -> (Lang, bool) {
        let query = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string()).ok();
        if let Some(l) = query.and_then(|q| q.get("lang").and_then(|l| Lang::parse(l))) {
            return (l, true);
        }
        let cookie = req
            .headers()
            .get_all(header::COOKIE)
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| c.trim().strip_prefix(LANG_COOKIE).and_then(|rest| rest.strip_prefix('=')))
            .and_then(Lang::parse);
        if let Some(l) = cookie {
            return (l, false);
        }
        let accept = req.headers().get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
        (accept_language(accept).unwrap_or(Lang::Id), false)
    }

    /// The BCP 47 tag.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::Id => "id",
            Lang::En => "en",
        }
    }

    /// The page texts in this language.
    pub fn text(self) -> &'static Text {
        match self {
            Lang::Id => &text::ID,
            Lang::En => &text::EN,
        }
    }
}

/// The first language of an `Accept-Language` header, by quality, that a page is written in.
fn accept_language(header: &str) -> Option<Lang> {
    let mut best: Option<(u16, Lang)> = None;
    for part in header.split(',') {
        let mut fields = part.split(';');
        let Some(lang) = fields.next().and_then(Lang::parse) else { continue };
        let q =
            fields.find_map(|f| f.trim().strip_prefix("q=")).and_then(|q| q.trim().parse::<f32>().ok()).unwrap_or(1.0);
        // Thousandths, so that the comparison is exact; the first wins a tie.
        let q = (q.clamp(0.0, 1.0) * 1000.0).round() as u16;
        if q > 0 && best.is_none_or(|(b, _)| q > b) {
            best = Some((q, lang));
        }
    }
    best.map(|(_, l)| l)
}

/// A page: its language, title and body in the shared layout.
#[derive(Debug)]
pub struct Page<'a> {
    /// Its language.
    pub lang: Lang,
    /// Whether `?lang=` chose it (then the cookie remembers it).
    pub chosen: bool,
    /// The `<title>` and `<h1>`.
    pub title: &'a str,
    /// Where the language switch links to (this page's path and query without `lang`).
    pub here: String,
    /// Whether the page runs `kartu.js`.
    pub script: bool,
}

impl Page<'_> {
    /// The whole document.
    pub fn render(&self, main: Markup) -> Markup {
        let t = self.lang.text();
        let other = match self.lang {
            Lang::Id => Lang::En,
            Lang::En => Lang::Id,
        };
        let sep = if self.here.contains('?') { '&' } else { '?' };
        html! {
            (DOCTYPE)
            html lang=(self.lang.tag()) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="no-referrer";
                    title { (self.title) " · " (t.site) }
                    link rel="stylesheet" href="/assets/kartu.css";
                    @if self.script { script src="/assets/kartu.js" integrity=(script_integrity()) defer {} }
                }
                body {
                    header {
                        a.brand href={ "/transparency" } { (t.site) }
                        nav aria-label=(t.nav_label) {
                            a href="/transparency" { (t.nav_books) }
                            " "
                            a href="/audit" { (t.nav_audit) }
                            " "
                            a lang=(other.tag()) hreflang=(other.tag()) href={ (self.here) (sep) "lang=" (other.tag()) } {
                                (other.text().language_name)
                            }
                        }
                    }
                    main { h1 { (self.title) } (main) }
                    footer { p { (t.footer) } }
                }
            }
        }
    }

    /// An HTML response: the security headers of every page; `private` pages (a card's)
    /// are never stored by a cache.
    pub fn respond(&self, status: actix_web::http::StatusCode, main: Markup, private: bool) -> HttpResponse {
        let mut r = HttpResponse::build(status);
        r.content_type("text/html; charset=utf-8")
            .insert_header(("content-security-policy", CSP))
            .insert_header(("x-content-type-options", "nosniff"))
            .insert_header(("referrer-policy", "no-referrer"))
            .insert_header((header::CONTENT_LANGUAGE, self.lang.tag()))
            .insert_header((header::VARY, "Accept-Language, Cookie"))
            .insert_header((header::CACHE_CONTROL, if private { "no-store" } else { "no-cache" }));
        if self.chosen {
            r.insert_header((
                header::SET_COOKIE,
                format!("{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax", self.lang.tag()),
            ));
        }
        r.body(self.render(main).into_string())
    }
}

/// An amount the Indonesian way: `Rp 12.500,00`, `−Rp 2.500,50` (thousands with `.`,
/// decimals with `,`); a currency other than the rupiah is written with its code.
pub fn rupiah(minor: i64, currency: Currency) -> String {
    let units = currency.minor_units();
    let scale = 10u128.pow(units);
    let abs = u128::from(minor.unsigned_abs());
    let (whole, frac) = (abs / scale, abs % scale);
    let digits = whole.to_string();
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push('.');
        }
        grouped.push(ch);
    }
    let symbol = if currency.code() == "IDR" { "Rp".to_owned() } else { currency.code().to_owned() };
    let sign = if minor < 0 { "\u{2212}" } else { "" };
    if units == 0 {
        format!("{sign}{symbol} {grouped}")
    } else {
        format!("{sign}{symbol} {grouped},{frac:0width$}", width = units as usize)
    }
}

/// A holder's name as a card page shows it: each word's first letter, then `***`.
pub fn mask_name(name: &str) -> String {
    name.split_whitespace()
        .map(|w| w.chars().next().map(|c| format!("{c}***")).unwrap_or_default())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A time in the city's time zone: `2026-12-07 13:05`.
pub fn city_time(tz: chrono_tz::Tz, time_us: i64) -> String {
    chrono::DateTime::from_timestamp_micros(time_us)
        .map(|t| t.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default()
}

/// A message box (`role=status` or `alert`).
pub fn notice(kind: &str, heading: &str, body: &str) -> Markup {
    html! {
        section.notice.(kind) role=(if kind == "bad" { "alert" } else { "status" }) {
            h2 { (heading) }
            p { (body) }
        }
    }
}

/// Text with `backticked` spans as `<code>` (the command names in the pages' texts), the
/// rest as text; both escaped.
pub fn prose(text: &str) -> Markup {
    html! {
        @for (i, part) in text.split('`').enumerate() {
            @if i % 2 == 1 { code { (part) } } @else { (part) }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_rupiah(minor: i64, code: &str, expect: &str) {
        let c = Currency::parse(code).expect("currency");
        assert_eq!(rupiah(minor, c), expect, "{minor} {code}");
    }

    #[test]
    fn amounts_are_written_the_indonesian_way() {
        check_rupiah(1_250_000, "IDR", "Rp 12.500,00");
        check_rupiah(-250_050, "IDR", "\u{2212}Rp 2.500,50");
        check_rupiah(0, "IDR", "Rp 0,00");
        check_rupiah(99, "IDR", "Rp 0,99");
        check_rupiah(100_000_000_000, "IDR", "Rp 1.000.000.000,00");
        check_rupiah(123_456, "JPY", "JPY 123.456");
        check_rupiah(i64::MIN, "IDR", "\u{2212}Rp 92.233.720.368.547.758,08");
    }

    #[test]
    fn names_are_masked() {
        for (name, expect) in [("Ani Wijaya", "A*** W***"), ("  Budi  ", "B***"), ("Ömer Ç", "Ö*** Ç***"), ("", "")]
        {
            assert_eq!(mask_name(name), expect);
        }
    }

    #[test]
    fn accept_language_picks_by_quality() {
        for (header, expect) in [
            ("en-US,en;q=0.9", Some(Lang::En)),
            ("fr, en;q=0.5, id;q=0.8", Some(Lang::Id)),
            ("id-ID", Some(Lang::Id)),
            ("en;q=0, id;q=0", None),
            ("de, fr", None),
            ("", None),
            ("en;q=0.5, id;q=0.5", Some(Lang::En)),
        ] {
            assert_eq!(accept_language(header), expect, "{header}");
        }
    }
}
