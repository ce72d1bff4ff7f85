//! Check 8 of `kartu audit verify`: the registry recomputed from its operator-action leaves.
//!
//! Every registry write is first an `operator_action` event (payload `{"action", "by",
//! "details"}`) and the row remembers it (`event_id`, `status_event_id`,
//! `revoked_event_id`, `decided_event_id`). This module reads those leaves — the leaf bytes
//! of the audit log, whose hashes and signed roots the earlier checks verify, never the
//! `audit_events` table — and replays them, in order, into a model of what each row must
//! hold; then it compares every row of `holders`, `cards`, `merchants`, `service_points`,
//! `agents`, `credentials`, `adjustments` and `approvals` with the model, field by field.
//! A row whose event names no leaf, or a leaf of another action, or the leaf of another row,
//! is a finding; so is every field that differs. Public transport's tables, which the
//! writer decides fares with, are held to their leaves the same way (`transit`: routes,
//! validators, fare tables, and the taps and ride entries the `transit_tap`,
//! `transit_close` and journal-entry leaves make).
//!
//! Row ids are assigned after the leaf is written, so a leaf names its row only through the
//! row's `event_id`; a leaf that acts on an existing row (a block, a revocation, a
//! decision, a key rotation) names it by id. A leaf with no row is not a finding: a request
//! refused after it was logged (a conflict, a crash) leaves one, and a missing row grants
//! nothing. Public transport is stricter, where a missing row changes money: a route, a
//! tap and a ride's entry link the log made must have their row (see `transit`).
//!
//! Findings name the table, the row id and the field, never a secret: no NIK hash and no
//! token hash is printed, only that it differs.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::audit::{decode_entry_leaf, decode_event_leaf, LEAF_TYPE_EVENT, LEAF_TYPE_JOURNAL_ENTRY};
use crate::store::registry::{Adjustment, Agent, Approval, Card, Credential, Holder, Merchant, Registry, ServicePoint};
use crate::store::transit::{FareTableRow, Route, Validator};
use crate::store::{Db, LeafRow};
use crate::LedgerError;

mod transit;

/// One registry row that differs from what its operator-action leaves say (or a public
/// transport row from its leaves, or a row the leaves made that the table lacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryFinding {
    /// The table.
    pub table: &'static str,
    /// The row's id; none for a row the log made that the table lacks and whose id only
    /// the table would have given (a route: the label names it from its leaf).
    pub row: Option<i64>,
    /// What names the row for a reader (role and name, UID, ...), never a secret.
    pub label: String,
    /// The field that differs; `event_id` when the row has no leaf of its kind, or the
    /// leaf no row (`entry_seq` for a ride's entry: the key it lacks or names wrongly).
    pub field: &'static str,
    /// What differs, starting with the field (or "has no ... leaf").
    pub detail: String,
}

impl fmt::Display for RegistryFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.table)?;
        if let Some(row) = self.row {
            write!(f, " row {row}")?;
        }
        if !self.label.is_empty() {
            write!(f, " ({})", self.label)?;
        }
        write!(f, " {}", self.detail)
    }
}

/// The result of the registry check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RegistryCheck {
    /// Rows compared.
    pub rows: usize,
    /// Operator-action leaves read.
    pub actions: usize,
    /// Every difference, table by table, row by row.
    pub findings: Vec<RegistryFinding>,
}

/// Who an operator action was by: a credential (over the API) or the host (`kartu init`,
/// `kartu operator add`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum By {
    Credential(i64),
    Host,
    Unknown,
}

impl By {
    fn credential(&self) -> Option<i64> {
        match self {
            By::Credential(id) => Some(*id),
            _ => None,
        }
    }
}

/// An operator action as its leaf says.
#[derive(Debug, Clone)]
struct Action {
    action: String,
    by: By,
    details: Value,
    /// The event's time, µs (a fare table's approval takes effect no earlier).
    time_us: i64,
}

impl Action {
    fn id(&self, field: &str) -> Option<i64> {
        self.details[field].as_i64()
    }
}

/// A journal entry posted under a key an approval derives (`adjustment:N`, `approval:N`):
/// its sequence number and postings (account, amount).
#[derive(Debug, Clone)]
struct KeyedEntry {
    seq: i64,
    postings: Vec<(i64, i64)>,
}

impl KeyedEntry {
    fn posts(&self, account: Option<i64>, amount: Option<i64>) -> bool {
        self.postings.iter().any(|(a, m)| account.is_none_or(|x| x == *a) && Some(*m) == amount)
    }
}

/// What the leaf pass keeps for the registry check: every operator action (by event id),
/// the entries approvals post, and what public transport's tables are checked against.
#[derive(Debug, Default)]
pub(crate) struct Collector {
    actions: BTreeMap<i64, Action>,
    keyed: HashMap<String, KeyedEntry>,
    transit: transit::TransitLeaves,
}

impl Collector {
    /// Reads one leaf (its bytes only; a leaf that does not decode is the earlier checks'
    /// finding, and names no row here).
    pub(crate) fn leaf(&mut self, row: &LeafRow) {
        match row.leaf.get(1).copied() {
            Some(LEAF_TYPE_JOURNAL_ENTRY) => {
                // Most entries (payments, top-ups) carry other keys and references: skip
                // their decoding.
                let holds = |needle: &[u8]| row.leaf.windows(needle.len()).any(|w| w == needle);
                if !holds(b"adjustment:") && !holds(b"approval:") && !holds(b"ride:") {
                    return;
                }
                let Ok(e) = decode_entry_leaf(&row.leaf) else { return };
                self.transit.entry(&e);
                let Some(key) = e.idempotency_key.as_ref().map(|k| k.as_str().to_owned()) else { return };
                if key.starts_with("adjustment:") || key.starts_with("approval:") {
                    let postings = e.postings.iter().map(|p| (p.account_id.0, p.amount_minor)).collect();
                    self.keyed.insert(key, KeyedEntry { seq: e.seq, postings });
                }
            }
            Some(LEAF_TYPE_EVENT) => {
                let Ok(e) = decode_event_leaf(&row.leaf) else { return };
                if e.kind != "operator_action" {
                    self.transit.event(&e);
                    return;
                }
                let payload: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
                let by = match &payload["by"] {
                    Value::Number(n) => n.as_i64().map_or(By::Unknown, By::Credential),
                    Value::String(_) => By::Host,
                    _ => By::Unknown,
                };
                let action = payload["action"].as_str().unwrap_or("unreadable").to_owned();
                let details = payload["details"].clone();
                self.actions.insert(e.id, Action { action, by, details, time_us: e.time_us });
            }
            _ => {}
        }
    }
}

/// Where a finding is.
struct At {
    table: &'static str,
    row: i64,
    label: String,
}

/// A credential as its leaves make it.
struct ExpectedCredential {
    role: Option<String>,
    name: Option<String>,
    person: Option<String>,
    scope: (Option<i64>, Option<i64>, Option<i64>),
    public_key: Option<String>,
    offline_limits: Value,
    token_hash: Option<String>,
    created_by: Option<i64>,
}

/// Two person names are the same person when they differ only in case and spacing (as the
/// API's maker-checker rule says).
fn same_person(a: &str, b: &str) -> bool {
    let key = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ").to_lowercase();
    key(a) == key(b)
}

fn show_text(v: Option<&str>) -> String {
    v.map_or_else(|| "none".to_owned(), |s| format!("{s:?}"))
}

fn show_int(v: Option<i64>) -> String {
    v.map_or_else(|| "none".to_owned(), |i| i.to_string())
}

fn text_of(v: &Value) -> Option<&str> {
    v.as_str()
}

/// A JSON column as a value (text that does not parse stays text, and so differs).
fn json_column(text: Option<&str>) -> Value {
    match text {
        None => Value::Null,
        Some(t) => serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_owned())),
    }
}

fn decimal(text: Option<&str>) -> Option<Decimal> {
    text.and_then(|t| Decimal::from_str(t).ok()).map(|d| d.normalize())
}

struct Model<'a> {
    actions: &'a BTreeMap<i64, Action>,
    keyed: &'a HashMap<String, KeyedEntry>,
    findings: Vec<RegistryFinding>,
}

impl<'a> Model<'a> {
    fn report(&mut self, at: &At, field: &'static str, detail: String) {
        let finding = RegistryFinding { table: at.table, row: Some(at.row), label: at.label.clone(), field, detail };
        self.findings.push(finding);
    }

    /// A row the leaves made that the table lacks, and whose id only the table would have
    /// given: `label` names it from its leaf.
    fn missing(&mut self, table: &'static str, label: String, field: &'static str, detail: String) {
        self.findings.push(RegistryFinding { table, row: None, label, field, detail });
    }

    /// The leaf that created a row: an operator action of one of `kinds`, not the event of
    /// another row of the table.
    fn creation(&mut self, at: &At, event_id: i64, kinds: &[&str], seen: &mut HashMap<i64, i64>) -> Option<&'a Action> {
        let actions = self.actions;
        if let Some(other) = seen.insert(event_id, at.row) {
            self.report(at, "event_id", format!("has event_id {event_id}, the event of row {other} too"));
            return None;
        }
        let wanted = kinds.join(" or ");
        match actions.get(&event_id) {
            None => {
                self.report(
                    at,
                    "event_id",
                    format!("has no {wanted} leaf: its event_id {event_id} names no operator action in the log"),
                );
                None
            }
            Some(a) if !kinds.contains(&a.action.as_str()) => {
                self.report(
                    at,
                    "event_id",
                    format!("has no {wanted} leaf: its event_id {event_id} names {} leaf", article(&a.action)),
                );
                None
            }
            Some(a) => Some(a),
        }
    }

    fn text(&mut self, at: &At, field: &'static str, row: Option<&str>, leaf: Option<&str>) {
        if row != leaf {
            self.report(at, field, format!("{field} {} but its leaf says {}", show_text(row), show_text(leaf)));
        }
    }

    fn int(&mut self, at: &At, field: &'static str, row: Option<i64>, leaf: Option<i64>) {
        if row != leaf {
            self.report(at, field, format!("{field} {} but its leaf says {}", show_int(row), show_int(leaf)));
        }
    }

    fn value(&mut self, at: &At, field: &'static str, row: &Value, leaf: &Value) {
        if row != leaf {
            self.report(at, field, format!("{field} {row} but its leaf says {leaf}"));
        }
    }
}

fn article(action: &str) -> String {
    let vowel = action.starts_with(['a', 'e', 'i', 'o', 'u']);
    format!("{} {action}", if vowel { "an" } else { "a" })
}

/// The registry's rows, as the database holds them (the transit journal's taps and ride
/// entries, as long as the log, are paged by `transit`).
struct Tables {
    holders: Vec<Holder>,
    cards: Vec<Card>,
    merchants: Vec<Merchant>,
    service_points: Vec<ServicePoint>,
    agents: Vec<Agent>,
    credentials: Vec<Credential>,
    adjustments: Vec<Adjustment>,
    approvals: Vec<Approval>,
    routes: Vec<Route>,
    validators: Vec<Validator>,
    fare_tables: Vec<FareTableRow>,
}

impl Tables {
    fn read(db: &mut Db) -> Result<Tables, LedgerError> {
        let mut r = Registry(db);
        Ok(Tables {
            holders: r.all_holders()?,
            cards: r.all_cards()?,
            merchants: r.merchants()?,
            service_points: r.service_points()?,
            agents: r.all_agents()?,
            credentials: r.all_credentials()?,
            adjustments: r.all_adjustments()?,
            approvals: r.all_approvals()?,
            routes: r.routes()?,
            validators: r.validators()?,
            fare_tables: r.fare_tables()?,
        })
    }

    fn rows(&self) -> usize {
        self.holders.len()
            + self.cards.len()
            + self.merchants.len()
            + self.service_points.len()
            + self.agents.len()
            + self.credentials.len()
            + self.adjustments.len()
            + self.approvals.len()
            + self.routes.len()
            + self.validators.len()
            + self.fare_tables.len()
    }
}

/// Compares the registry tables with the operator-action leaves `collected` read, and
/// public transport's tables with their leaves.
pub(crate) fn check(db: &mut Db, collected: Collector) -> Result<RegistryCheck, LedgerError> {
    let t = Tables::read(db)?;
    let mut m = Model { actions: &collected.actions, keyed: &collected.keyed, findings: Vec::new() };
    holders(&mut m, &t);
    cards(&mut m, &t);
    merchants_points_agents(&mut m, &t);
    let persons = credentials(&mut m, &t);
    adjustments(&mut m, &t);
    approvals(&mut m, &t, &persons);
    let journal_rows = transit::check(&mut m, &t, db, &collected.transit)?;
    Ok(RegistryCheck { rows: t.rows() + journal_rows, actions: collected.actions.len(), findings: m.findings })
}

/// Holders: what their creation says.
fn holders(m: &mut Model<'_>, t: &Tables) {
    let mut seen = HashMap::new();
    for h in &t.holders {
        let at = At { table: "holders", row: h.id, label: String::new() };
        let Some(a) = m.creation(&at, h.event_id, &["create_holder"], &mut seen) else { continue };
        let d = &a.details;
        m.text(&at, "name", Some(&h.name), text_of(&d["name"]));
        let categories = d["categories"]
            .as_array()
            .map(|c| c.iter().map(|v| v.as_str().unwrap_or("?")).collect::<Vec<_>>().join(","));
        m.text(&at, "categories", Some(&h.categories.to_string()), categories.as_deref());
        if d["nik_hash"].as_str() != Some(hex::encode(&h.nik_hash).as_str()) {
            m.report(&at, "nik_hash", "nik_hash differs from its leaf".into());
        }
    }
}

/// Cards: made by an issue or a replacement; their status is the last status leaf; their
/// key version the highest of the and of their `rotate_card_keys` leaves'.
fn cards<'a>(m: &mut Model<'a>, t: &Tables) {
    let by_id: HashMap<i64, &Card> = t.cards.iter().map(|c| (c.id, c)).collect();
    let mut card_by_event: HashMap<i64, i64> = HashMap::new();
    for c in &t.cards {
        card_by_event.entry(c.event_id).or_insert(c.id);
    }
    let mut status_leaves: HashMap<i64, Vec<(i64, &Action)>> = HashMap::new();
    // The versions each card's rotations raised it to (`rotate_card_keys`).
    let mut rotations: HashMap<i64, Vec<i64>> = HashMap::new();
    for (id, a) in m.actions {
        if matches!(a.action.as_str(), "block_card" | "unblock_card" | "replace_card") {
            if let Some(card) = a.id("card_id") {
                status_leaves.entry(card).or_default().push((*id, a));
            }
        }
        if a.action == "rotate_card_keys" {
            if let (Some(card), Some(version)) = (a.id("card_id"), a.id("key_version")) {
                rotations.entry(card).or_default().push(version);
            }
        }
    }
    let mut seen = HashMap::new();
    for c in &t.cards {
        let at = At { table: "cards", row: c.id, label: format!("uid {}", c.uid) };
        if let Some(a) = m.creation(&at, c.event_id, &["issue_card", "replace_card"], &mut seen) {
            let d = &a.details;
            if a.action == "issue_card" {
                m.text(&at, "uid", Some(&c.uid.to_string()), text_of(&d["uid"]));
                m.int(&at, "holder_id", Some(c.holder_id), d["holder_id"].as_i64());
            } else {
                m.text(&at, "uid", Some(&c.uid.to_string()), text_of(&d["new_uid"]));
                match a.id("card_id").and_then(|old| by_id.get(&old)) {
                    Some(old) => m.int(&at, "holder_id", Some(c.holder_id), Some(old.holder_id)),
                    None => m.report(
                        &at,
                        "holder_id",
                        format!("holder_id {} but the card its leaf replaces is not in the table", c.holder_id),
                    ),
                }
            }
            // A rotation only raises the version: the highest of the and the rotations'.
            let raised = rotations.get(&c.id).and_then(|v| v.iter().max().copied());
            let expected = d["key_version"].as_i64().map(|issued| raised.map_or(issued, |r| r.max(issued)));
            m.int(&at, "key_version", Some(i64::from(c.key_version)), expected);
        }
        card_status(m, &at, c, status_leaves.get(&c.id).and_then(|v| v.last()), &card_by_event);
    }
}

/// A card's status, reason and replacement against its last status leaf (`last`: the
/// event id and action of the newest block, unblock or replace of the card).
fn card_status(m: &mut Model<'_>, at: &At, c: &Card, last: Option<&(i64, &Action)>, card_by_event: &HashMap<i64, i64>) {
    // What the leaves say now: (status, reason, replaced by, the event that said it).
    let expected = match last {
        None => ("active", None, None, c.event_id, "issue_card"),
        Some((e, a)) => match a.action.as_str() {
            "block_card" => ("blocked", text_of(&a.details["reason"]), None, *e, "block_card"),
            "unblock_card" => ("active", None, None, *e, "unblock_card"),
            _ => ("replaced", None, card_by_event.get(e).copied(), *e, "replace_card"),
        },
    };
    let stored = (c.status.as_str(), c.block_reason.as_deref(), c.replaced_by, c.status_event_id);
    if stored != (expected.0, expected.1, expected.2, expected.3) {
        let describe = |status: &str, reason: Option<&str>, by: Option<i64>| {
            let mut s = status.to_owned();
            if let Some(r) = reason {
                s.push_str(&format!(", reason {r}"));
            }
            if let Some(b) = by {
                s.push_str(&format!(" by card {b}"));
            }
            s
        };
        m.report(
            at,
            "status",
            format!(
                "status {} (event {}) but its leaves say {} (event {}, {})",
                describe(stored.0, stored.1, stored.2),
                stored.3,
                describe(expected.0, expected.1, expected.2),
                expected.3,
                expected.4
            ),
        );
    }
}

/// Merchants, service points, agents: what their creation says.
fn merchants_points_agents(m: &mut Model<'_>, t: &Tables) {
    let mut seen = HashMap::new();
    for x in &t.merchants {
        let at = At { table: "merchants", row: x.id, label: format!("name {:?}", x.name) };
        let Some(a) = m.creation(&at, x.event_id, &["create_merchant"], &mut seen) else { continue };
        let d = &a.details;
        m.text(&at, "name", Some(&x.name), text_of(&d["name"]));
        m.text(&at, "category", Some(x.category.as_str()), text_of(&d["category"]));
        let leaf = text_of(&d["fee_rate"]);
        if Some(x.fee_rate.as_decimal()) != decimal(leaf) {
            m.report(&at, "fee_rate", format!("fee_rate {} but its leaf says {}", x.fee_rate, leaf.unwrap_or("none")));
        }
    }
    let mut seen = HashMap::new();
    for x in &t.service_points {
        let at = At { table: "service_points", row: x.id, label: format!("name {:?}", x.name) };
        let Some(a) = m.creation(&at, x.event_id, &["create_service_point"], &mut seen) else { continue };
        let d = &a.details;
        m.text(&at, "name", Some(&x.name), text_of(&d["name"]));
        m.text(&at, "service", Some(&x.service), text_of(&d["service"]));
        m.value(&at, "policy", &json_column(Some(&x.policy)), &d["policy"]);
    }
    let mut seen = HashMap::new();
    for x in &t.agents {
        let at = At { table: "agents", row: x.id, label: format!("name {:?}", x.name) };
        let Some(a) = m.creation(&at, x.event_id, &["create_agent"], &mut seen) else { continue };
        m.text(&at, "name", Some(&x.name), text_of(&a.details["name"]));
    }
}

/// Credentials: made over the API, on the host, or by an approval; revoked by a leaf.
/// Gives each credential's person (for the approvals' four-eyes check).
fn credentials(m: &mut Model<'_>, t: &Tables) -> HashMap<i64, String> {
    let approval_by_id: HashMap<i64, &Approval> = t.approvals.iter().map(|a| (a.id, a)).collect();
    let mut revokers: HashMap<i64, Vec<(i64, &str)>> = HashMap::new();
    for (id, a) in m.actions {
        if a.action == "revoke_credential" {
            if let Some(target) = a.id("credential_id") {
                revokers.entry(target).or_default().push((*id, "revoke_credential"));
            }
        }
    }
    for ap in &t.approvals {
        if ap.kind == "revoke_operator_credential" && ap.status == "approved" {
            let target = m.actions.get(&ap.event_id).and_then(|l| l.details["request"]["credential_id"].as_i64());
            if let (Some(target), Some(d)) = (target, ap.decided_event_id) {
                revokers.entry(target).or_default().push((d, "approve_request"));
            }
        }
    }
    let mut persons: HashMap<i64, String> = HashMap::new();
    let mut seen = HashMap::new();
    for c in &t.credentials {
        let at = At { table: "credentials", row: c.id, label: format!("role {}, name {:?}", c.role, c.name) };
        if let Some(a) = m.creation(&at, c.event_id, &["create_credential", "approve_request"], &mut seen) {
            if let Some(e) = expected_credential(m, &at, c, a, &approval_by_id) {
                if let Some(p) = e.person.as_deref().or(e.name.as_deref()) {
                    persons.insert(c.id, p.to_owned());
                }
                m.text(&at, "role", Some(c.role.as_str()), e.role.as_deref());
                m.text(&at, "name", Some(&c.name), e.name.as_deref());
                m.text(&at, "person", c.person.as_deref(), e.person.as_deref());
                m.int(&at, "merchant_id", c.merchant_id, e.scope.0);
                m.int(&at, "service_point_id", c.service_point_id, e.scope.1);
                m.int(&at, "agent_id", c.agent_id, e.scope.2);
                m.text(&at, "public_key", c.public_key.as_deref(), e.public_key.as_deref());
                m.value(&at, "offline_limits", &json_column(c.offline_limits.as_deref()), &e.offline_limits);
                if e.token_hash.as_deref() != Some(hex::encode(&c.token_hash).as_str()) {
                    let why = if e.token_hash.is_some() { "differs from" } else { "is not recorded in" };
                    m.report(&at, "token_hash", format!("token_hash {why} its leaf"));
                }
                m.int(&at, "created_by", c.created_by, e.created_by);
            }
        }
        let by_leaves = revokers.get(&c.id).map(Vec::as_slice).unwrap_or_default();
        match (c.revoked_at_us, c.revoked_event_id) {
            (None, None) => {
                if let Some((e, kind)) = by_leaves.first() {
                    m.report(&at, "revoked", format!("is not revoked but its leaves revoke it (event {e}, {kind})"));
                }
            }
            (Some(_), Some(e)) if by_leaves.iter().any(|(x, _)| *x == e) => {}
            (_, e) => m.report(
                &at,
                "revoked",
                format!(
                    "revoked {} by event {} but {}",
                    c.revoked_at_us.is_some(),
                    show_int(e),
                    match by_leaves.first() {
                        None => "no leaf revokes it".to_owned(),
                        Some((x, kind)) => format!("its leaves revoke it by event {x} ({kind})"),
                    }
                ),
            ),
        }
    }
    persons
}

/// Adjustments: the request's leaf; posted only by the entry its approval keyed.
fn adjustments(m: &mut Model<'_>, t: &Tables) {
    let approval_by_event: HashMap<i64, &Approval> = t.approvals.iter().map(|a| (a.event_id, a)).collect();
    let mut seen = HashMap::new();
    for x in &t.adjustments {
        let at = At { table: "adjustments", row: x.id, label: format!("account {}", x.account_id) };
        let leaf = m.creation(&at, x.event_id, &["request_adjustment"], &mut seen);
        if let Some(a) = leaf {
            let d = &a.details;
            m.int(&at, "account_id", Some(x.account_id.0), d["account_id"].as_i64());
            m.int(&at, "amount_minor", Some(x.amount_minor), d["amount_minor"].as_i64());
            m.text(&at, "currency", Some(&x.currency), text_of(&d["currency"]));
            m.text(&at, "reason", Some(&x.reason), text_of(&d["reason"]));
            m.int(&at, "requested_by", Some(x.requested_by), a.by.credential());
        }
        let approval = approval_by_event.get(&x.event_id).filter(|a| a.kind == "adjustment");
        let decided_by = approval
            .filter(|a| a.status == "approved")
            .and_then(|a| a.decided_event_id)
            .and_then(|d| m.actions.get(&d))
            .filter(|l| l.action == "approve_request")
            .and_then(|l| l.by.credential());
        match m.keyed.get(&format!("adjustment:{}", x.id)) {
            Some(entry) => adjustment_posted(m, &at, x, entry, leaf, decided_by),
            None => adjustment_unposted(m, &at, x, approval.map_or("pending", |a| a.status.as_str())),
        }
    }
}

/// A posted adjustment: posted by the entry its approval keyed, with its leaf's amount,
/// approved by the credential whose approve_request leaf decided it.
fn adjustment_posted(
    m: &mut Model<'_>,
    at: &At,
    x: &Adjustment,
    entry: &KeyedEntry,
    leaf: Option<&Action>,
    decided_by: Option<i64>,
) {
    if x.status != "posted" || x.entry_seq != Some(entry.seq) {
        m.report(
            at,
            "status",
            format!(
                "status {} at entry {} but its leaves say posted at entry {}",
                x.status,
                show_int(x.entry_seq),
                entry.seq
            ),
        );
    }
    if let Some(a) = leaf {
        let d = &a.details;
        if !entry.posts(d["account_id"].as_i64(), d["amount_minor"].as_i64()) {
            m.report(
                at,
                "entry_seq",
                format!("entry {} does not post its leaf's amount to its leaf's account", entry.seq),
            );
        }
    }
    match decided_by {
        None => m.report(
            at,
            "approved_by",
            format!("posted at entry {} but no approve_request leaf decided its approval", entry.seq),
        ),
        Some(by) => m.int(at, "approved_by", x.approved_by, Some(by)),
    }
}

/// An adjustment no entry posted: pending or rejected as its approval (`status`) is.
fn adjustment_unposted(m: &mut Model<'_>, at: &At, x: &Adjustment, status: &str) {
    let fits = match x.status.as_str() {
        "pending" => status != "rejected",
        "rejected" => status != "pending",
        _ => false,
    };
    if !fits || x.entry_seq.is_some() || x.approved_by.is_some() {
        m.report(
                at,
                "status",
                format!(
                    "status {} (entry {}, approved by {}) but no adjustment:{} entry is in the log and its approval is {status}",
                    x.status,
                    show_int(x.entry_seq),
                    show_int(x.approved_by),
                    x.id
                ),
            );
    }
}

/// Approvals: the request's leaf, a decision leaf of their own, another person's approval.
fn approvals<'a>(m: &mut Model<'a>, t: &Tables, persons: &HashMap<i64, String>) {
    let adjustment_by_event: HashMap<i64, &Adjustment> = t.adjustments.iter().map(|a| (a.event_id, a)).collect();
    let mut decisions: HashMap<i64, Vec<(i64, &Action)>> = HashMap::new();
    for (id, a) in m.actions {
        if matches!(a.action.as_str(), "approve_request" | "reject_request") {
            if let Some(approval) = a.id("approval_id") {
                decisions.entry(approval).or_default().push((*id, a));
            }
        }
    }
    let credential_by_event: HashMap<i64, &Credential> = t.credentials.iter().map(|c| (c.event_id, c)).collect();
    let mut seen = HashMap::new();
    for x in &t.approvals {
        let at = At { table: "approvals", row: x.id, label: format!("kind {}", x.kind) };
        if let Some(a) = m.creation(&at, x.event_id, &["request_approval", "request_adjustment"], &mut seen) {
            approval_request(m, &at, x, a, &adjustment_by_event);
        }
        if let Some(p) = persons.get(&x.requested_by) {
            m.text(&at, "requested_person", Some(&x.requested_person), Some(p));
        }
        let mine = decisions.get(&x.id).map(Vec::as_slice).unwrap_or_default();
        let decided = x.decided_event_id.and_then(|d| mine.iter().find(|(e, _)| *e == d));
        match (x.status.as_str(), decided) {
            ("pending", None) if x.decided_event_id.is_none() && x.decided_by.is_none() => {
                if let Some((e, l)) = mine.first() {
                    m.report(&at, "status", format!("status pending but leaf event {e} ({}) decided it", l.action));
                }
            }
            (status @ ("approved" | "rejected"), Some((e, l)))
                if (status == "approved") == (l.action == "approve_request") =>
            {
                m.int(&at, "decided_by", x.decided_by, l.by.credential());
                let decider = l.by.credential().and_then(|c| persons.get(&c));
                if let Some(p) = decider {
                    m.text(&at, "decided_person", x.decided_person.as_deref(), Some(p));
                }
                if let Some(r) = l.id("request_event_id") {
                    if r != x.event_id {
                        m.report(
                            &at,
                            "decided_event_id",
                            format!("decided by event {e}, whose leaf decides the request of event {r}"),
                        );
                    }
                }
                if status == "approved" {
                    let requester = persons.get(&x.requested_by);
                    let own = l.by.credential() == Some(x.requested_by)
                        || matches!((requester, decider), (Some(a), Some(b)) if same_person(a, b));
                    if own {
                        m.report(
                            &at,
                            "decided_by",
                            format!("approved by event {e}, by the requester's own person: no second operator"),
                        );
                    }
                    approved_result(m, &at, x, *e, &credential_by_event, &adjustment_by_event);
                }
            }
            _ => decision_mismatch(m, &at, x, decided, mine),
        }
        if x.kind == "fund_agent" {
            fund_agent_entry(m, &at, x);
        }
    }
}

/// An approval row against the leaf that requested it (an approval request, or an
/// adjustment's request, which asks for its approval too).
fn approval_request(
    m: &mut Model<'_>,
    at: &At,
    x: &Approval,
    a: &Action,
    adjustment_by_event: &HashMap<i64, &Adjustment>,
) {
    let d = &a.details;
    let (kind, request) = if a.action == "request_approval" {
        (text_of(&d["kind"]), d["request"].clone())
    } else {
        let adjustment = adjustment_by_event.get(&x.event_id).map(|j| j.id);
        let request = json!({"adjustment_id": adjustment, "account_id": d["account_id"],
            "amount_minor": d["amount_minor"], "currency": d["currency"], "reason": d["reason"]});
        (Some("adjustment"), request)
    };
    m.text(at, "kind", Some(&x.kind), kind);
    m.value(at, "payload", &json_column(Some(&x.payload)), &request);
    m.int(at, "requested_by", Some(x.requested_by), a.by.credential());
}

/// A decided or pending approval whose status its decision leaves do not bear out.
fn decision_mismatch(
    m: &mut Model<'_>,
    at: &At,
    x: &Approval,
    decided: Option<&(i64, &Action)>,
    mine: &[(i64, &Action)],
) {
    let leaves = if mine.is_empty() {
        "no leaf decides it".to_owned()
    } else {
        let list: Vec<String> = mine.iter().map(|(e, l)| format!("event {e}, {}", l.action)).collect();
        format!("its decision leaves are {}", list.join("; "))
    };
    let detail = match (decided, x.decided_event_id) {
        (Some((e, l)), _) => {
            format!("status {} but its deciding leaf (event {e}) is {}", x.status, article(&l.action))
        }
        (None, Some(e)) => format!("status {} decided by event {e}, but {leaves}", x.status),
        (None, None) => format!("status {} with no deciding event, but {leaves}", x.status),
    };
    m.report(at, "status", detail);
}

/// A fund_agent approval's entry: posted only once approved, with the amount asked for.
fn fund_agent_entry(m: &mut Model<'_>, at: &At, x: &Approval) {
    if let Some(entry) = m.keyed.get(&format!("approval:{}", x.id)) {
        if x.status != "approved" {
            m.report(at, "status", format!("status {} but entry {} posted it", x.status, entry.seq));
        }
        let amount = m.actions.get(&x.event_id).and_then(|l| l.details["request"]["amount_minor"].as_i64());
        if !entry.posts(None, amount) {
            m.report(at, "result", format!("entry {} does not post the amount its leaf asked for", entry.seq));
        }
    }
}

/// What an approved request must have done: the credential its decision made, the entry
/// it posted (or the ledger's refusal).
fn approved_result(
    m: &mut Model<'_>,
    at: &At,
    x: &Approval,
    decision: i64,
    credential_by_event: &HashMap<i64, &Credential>,
    adjustment_by_event: &HashMap<i64, &Adjustment>,
) {
    let result = json_column(x.result.as_deref());
    match x.kind.as_str() {
        "create_operator_credential" => {
            let made = credential_by_event.get(&decision).map(|c| c.id.to_string());
            if made.is_none() || result["credential_id"].as_str() != made.as_deref() {
                m.report(
                    at,
                    "result",
                    format!(
                        "result {result} but the credential its decision (event {decision}) made is {}",
                        made.map_or_else(|| "not in the table".to_owned(), |c| format!("row {c}"))
                    ),
                );
            }
        }
        "adjustment" | "fund_agent" => {
            let key = match adjustment_by_event.get(&x.event_id) {
                Some(j) if x.kind == "adjustment" => format!("adjustment:{}", j.id),
                _ => format!("approval:{}", x.id),
            };
            let posted = m.keyed.get(&key).map(|e| e.seq);
            let said = result["entry_seq"].as_i64();
            if result != Value::Null && said != posted {
                m.report(at, "result", format!("result {result} but the log's {key} entry is {}", show_int(posted)));
            }
        }
        _ => {}
    }
}

/// What a credential row must hold, from the leaf that created it.
fn expected_credential(
    m: &mut Model<'_>,
    at: &At,
    c: &Credential,
    a: &Action,
    approvals: &HashMap<i64, &Approval>,
) -> Option<ExpectedCredential> {
    let d = &a.details;
    let owned = |v: &Value| v.as_str().map(str::to_owned);
    if a.action == "create_credential" {
        return Some(ExpectedCredential {
            role: owned(&d["role"]),
            name: owned(&d["name"]),
            person: owned(&d["person"]),
            scope: (d["merchant_id"].as_i64(), d["service_point_id"].as_i64(), d["agent_id"].as_i64()),
            public_key: owned(&d["public_key"]),
            offline_limits: d["offline_limits"].clone(),
            token_hash: owned(&d["token_hash"]),
            created_by: a.by.credential(),
        });
    }
    // An approval's decision: the request leaf says who and what, the decision the token.
    if d["kind"].as_str() != Some("create_operator_credential") {
        m.report(
            at,
            "event_id",
            format!(
                "has no create_credential leaf: its event_id {} approves a {} request",
                c.event_id,
                d["kind"].as_str().unwrap_or("?")
            ),
        );
        return None;
    }
    let request = d["request_event_id"].as_i64().and_then(|e| m.actions.get(&e).map(|l| (e, l)));
    let Some((request_event, request)) =
        request.filter(|(_, l)| l.action == "request_approval" && l.details["kind"] == "create_operator_credential")
    else {
        m.report(
            at,
            "event_id",
            format!("its approve_request leaf (event {}) names no create_operator_credential request", c.event_id),
        );
        return None;
    };
    let approval = d["approval_id"].as_i64().and_then(|id| approvals.get(&id));
    match approval {
        Some(ap) if ap.decided_event_id == Some(c.event_id) && ap.event_id == request_event => {}
        _ => m.report(
            at,
            "event_id",
            format!(
                "was made by event {}, which is not the decision of approval {}",
                c.event_id,
                show_int(d["approval_id"].as_i64())
            ),
        ),
    }
    let r = &request.details["request"];
    Some(ExpectedCredential {
        role: Some("operator".into()),
        name: owned(&r["name"]),
        person: owned(&r["person"]),
        scope: (None, None, None),
        public_key: None,
        offline_limits: Value::Null,
        token_hash: owned(&d["token_hash"]),
        created_by: request.by.credential(),
    })
}
