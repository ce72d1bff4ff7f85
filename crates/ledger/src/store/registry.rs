//! The registry's storage: holders, cards, merchants, service points, agents, credentials
//! and adjustments awaiting approval.

use card::CardUid;
use diesel::prelude::*;
use domain::money::FeeRate;
use domain::registry::{BlockReason, CardStatus, Categories, MerchantCategory, Role};

use super::schema::{
    adjustments, agents, approvals, cards, credentials, holders, merchants, offline_heads, offline_records,
    offline_syncs, service_points, wallet_debts,
};
use super::{storage, Db};
use crate::domain::AccountId;
use crate::LedgerError;

/// What a terminal received when it synced before going offline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineSync {
    /// Id, named by the terminal's offline records.
    pub id: i64,
    /// When, µs (server clock).
    pub time_us: i64,
    /// The terminal's offline limits then (JSON), none when it had none.
    pub limits: Option<String>,
    /// UIDs it had to refuse.
    pub denied: Vec<String>,
}

/// A card holder. The NIK is kept only as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = holders)]
pub struct Holder {
    /// The holder's id, as the API's paths and the log's details name it.
    pub id: i64,
    /// The holder's full name, as registered.
    pub name: String,
    /// HMAC-SHA-256 of the NIK under the installation's key.
    pub nik_hash: Vec<u8>,
    /// Categories (stored comma-separated, alphabetically).
    #[diesel(deserialize_as = String)]
    pub categories: Categories,
    /// Created, µs.
    pub created_at_us: i64,
    /// The operator_action event that created it.
    pub event_id: i64,
}

/// What the back office searches cards by ([`Registry::cards_page`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct CardFilter {
    /// One UID.
    pub uid: Option<CardUid>,
    /// One holder's cards.
    pub holder_id: Option<i64>,
    /// One status.
    pub status: Option<CardStatus>,
}

/// A card: its UID, holder, wallet and status.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = cards)]
pub struct Card {
    /// Id (the ledger's `card_id` reference).
    pub id: i64,
    /// 7-byte UID (stored as 14 upper-case hex digits).
    #[diesel(deserialize_as = String)]
    pub uid: CardUid,
    /// The holder the card belongs to.
    pub holder_id: i64,
    /// The card wallet.
    #[diesel(deserialize_as = i64)]
    pub account_id: AccountId,
    /// Where the card is in its life (`domain::lifecycle`).
    #[diesel(deserialize_as = String)]
    pub status: CardStatus,
    /// Why it was blocked.
    pub block_reason: Option<String>,
    /// The card that replaced it.
    pub replaced_by: Option<i64>,
    /// Created, µs.
    pub created_at_us: i64,
    /// Last status change, µs.
    pub updated_at_us: i64,
    /// The operator_action event that created it.
    pub event_id: i64,
    /// The event of the last status change.
    pub status_event_id: i64,
    /// The card key version it was personalised with (0: not known): a tap that verifies
    /// only with an older version is refused.
    pub key_version: i32,
}

/// A merchant.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = merchants)]
pub struct Merchant {
    /// The merchant's id, as the API's paths and the log's details name it.
    pub id: i64,
    /// The merchant's trading name, shown on receipts.
    pub name: String,
    /// Category (grocery, hotel, ...).
    #[diesel(deserialize_as = String)]
    pub category: MerchantCategory,
    /// Merchant discount rate, a decimal string.
    #[diesel(deserialize_as = String)]
    pub fee_rate: FeeRate,
    /// The merchant's account.
    #[diesel(deserialize_as = i64)]
    pub account_id: AccountId,
    /// Created, µs.
    pub created_at_us: i64,
    /// The operator_action event that created it.
    pub event_id: i64,
}

/// A service point (clinic desk, library gate, city office).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = service_points)]
pub struct ServicePoint {
    /// The service point's id, as the API's paths and the log's details name it.
    pub id: i64,
    /// The service point's name, shown to citizens at the gate.
    pub name: String,
    /// Service (clinic, library, city_office, other).
    pub service: String,
    /// Access policy, JSON.
    pub policy: String,
    /// Created, µs.
    pub created_at_us: i64,
    /// The operator_action event that created it.
    pub event_id: i64,
}

/// A top-up agent.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = agents)]
pub struct Agent {
    /// The top-up agent's id, as the API's paths and the log's details name it.
    pub id: i64,
    /// The agent's name, shown on top-up receipts.
    pub name: String,
    /// The agent's float account.
    #[diesel(deserialize_as = i64)]
    pub account_id: AccountId,
    /// Created, µs.
    pub created_at_us: i64,
    /// The operator_action event that created it.
    pub event_id: i64,
}

/// A credential (bearer token), stored as the SHA-256 of the token.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = credentials)]
pub struct Credential {
    /// The credential's id, as the API's paths and the log's details name it.
    pub id: i64,
    /// What the credential may do.
    #[diesel(deserialize_as = String)]
    pub role: Role,
    /// Name (a terminal, a person).
    pub name: String,
    /// SHA-256 of the token.
    pub token_hash: Vec<u8>,
    /// For merchant terminals.
    pub merchant_id: Option<i64>,
    /// For service points and gates.
    pub service_point_id: Option<i64>,
    /// For top-up agents.
    pub agent_id: Option<i64>,
    /// Ed25519 public key of a terminal (offline journals), hex.
    pub public_key: Option<String>,
    /// Offline risk limits, JSON.
    pub offline_limits: Option<String>,
    /// Created, µs.
    pub created_at_us: i64,
    /// Revoked, µs.
    pub revoked_at_us: Option<i64>,
    /// The operator_action event that created it.
    pub event_id: i64,
    /// The event that revoked it.
    pub revoked_event_id: Option<i64>,
    /// The named person an operator credential belongs to (NULL for other roles).
    pub person: Option<String>,
    /// The credential that created it (NULL: made on the host by `kartu init` or `kartu
    /// operator add`). For an operator credential made through an approval, the requester.
    pub created_by: Option<i64>,
}

/// What a new credential is: role, name, scope, keys, and who it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewCredentialRow<'a> {
    /// What the credential may do.
    pub role: Role,
    /// Name (a terminal, a person).
    pub name: &'a str,
    /// SHA-256 of the token.
    pub token_hash: &'a [u8],
    /// Merchant, service point, agent.
    pub scope: (Option<i64>, Option<i64>, Option<i64>),
    /// Ed25519 public key of a terminal, hex.
    pub public_key: Option<&'a str>,
    /// Offline risk limits, JSON.
    pub offline_limits: Option<&'a str>,
    /// The person an operator credential belongs to.
    pub person: Option<&'a str>,
    /// The credential that created it.
    pub created_by: Option<i64>,
}

/// What a new holder is (the row adds its id, creation time and event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewHolderRow<'a> {
    /// The holder's full name.
    pub name: &'a str,
    /// HMAC-SHA-256 of the NIK under the installation's key.
    pub nik_hash: &'a [u8],
    /// The holder's categories.
    pub categories: Categories,
}

/// What a new card is: its UID, holder, wallet and key version (it starts active).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewCardRow {
    /// The card's UID.
    pub uid: CardUid,
    /// The holder it belongs to.
    pub holder_id: i64,
    /// Its wallet.
    pub account_id: AccountId,
    /// The card key version it was personalised with.
    pub key_version: i32,
}

/// What a new merchant is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewMerchantRow<'a> {
    /// The trading name, shown on receipts.
    pub name: &'a str,
    /// What it sells.
    pub category: MerchantCategory,
    /// Its merchant discount rate.
    pub fee_rate: FeeRate,
    /// Its account.
    pub account_id: AccountId,
}

/// What a new service point is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewServicePointRow<'a> {
    /// Its name, shown to citizens at the gate.
    pub name: &'a str,
    /// The public service it belongs to.
    pub service: &'a str,
    /// Its access policy, JSON.
    pub policy: &'a str,
}

/// What a new top-up agent is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAgentRow<'a> {
    /// Its name, shown on top-up receipts.
    pub name: &'a str,
    /// Its float account.
    pub account_id: AccountId,
}

/// What a new adjustment asks for (it starts pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewAdjustmentRow<'a> {
    /// The account to credit (positive) or debit (negative).
    pub account_id: AccountId,
    /// The signed amount, minor units.
    pub amount_minor: i64,
    /// The ISO 4217 code of the amount.
    pub currency: &'a str,
    /// Why, as the requester wrote it.
    pub reason: &'a str,
    /// The requesting operator's credential.
    pub requested_by: i64,
}

/// What a new approval request is (it starts pending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewApprovalRow<'a> {
    /// What is asked for (adjustment, fund_agent, ...).
    pub kind: &'a str,
    /// The request, JSON.
    pub payload: &'a str,
    /// The requesting operator's credential.
    pub requested_by: i64,
    /// The requester's person.
    pub requested_person: &'a str,
}

/// A request that needs a second operator's approval.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = approvals)]
pub struct Approval {
    /// The approval's id, as the API's paths and the log's details name it.
    pub id: i64,
    /// `create_operator_credential`, `revoke_operator_credential`, `adjustment` or `fund_agent`.
    pub kind: String,
    /// The request, JSON.
    pub payload: String,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
    /// The operator credential that asked.
    pub requested_by: i64,
    /// Its person.
    pub requested_person: String,
    /// The operator credential that decided.
    pub decided_by: Option<i64>,
    /// Its person.
    pub decided_person: Option<String>,
    /// What the approval did, JSON (credential id, entry seq, or the ledger's refusal).
    pub result: Option<String>,
    /// Asked, µs.
    pub created_at_us: i64,
    /// Decided, µs.
    pub decided_at_us: Option<i64>,
    /// The request's operator_action event.
    pub event_id: i64,
    /// The decision's operator_action event.
    pub decided_event_id: Option<i64>,
}

/// Who decided an approval, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'a> {
    /// `approved` or `rejected`.
    pub status: &'a str,
    /// The deciding operator credential.
    pub by: i64,
    /// Its person.
    pub person: &'a str,
    /// When, µs.
    pub now_us: i64,
    /// The decision's operator_action event.
    pub event_id: i64,
}

/// An adjustment awaiting (or past) a second operator's approval.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = adjustments)]
pub struct Adjustment {
    /// The adjustment's id, as the API's paths and the log's details name it.
    pub id: i64,
    /// The account adjusted.
    #[diesel(deserialize_as = i64)]
    pub account_id: AccountId,
    /// Signed amount, minor units.
    pub amount_minor: i64,
    /// The ISO 4217 code of the amount.
    pub currency: String,
    /// Why the operator asks for it, as they wrote it.
    pub reason: String,
    /// The operator credential that asked.
    pub requested_by: i64,
    /// The operator credential that approved.
    pub approved_by: Option<i64>,
    /// `pending`, `posted` or `rejected`.
    pub status: String,
    /// The entry that posted it.
    pub entry_seq: Option<i64>,
    /// Created, µs.
    pub created_at_us: i64,
    /// The operator_action event that created it.
    pub event_id: i64,
}

/// Reads and writes of the registry, inside one transaction.
#[allow(missing_debug_implementations)]
pub struct Registry<'a>(pub(crate) &'a mut Db);

macro_rules! insert_returning {
    ($self:expr, $table:expr, $values:expr, $ty:ty) => {
        on_db!($self.0, |c| diesel::insert_into($table).values($values).returning(<$ty>::as_returning()).get_result(c))
            .map_err(storage)
    };
}

macro_rules! find {
    ($self:expr, $q:expr, $ty:ty) => {
        // get_result, not first: first binds LIMIT as a parameter, and SQLite re-prepares a
        // statement whose LIMIT is rebound, on every call. These lookups are by unique keys.
        on_db!($self.0, |c| $q.select(<$ty>::as_select()).get_result(c).optional()).map_err(storage)
    };
}

macro_rules! by_event {
    ($fn:ident, $table:ident, $ty:ty) => {
        /// The row created by this event, if it was.
        pub fn $fn(&mut self, event_id: i64) -> Result<Option<$ty>, LedgerError> {
            find!(self, $table::table.filter($table::event_id.eq(event_id)), $ty)
        }
    };
}

macro_rules! all_rows {
    ($fn:ident, $table:ident, $ty:ty) => {
        /// Every row, by id (what `kartu audit verify` compares with the leaves).
        pub fn $fn(&mut self) -> Result<Vec<$ty>, LedgerError> {
            on_db!(self.0, |c| $table::table.order($table::id).select(<$ty>::as_select()).load(c)).map_err(storage)
        }
    };
}

impl Registry<'_> {
    all_rows!(all_holders, holders, Holder);
    all_rows!(all_cards, cards, Card);
    all_rows!(all_agents, agents, Agent);
    all_rows!(all_credentials, credentials, Credential);
    all_rows!(all_adjustments, adjustments, Adjustment);
    all_rows!(all_approvals, approvals, Approval);
    by_event!(holder_by_event, holders, Holder);
    by_event!(card_by_event, cards, Card);
    by_event!(merchant_by_event, merchants, Merchant);
    by_event!(service_point_by_event, service_points, ServicePoint);
    by_event!(agent_by_event, agents, Agent);
    by_event!(credential_by_event, credentials, Credential);
    by_event!(adjustment_by_event, adjustments, Adjustment);

    /// Adds a holder, as the operator action of event `event_id` asked at `now_us`.
    pub fn insert_holder(&mut self, new: NewHolderRow<'_>, now_us: i64, event_id: i64) -> Result<Holder, LedgerError> {
        let values = (
            holders::name.eq(new.name),
            holders::nik_hash.eq(new.nik_hash),
            holders::categories.eq(new.categories.to_string()),
            holders::created_at_us.eq(now_us),
            holders::event_id.eq(event_id),
        );
        insert_returning!(self, holders::table, values, Holder)
    }

    /// A holder by id.
    pub fn holder(&mut self, id: i64) -> Result<Option<Holder>, LedgerError> {
        find!(self, holders::table.find(id), Holder)
    }

    /// A holder by NIK hash.
    pub fn holder_by_nik(&mut self, nik_hash: &[u8]) -> Result<Option<Holder>, LedgerError> {
        find!(self, holders::table.filter(holders::nik_hash.eq(nik_hash)), Holder)
    }

    /// Adds an active card.
    pub fn insert_card(&mut self, new: NewCardRow, now_us: i64, event_id: i64) -> Result<Card, LedgerError> {
        let values = (
            cards::key_version.eq(new.key_version),
            cards::uid.eq(new.uid.to_string()),
            cards::holder_id.eq(new.holder_id),
            cards::account_id.eq(new.account_id.0),
            cards::status.eq(CardStatus::Active.as_str()),
            cards::created_at_us.eq(now_us),
            cards::event_id.eq(event_id),
            cards::status_event_id.eq(event_id),
            cards::updated_at_us.eq(now_us),
        );
        insert_returning!(self, cards::table, values, Card)
    }

    /// A card by id.
    pub fn card(&mut self, id: i64) -> Result<Option<Card>, LedgerError> {
        find!(self, cards::table.find(id), Card)
    }

    /// A card by UID.
    pub fn card_by_uid(&mut self, uid: CardUid) -> Result<Option<Card>, LedgerError> {
        find!(self, cards::table.filter(cards::uid.eq(uid.to_string())), Card)
    }

    /// The cards of a holder.
    pub fn cards_of_holder(&mut self, holder_id: i64) -> Result<Vec<Card>, LedgerError> {
        on_db!(self.0, |c| cards::table
            .filter(cards::holder_id.eq(holder_id))
            .order(cards::id)
            .select(Card::as_select())
            .load(c))
        .map_err(storage)
    }

    /// Sets a card's status as logged by event `event_id`, unless a later event already
    /// changed it; true when it changed.
    pub fn set_card_status(
        &mut self,
        id: i64,
        status: CardStatus,
        reason: Option<BlockReason>,
        replaced_by: Option<i64>,
        now_us: i64,
        event_id: i64,
    ) -> Result<bool, LedgerError> {
        let n = on_db!(self.0, |c| diesel::update(cards::table.find(id).filter(cards::status_event_id.lt(event_id)))
            .set((
                cards::status.eq(status.as_str()),
                cards::block_reason.eq(reason.map(BlockReason::as_str)),
                cards::replaced_by.eq(replaced_by),
                cards::updated_at_us.eq(now_us),
                cards::status_event_id.eq(event_id),
            ))
            .execute(c))
        .map_err(storage)?;
        Ok(n == 1)
    }

    /// Raises a card's key version to `key_version` after a rotation (`POST
    /// /v1/cards/{id}/key-version`, whose `rotate_card_keys` leaf comes first); never
    /// lowers it, so a retry or a slower concurrent rotation to a lower version changes
    /// nothing. Whether the row changed.
    pub fn raise_card_key_version(&mut self, id: i64, key_version: i32, now_us: i64) -> Result<bool, LedgerError> {
        let n = on_db!(self.0, |c| diesel::update(cards::table.find(id).filter(cards::key_version.lt(key_version)))
            .set((cards::key_version.eq(key_version), cards::updated_at_us.eq(now_us)))
            .execute(c))
        .map_err(storage)?;
        Ok(n == 1)
    }

    /// Adds a merchant.
    pub fn insert_merchant(
        &mut self,
        new: NewMerchantRow<'_>,
        now_us: i64,
        event_id: i64,
    ) -> Result<Merchant, LedgerError> {
        let values = (
            merchants::name.eq(new.name),
            merchants::category.eq(new.category.as_str()),
            merchants::fee_rate.eq(new.fee_rate.to_string()),
            merchants::account_id.eq(new.account_id.0),
            merchants::created_at_us.eq(now_us),
            merchants::event_id.eq(event_id),
        );
        insert_returning!(self, merchants::table, values, Merchant)
    }

    /// A merchant by id.
    pub fn merchant(&mut self, id: i64) -> Result<Option<Merchant>, LedgerError> {
        find!(self, merchants::table.find(id), Merchant)
    }

    /// Every merchant.
    pub fn merchants(&mut self) -> Result<Vec<Merchant>, LedgerError> {
        on_db!(self.0, |c| merchants::table.order(merchants::id).select(Merchant::as_select()).load(c)).map_err(storage)
    }

    /// Adds a service point.
    pub fn insert_service_point(
        &mut self,
        new: NewServicePointRow<'_>,
        now_us: i64,
        event_id: i64,
    ) -> Result<ServicePoint, LedgerError> {
        let values = (
            service_points::name.eq(new.name),
            service_points::service.eq(new.service),
            service_points::policy.eq(new.policy),
            service_points::created_at_us.eq(now_us),
            service_points::event_id.eq(event_id),
        );
        insert_returning!(self, service_points::table, values, ServicePoint)
    }

    /// A service point by id.
    pub fn service_point(&mut self, id: i64) -> Result<Option<ServicePoint>, LedgerError> {
        find!(self, service_points::table.find(id), ServicePoint)
    }

    /// Every service point.
    pub fn service_points(&mut self) -> Result<Vec<ServicePoint>, LedgerError> {
        on_db!(self.0, |c| service_points::table.order(service_points::id).select(ServicePoint::as_select()).load(c))
            .map_err(storage)
    }

    /// Adds an agent.
    pub fn insert_agent(&mut self, new: NewAgentRow<'_>, now_us: i64, event_id: i64) -> Result<Agent, LedgerError> {
        let values = (
            agents::name.eq(new.name),
            agents::account_id.eq(new.account_id.0),
            agents::created_at_us.eq(now_us),
            agents::event_id.eq(event_id),
        );
        insert_returning!(self, agents::table, values, Agent)
    }

    /// An agent by id.
    pub fn agent(&mut self, id: i64) -> Result<Option<Agent>, LedgerError> {
        find!(self, agents::table.find(id), Agent)
    }

    /// Adds a credential.
    pub fn insert_credential(
        &mut self,
        new: NewCredentialRow<'_>,
        now_us: i64,
        event_id: i64,
    ) -> Result<Credential, LedgerError> {
        let values = (
            credentials::role.eq(new.role.as_str()),
            credentials::name.eq(new.name),
            credentials::token_hash.eq(new.token_hash),
            credentials::merchant_id.eq(new.scope.0),
            credentials::service_point_id.eq(new.scope.1),
            credentials::agent_id.eq(new.scope.2),
            credentials::public_key.eq(new.public_key),
            credentials::offline_limits.eq(new.offline_limits),
            credentials::created_at_us.eq(now_us),
            credentials::event_id.eq(event_id),
            credentials::person.eq(new.person),
            credentials::created_by.eq(new.created_by),
        );
        insert_returning!(self, credentials::table, values, Credential)
    }

    /// A credential by token hash.
    pub fn credential_by_hash(&mut self, token_hash: &[u8]) -> Result<Option<Credential>, LedgerError> {
        find!(self, credentials::table.filter(credentials::token_hash.eq(token_hash)), Credential)
    }

    /// A credential by token hash and, in the same statement, the card with UID `uid`:
    /// what a card payment reads, in one round trip on PostgreSQL. `None` when no
    /// credential has this hash (the card is then not looked at); the card is `None` when
    /// no card has this UID, or `uid` is `None`.
    pub fn credential_and_card(
        &mut self,
        token_hash: &[u8],
        uid: Option<CardUid>,
    ) -> Result<Option<(Credential, Option<Card>)>, LedgerError> {
        // No UID matches the empty string: the statement (and its plan) stay the same.
        let uid = uid.map_or_else(String::new, |u| u.to_string());
        on_db!(self.0, |c| credentials::table
            .left_join(cards::table.on(cards::uid.eq(&uid)))
            .filter(credentials::token_hash.eq(token_hash))
            .select((Credential::as_select(), Option::<Card>::as_select()))
            .get_result(c)
            .optional())
        .map_err(storage)
    }

    /// A credential by id.
    pub fn credential(&mut self, id: i64) -> Result<Option<Credential>, LedgerError> {
        find!(self, credentials::table.find(id), Credential)
    }

    /// Revokes a credential (at once: every request looks the token up).
    pub fn revoke_credential(&mut self, id: i64, now_us: i64, event_id: i64) -> Result<bool, LedgerError> {
        let n = on_db!(self.0, |c| diesel::update(
            credentials::table.find(id).filter(credentials::revoked_at_us.is_null())
        )
        .set((credentials::revoked_at_us.eq(now_us), credentials::revoked_event_id.eq(event_id)))
        .execute(c))
        .map_err(storage)?;
        Ok(n == 1)
    }

    /// Adds a pending adjustment.
    pub fn insert_adjustment(
        &mut self,
        new: NewAdjustmentRow<'_>,
        now_us: i64,
        event_id: i64,
    ) -> Result<Adjustment, LedgerError> {
        let values = (
            adjustments::account_id.eq(new.account_id.0),
            adjustments::amount_minor.eq(new.amount_minor),
            adjustments::currency.eq(new.currency),
            adjustments::reason.eq(new.reason),
            adjustments::requested_by.eq(new.requested_by),
            adjustments::status.eq("pending"),
            adjustments::created_at_us.eq(now_us),
            adjustments::event_id.eq(event_id),
        );
        insert_returning!(self, adjustments::table, values, Adjustment)
    }

    /// An adjustment by id.
    pub fn adjustment(&mut self, id: i64) -> Result<Option<Adjustment>, LedgerError> {
        find!(self, adjustments::table.find(id), Adjustment)
    }

    /// Marks a pending adjustment posted; false when it was not pending any more.
    pub fn adjustment_posted(&mut self, id: i64, approved_by: i64, entry_seq: i64) -> Result<bool, LedgerError> {
        let n =
            on_db!(self.0, |c| diesel::update(adjustments::table.find(id).filter(adjustments::status.eq("pending")))
                .set((
                    adjustments::status.eq("posted"),
                    adjustments::approved_by.eq(approved_by),
                    adjustments::entry_seq.eq(entry_seq),
                ))
                .execute(c))
            .map_err(storage)?;
        Ok(n == 1)
    }

    /// Marks a pending adjustment rejected (its approval was refused, or the ledger refused
    /// to post it); false when it was not pending any more.
    pub fn adjustment_rejected(&mut self, id: i64) -> Result<bool, LedgerError> {
        let n =
            on_db!(self.0, |c| diesel::update(adjustments::table.find(id).filter(adjustments::status.eq("pending")))
                .set(adjustments::status.eq("rejected"))
                .execute(c))
            .map_err(storage)?;
        Ok(n == 1)
    }

    /// Active operator credentials.
    pub fn active_operators(&mut self) -> Result<Vec<Credential>, LedgerError> {
        on_db!(self.0, |c| credentials::table
            .filter(credentials::role.eq(Role::Operator.as_str()))
            .filter(credentials::revoked_at_us.is_null())
            .order(credentials::id)
            .select(Credential::as_select())
            .load(c))
        .map_err(storage)
    }

    /// Adds a pending approval request.
    pub fn insert_approval(
        &mut self,
        new: NewApprovalRow<'_>,
        now_us: i64,
        event_id: i64,
    ) -> Result<Approval, LedgerError> {
        let values = (
            approvals::kind.eq(new.kind),
            approvals::payload.eq(new.payload),
            approvals::status.eq("pending"),
            approvals::requested_by.eq(new.requested_by),
            approvals::requested_person.eq(new.requested_person),
            approvals::created_at_us.eq(now_us),
            approvals::event_id.eq(event_id),
        );
        insert_returning!(self, approvals::table, values, Approval)
    }

    /// An approval by id.
    pub fn approval(&mut self, id: i64) -> Result<Option<Approval>, LedgerError> {
        find!(self, approvals::table.find(id), Approval)
    }

    /// The approval requested by this event, if one was.
    pub fn approval_by_event(&mut self, event_id: i64) -> Result<Option<Approval>, LedgerError> {
        find!(self, approvals::table.filter(approvals::event_id.eq(event_id)), Approval)
    }

    /// Cards by id after `after`, at most `limit`, matching every filter given: one UID, one
    /// holder, one status (the back office's list and search).
    pub fn cards_page(&mut self, filter: &CardFilter, after: i64, limit: i64) -> Result<Vec<Card>, LedgerError> {
        macro_rules! query {
            () => {{
                let mut q = cards::table.filter(cards::id.gt(after)).into_boxed();
                if let Some(uid) = filter.uid {
                    q = q.filter(cards::uid.eq(uid.to_string()));
                }
                if let Some(holder) = filter.holder_id {
                    q = q.filter(cards::holder_id.eq(holder));
                }
                if let Some(status) = filter.status {
                    q = q.filter(cards::status.eq(status.as_str()));
                }
                q.order(cards::id).limit(limit).select(Card::as_select())
            }};
        }
        on_db!(self.0, |c| query!().load(c)).map_err(storage)
    }

    /// Holders by id after `after`, at most `limit`; with `name`, those whose name holds it
    /// (ASCII letters compared without case).
    pub fn holders_page(&mut self, name: Option<&str>, after: i64, limit: i64) -> Result<Vec<Holder>, LedgerError> {
        let pattern = name.map(|n| format!("%{}%", n.to_lowercase().replace(['%', '_', '\\'], "")));
        macro_rules! query {
            () => {{
                let mut q = holders::table.filter(holders::id.gt(after)).into_boxed();
                if let Some(p) = &pattern {
                    q = q.filter(
                        diesel::dsl::sql::<diesel::sql_types::Bool>("lower(name) LIKE ")
                            .bind::<diesel::sql_types::Text, _>(p.clone()),
                    );
                }
                q.order(holders::id).limit(limit).select(Holder::as_select())
            }};
        }
        on_db!(self.0, |c| query!().load(c)).map_err(storage)
    }

    /// Credentials by id after `after`, at most `limit`, of one role or all; revoked ones
    /// only when asked.
    pub fn credentials_page(
        &mut self,
        role: Option<Role>,
        revoked: bool,
        after: i64,
        limit: i64,
    ) -> Result<Vec<Credential>, LedgerError> {
        macro_rules! query {
            () => {{
                let mut q = credentials::table.filter(credentials::id.gt(after)).into_boxed();
                if let Some(role) = role {
                    q = q.filter(credentials::role.eq(role.as_str()));
                }
                if !revoked {
                    q = q.filter(credentials::revoked_at_us.is_null());
                }
                q.order(credentials::id).limit(limit).select(Credential::as_select())
            }};
        }
        on_db!(self.0, |c| query!().load(c)).map_err(storage)
    }

    /// A terminal's offline upload state: its last journal record's number and when the
    /// last upload advanced it, µs.
    pub fn offline_upload(&mut self, credential_id: i64) -> Result<Option<(i64, i64)>, LedgerError> {
        on_db!(self.0, |c| offline_heads::table
            .find(credential_id)
            .select((offline_heads::last_seq, offline_heads::updated_at_us))
            .get_result(c)
            .optional())
        .map_err(storage)
    }

    /// What a terminal's offline payments under one sync add up to (its exposure against
    /// that sync's outstanding limit), minor units.
    pub fn offline_exposure(&mut self, credential_id: i64, sync_id: i64) -> Result<i64, LedgerError> {
        self.0.offline_sync_total(credential_id, sync_id)
    }

    /// Approvals by id after `after`, of one status or all, at most `limit`.
    pub fn approvals(&mut self, status: Option<&str>, after: i64, limit: i64) -> Result<Vec<Approval>, LedgerError> {
        // A boxed query is typed by its backend: build it once per backend.
        macro_rules! query {
            () => {{
                let mut q = approvals::table.filter(approvals::id.gt(after)).into_boxed();
                if let Some(st) = status {
                    q = q.filter(approvals::status.eq(st.to_owned()));
                }
                q.order(approvals::id).limit(limit).select(Approval::as_select())
            }};
        }
        on_db!(self.0, |c| query!().load(c)).map_err(storage)
    }

    /// Decides a pending approval (once: false when it was decided already).
    pub fn decide_approval(&mut self, id: i64, d: Decision<'_>) -> Result<bool, LedgerError> {
        let n = on_db!(self.0, |c| diesel::update(approvals::table.find(id).filter(approvals::status.eq("pending")))
            .set((
                approvals::status.eq(d.status),
                approvals::decided_by.eq(d.by),
                approvals::decided_person.eq(d.person),
                approvals::decided_at_us.eq(d.now_us),
                approvals::decided_event_id.eq(d.event_id),
            ))
            .execute(c))
        .map_err(storage)?;
        Ok(n == 1)
    }

    /// Records what an approval did (once: false when a result is there already).
    pub fn set_approval_result(&mut self, id: i64, result: &str) -> Result<bool, LedgerError> {
        let n = on_db!(self.0, |c| diesel::update(approvals::table.find(id).filter(approvals::result.is_null()))
            .set(approvals::result.eq(result))
            .execute(c))
        .map_err(storage)?;
        Ok(n == 1)
    }

    /// Where a terminal's uploaded offline journal stands: (last seq, its hash).
    pub fn offline_head(&mut self, credential_id: i64) -> Result<Option<(i64, Vec<u8>)>, LedgerError> {
        on_db!(self.0, |c| offline_heads::table
            .find(credential_id)
            .select((offline_heads::last_seq, offline_heads::last_hash))
            .get_result(c)
            .optional())
        .map_err(storage)
    }

    /// Moves a terminal's head from `old_seq` to `seq` (compare-and-set: false when another
    /// upload moved it first).
    pub fn advance_offline_head(
        &mut self,
        credential_id: i64,
        old_seq: i64,
        seq: i64,
        hash: &[u8],
        now_us: i64,
    ) -> Result<bool, LedgerError> {
        let n = if old_seq == 0 {
            on_db!(self.0, |c| diesel::insert_into(offline_heads::table)
                .values((
                    offline_heads::credential_id.eq(credential_id),
                    offline_heads::last_seq.eq(seq),
                    offline_heads::last_hash.eq(hash),
                    offline_heads::updated_at_us.eq(now_us),
                ))
                .on_conflict_do_nothing()
                .execute(c))
        } else {
            on_db!(self.0, |c| diesel::update(
                offline_heads::table.find(credential_id).filter(offline_heads::last_seq.eq(old_seq))
            )
            .set((
                offline_heads::last_seq.eq(seq),
                offline_heads::last_hash.eq(hash),
                offline_heads::updated_at_us.eq(now_us)
            ))
            .execute(c))
        }
        .map_err(storage)?;
        Ok(n == 1)
    }

    /// Records what became of an offline record (once; a second time is ignored).
    #[allow(clippy::too_many_arguments)]
    pub fn insert_offline_record(
        &mut self,
        credential_id: i64,
        seq: i64,
        record_hash: &[u8],
        result: &str,
        entry_seq: Option<i64>,
        event_id: Option<i64>,
        now_us: i64,
    ) -> Result<(), LedgerError> {
        on_db!(self.0, |c| diesel::insert_into(offline_records::table)
            .values((
                offline_records::credential_id.eq(credential_id),
                offline_records::seq.eq(seq),
                offline_records::record_hash.eq(record_hash),
                offline_records::result.eq(result),
                offline_records::entry_seq.eq(entry_seq),
                offline_records::event_id.eq(event_id),
                offline_records::created_at_us.eq(now_us),
            ))
            .on_conflict_do_nothing()
            .execute(c))
        .map_err(storage)?;
        Ok(())
    }

    /// What became of a terminal's offline records, by seq: (seq, result, entry_seq).
    pub fn offline_records(&mut self, credential_id: i64) -> Result<Vec<(i64, String, Option<i64>)>, LedgerError> {
        on_db!(self.0, |c| offline_records::table
            .filter(offline_records::credential_id.eq(credential_id))
            .order(offline_records::seq)
            .select((offline_records::seq, offline_records::result, offline_records::entry_seq))
            .load(c))
        .map_err(storage)
    }

    /// Records what a terminal received at a sync (its limits, JSON, and the UIDs it must
    /// refuse); returns the sync's id, which its offline records name.
    pub fn insert_offline_sync(
        &mut self,
        credential_id: i64,
        time_us: i64,
        limits: Option<&str>,
        denied: &[String],
    ) -> Result<i64, LedgerError> {
        let denied = serde_json::to_string(denied).map_err(storage)?;
        let row = (
            offline_syncs::credential_id.eq(credential_id),
            offline_syncs::time_us.eq(time_us),
            offline_syncs::limits.eq(limits),
            offline_syncs::denied.eq(&denied),
        );
        on_db!(self.0, |c| diesel::insert_into(offline_syncs::table)
            .values(row)
            .returning(offline_syncs::id)
            .get_result(c))
        .map_err(storage)
    }

    /// A terminal's sync: `(time, limits, denied UIDs)`.
    pub fn offline_sync(&mut self, credential_id: i64, id: i64) -> Result<Option<OfflineSync>, LedgerError> {
        let row: Option<(i64, i64, Option<String>, String)> = on_db!(self.0, |c| offline_syncs::table
            .filter(offline_syncs::id.eq(id))
            .filter(offline_syncs::credential_id.eq(credential_id))
            .select((offline_syncs::id, offline_syncs::time_us, offline_syncs::limits, offline_syncs::denied))
            .first(c)
            .optional())
        .map_err(storage)?;
        row.map(|(id, time_us, limits, denied)| {
            let denied: Vec<String> = serde_json::from_str(&denied).map_err(storage)?;
            Ok(OfflineSync { id, time_us, limits, denied })
        })
        .transpose()
    }

    /// The terminal's newest sync, if any.
    pub fn offline_sync_latest(&mut self, credential_id: i64) -> Result<Option<i64>, LedgerError> {
        on_db!(self.0, |c| offline_syncs::table
            .filter(offline_syncs::credential_id.eq(credential_id))
            .order((offline_syncs::time_us.desc(), offline_syncs::id.desc()))
            .select(offline_syncs::id)
            .first(c)
            .optional())
        .map_err(storage)
    }

    /// Every active card's UID (upper-case hex) with its holder's categories: what a
    /// service point's gate needs to apply its policy offline.
    pub fn active_cards_with_categories(&mut self) -> Result<Vec<(String, Categories)>, LedgerError> {
        let cards: Vec<(String, i64)> = on_db!(self.0, |c| cards::table
            .filter(cards::status.eq(CardStatus::Active.as_str()))
            .select((cards::uid, cards::holder_id))
            .load(c))
        .map_err(storage)?;
        let mut holders = std::collections::HashMap::new();
        let rows =
            on_db!(self.0, |c| holders::table.select((holders::id, holders::categories)).load::<(i64, String)>(c))
                .map_err(storage)?;
        for (id, text) in rows {
            let categories = Categories::parse_stored(&text).map_err(|_| super::corrupt("holder categories", &text))?;
            holders.insert(id, categories);
        }
        Ok(cards.into_iter().map(|(uid, holder)| (uid, holders.get(&holder).copied().unwrap_or_default())).collect())
    }

    /// Cards terminals must refuse offline: blocked or replaced, or owing after a shortfall.
    pub fn deny_list(&mut self) -> Result<Vec<String>, LedgerError> {
        let mut uids: Vec<String> = on_db!(self.0, |c| cards::table
            .filter(cards::status.ne(CardStatus::Active.as_str()))
            .select(cards::uid)
            .load(c))
        .map_err(storage)?;
        let rows: Vec<(i64, i64)> = on_db!(self.0, |c| wallet_debts::table
            .select((wallet_debts::wallet_id, wallet_debts::delta_minor))
            .load(c))
        .map_err(storage)?;
        let mut owing: std::collections::BTreeMap<i64, i64> = std::collections::BTreeMap::new();
        for (wallet, delta) in rows {
            *owing.entry(wallet).or_default() += delta;
        }
        let wallets: Vec<i64> = owing.into_iter().filter(|(_, owed)| *owed > 0).map(|(w, _)| w).collect();
        if !wallets.is_empty() {
            let owing_uids: Vec<String> =
                on_db!(self.0, |c| cards::table.filter(cards::account_id.eq_any(&wallets)).select(cards::uid).load(c))
                    .map_err(storage)?;
            uids.extend(owing_uids);
        }
        uids.sort();
        uids.dedup();
        Ok(uids)
    }
}
