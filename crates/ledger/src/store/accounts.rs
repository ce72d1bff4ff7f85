//! Accounts (`accounts`) and their balances (the balance after each account's latest
//! posting).

use std::collections::HashMap;

use diesel::prelude::*;

use super::in_list::in_list;
use super::schema::accounts;
use super::{corrupt, storage, Db};
use crate::domain::{Account, AccountId, AccountKind, NewAccount};
use crate::machine::AccountState;
use crate::money::Currency;
use crate::LedgerError;

#[derive(Queryable, Selectable)]
#[diesel(table_name = accounts)]
struct AccountRow {
    id: i64,
    kind: String,
    currency: String,
    name: String,
    never_negative: bool,
    balance_max_minor: Option<i64>,
    created_at_us: i64,
}

impl AccountRow {
    fn into_account(self) -> Result<Account, LedgerError> {
        Ok(Account {
            id: AccountId(self.id),
            kind: AccountKind::parse(&self.kind).ok_or_else(|| corrupt("account kind", &self.kind))?,
            currency: Currency::parse(&self.currency).map_err(|_| corrupt("currency", &self.currency))?,
            name: self.name,
            never_negative: self.never_negative,
            balance_max_minor: self.balance_max_minor,
            created_at_us: self.created_at_us,
        })
    }
}

#[derive(Insertable)]
#[diesel(table_name = accounts)]
struct NewAccountRow<'a> {
    kind: &'a str,
    currency: &'a str,
    name: &'a str,
    never_negative: bool,
    balance_max_minor: Option<i64>,
    created_at_us: i64,
}

#[derive(QueryableByName)]
struct BalanceRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    account_id: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    balance_after_minor: i64,
}

/// Accounts: created, read, and their balances now.
impl Db {
    /// Creates accounts in one transaction (all or none).
    pub fn create_accounts(&mut self, new: &[NewAccount], now_us: i64) -> Result<Vec<Account>, LedgerError> {
        self.transaction(|db| new.iter().map(|n| db.create_account(n, now_us)).collect())
    }

    pub fn create_account(&mut self, new: &NewAccount, now_us: i64) -> Result<Account, LedgerError> {
        let row = NewAccountRow {
            kind: new.kind.as_str(),
            currency: new.currency.code(),
            name: &new.name,
            never_negative: new.kind.never_negative(),
            balance_max_minor: new.balance_max_minor,
            created_at_us: now_us,
        };
        let created: AccountRow = on_db!(self, |c| diesel::insert_into(accounts::table)
            .values(&row)
            .returning(AccountRow::as_returning())
            .get_result(c))
        .map_err(storage)?;
        created.into_account()
    }

    /// The system account of `kind` in `currency`, created if it does not exist yet (safe
    /// when several processes race: the unique index decides, everyone reads the winner).
    pub fn system_account(
        &mut self,
        kind: AccountKind,
        currency: Currency,
        now_us: i64,
    ) -> Result<Account, LedgerError> {
        let row = NewAccountRow {
            kind: kind.as_str(),
            currency: currency.code(),
            name: &format!("{} {}", kind.as_str(), currency),
            never_negative: kind.never_negative(),
            balance_max_minor: None,
            created_at_us: now_us,
        };
        on_db!(self, |c| diesel::insert_into(accounts::table).values(&row).on_conflict_do_nothing().execute(c))
            .map_err(storage)?;
        let found: AccountRow = on_db!(self, |c| accounts::table
            .filter(accounts::kind.eq(kind.as_str()).and(accounts::currency.eq(currency.code())))
            .select(AccountRow::as_select())
            .get_result(c))
        .map_err(storage)?;
        found.into_account()
    }

    pub fn accounts(&mut self, ids: &[AccountId]) -> Result<Vec<Account>, LedgerError> {
        // The writer calls this every batch; with a warm cache there is nothing to load.
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = ids.iter().map(|a| a.0).collect();
        let rows: Vec<AccountRow> = on_db!(self, |c| accounts::table
            .filter(in_list!(accounts::id, &ids))
            .select(AccountRow::as_select())
            .load(c))
        .map_err(storage)?;
        rows.into_iter().map(AccountRow::into_account).collect()
    }

    /// The balance after the latest posting of each account (accounts without postings are
    /// left out: their balance is zero).
    pub fn balances(&mut self, ids: &[AccountId]) -> Result<HashMap<AccountId, i64>, LedgerError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        // Integers only, so formatting them into the statement is safe.
        let list = ids.iter().map(|a| a.0.to_string()).collect::<Vec<_>>().join(",");
        let sql = format!(
            "SELECT p.account_id, p.balance_after_minor FROM postings p
             WHERE p.account_id IN ({list})
               AND p.entry_seq = (SELECT max(q.entry_seq) FROM postings q WHERE q.account_id = p.account_id)"
        );
        let rows: Vec<BalanceRow> = on_db!(self, |c| diesel::sql_query(&sql).load(c)).map_err(storage)?;
        Ok(rows.into_iter().map(|r| (AccountId(r.account_id), r.balance_after_minor)).collect())
    }

    /// Accounts with their current balances.
    pub fn account_states(&mut self, ids: &[AccountId]) -> Result<Vec<AccountState>, LedgerError> {
        let accounts = self.accounts(ids)?;
        let balances = self.balances(ids)?;
        Ok(accounts
            .into_iter()
            .map(|account| {
                let balance_minor = balances.get(&account.id).copied().unwrap_or(0);
                AccountState { account, balance_minor }
            })
            .collect())
    }

    /// Every account (for the auditor: kinds and currencies).
    pub fn all_accounts(&mut self) -> Result<Vec<Account>, LedgerError> {
        let rows: Vec<AccountRow> =
            on_db!(self, |c| accounts::table.order(accounts::id).select(AccountRow::as_select()).load(c))
                .map_err(storage)?;
        rows.into_iter().map(AccountRow::into_account).collect()
    }
}
