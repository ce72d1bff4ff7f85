//! The audit log's leaf bytes: a canonical, documented encoding of each journal entry
//! (docs/AUDIT.md describes it byte by byte), so anyone can recompute the Merkle tree
//! without this code. Encoding and decoding only; no I/O.

use crate::domain::{AccountId, Entry, EntryKind, EventRecord, IdempotencyKey, Posting, References};
use crate::money::Currency;

/// The replay of the books from decoded leaves ([`crate::replay`]), which both verifiers use.
pub use crate::replay::Replayer;

/// First byte of every leaf.
pub const LEAF_FORMAT_VERSION: u8 = 1;
/// Second byte: what the leaf records.
pub const LEAF_TYPE_JOURNAL_ENTRY: u8 = 1;
/// Second byte: an event (access decision, operator action, tap).
pub const LEAF_TYPE_EVENT: u8 = 2;
/// Longest leaf we decode.
pub const LEAF_BYTES_MAX: usize = 16 * 1024;

/// Why leaf bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    /// The bytes end before the structure does.
    #[error("leaf is truncated")]
    Truncated,
    /// Bytes remain after the structure.
    #[error("leaf has {0} trailing bytes")]
    Trailing(usize),
    /// Unknown format version or leaf type.
    #[error("unknown leaf format {version} type {leaf_type}")]
    UnknownFormat {
        /// First byte.
        version: u8,
        /// Second byte.
        leaf_type: u8,
    },
    /// A field holds a value that cannot be.
    #[error("leaf field {0} is invalid")]
    Invalid(&'static str),
    /// Longer than [`LEAF_BYTES_MAX`].
    #[error("leaf is too long")]
    TooLong,
}

/// The canonical leaf bytes of a journal entry.
pub fn entry_leaf(e: &Entry) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(160 + 27 * e.postings.len()));
    w.u8(LEAF_FORMAT_VERSION);
    w.u8(LEAF_TYPE_JOURNAL_ENTRY);
    w.i64(e.seq);
    w.i64(e.time_us);
    w.short_text(e.kind.as_str());
    w.currency(e.currency);
    w.i64(e.amount_minor);
    w.i64(e.fee_minor);
    w.opt_i64(e.account_id.map(|a| a.0));
    w.opt_i64(e.counterparty_id.map(|a| a.0));
    w.opt_i64(e.related_seq);
    w.opt_i64(e.expires_at_us);
    let r = &e.references;
    w.opt_i64(r.card_id);
    w.opt_i64(r.card_read_counter);
    w.opt_text(r.terminal_id.as_deref());
    w.opt_text(r.merchant_reference.as_deref());
    w.opt_text(r.memo.as_deref());
    w.opt_text(e.idempotency_key.as_ref().map(|k| k.as_str()));
    // At most POSTINGS_PER_ENTRY_MAX (16) postings, so the count fits a byte.
    w.u8(e.postings.len() as u8);
    for p in &e.postings {
        w.i64(p.account_id.0);
        w.currency(p.currency);
        w.i64(p.amount_minor);
        w.i64(p.balance_after_minor);
    }
    w.0
}

/// Decodes the leaf bytes of a journal entry (the inverse of [`entry_leaf`]; the entry's
/// `request_hash` and `audit` are not part of the leaf and come back as `None`).
pub fn decode_entry_leaf(bytes: &[u8]) -> Result<Entry, LeafError> {
    if bytes.len() > LEAF_BYTES_MAX {
        return Err(LeafError::TooLong);
    }
    let mut r = Reader(bytes);
    let (version, leaf_type) = (r.u8()?, r.u8()?);
    if version != LEAF_FORMAT_VERSION || leaf_type != LEAF_TYPE_JOURNAL_ENTRY {
        return Err(LeafError::UnknownFormat { version, leaf_type });
    }
    let seq = r.i64()?;
    let time_us = r.i64()?;
    let kind = EntryKind::parse(&r.short_text()?).ok_or(LeafError::Invalid("kind"))?;
    let currency = r.currency()?;
    let amount_minor = r.i64()?;
    let fee_minor = r.i64()?;
    let account_id = r.opt_i64()?.map(AccountId);
    let counterparty_id = r.opt_i64()?.map(AccountId);
    let related_seq = r.opt_i64()?;
    let expires_at_us = r.opt_i64()?;
    let card_id = r.opt_i64()?;
    let card_read_counter = r.opt_i64()?;
    let terminal_id = r.opt_text()?;
    let merchant_reference = r.opt_text()?;
    let memo = r.opt_text()?;
    let idempotency_key = match r.opt_text()? {
        Some(k) => Some(IdempotencyKey::parse(&k).map_err(|_| LeafError::Invalid("idempotency_key"))?),
        None => None,
    };
    let count = r.u8()?;
    let mut postings = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let account_id = AccountId(r.i64()?);
        let currency = r.currency()?;
        let amount_minor = r.i64()?;
        let balance_after_minor = r.i64()?;
        postings.push(Posting { account_id, currency, amount_minor, balance_after_minor });
    }
    if !r.0.is_empty() {
        return Err(LeafError::Trailing(r.0.len()));
    }
    Ok(Entry {
        seq,
        kind,
        time_us,
        currency,
        amount_minor,
        fee_minor,
        account_id,
        counterparty_id,
        related_seq,
        expires_at_us,
        references: References { terminal_id, card_id, card_read_counter, merchant_reference, memo },
        idempotency_key,
        request_hash: None,
        postings,
        audit: None,
    })
}

/// The canonical leaf bytes of an event.
pub fn event_leaf(e: &EventRecord) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(96 + e.payload.len()));
    w.u8(LEAF_FORMAT_VERSION);
    w.u8(LEAF_TYPE_EVENT);
    w.i64(e.id);
    w.i64(e.time_us);
    w.short_text(&e.kind);
    w.opt_text(e.scope.as_deref());
    w.opt_i64(e.card_id);
    w.opt_i64(e.card_read_counter);
    w.opt_text(e.queue_key.as_deref());
    w.opt_i64(e.queue_number);
    w.opt_text(e.idempotency_key.as_ref().map(|k| k.as_str()));
    // Payloads are at most EVENT_PAYLOAD_MAX (8 KiB).
    w.opt_text(Some(&e.payload));
    w.0
}

/// Decodes the leaf bytes of an event (the inverse of [`event_leaf`]; `request_hash` and
/// `audit` come back as `None`).
pub fn decode_event_leaf(bytes: &[u8]) -> Result<EventRecord, LeafError> {
    if bytes.len() > LEAF_BYTES_MAX {
        return Err(LeafError::TooLong);
    }
    let mut r = Reader(bytes);
    let (version, leaf_type) = (r.u8()?, r.u8()?);
    if version != LEAF_FORMAT_VERSION || leaf_type != LEAF_TYPE_EVENT {
        return Err(LeafError::UnknownFormat { version, leaf_type });
    }
    let id = r.i64()?;
    let time_us = r.i64()?;
    let kind = r.short_text()?;
    let scope = r.opt_text()?;
    let card_id = r.opt_i64()?;
    let card_read_counter = r.opt_i64()?;
    let queue_key = r.opt_text()?;
    let queue_number = r.opt_i64()?;
    let idempotency_key = match r.opt_text()? {
        Some(k) => Some(IdempotencyKey::parse(&k).map_err(|_| LeafError::Invalid("idempotency_key"))?),
        None => None,
    };
    let payload = r.opt_text()?.ok_or(LeafError::Invalid("payload"))?;
    if !r.0.is_empty() {
        return Err(LeafError::Trailing(r.0.len()));
    }
    Ok(EventRecord {
        id,
        kind,
        time_us,
        scope,
        card_id,
        card_read_counter,
        queue_key,
        queue_number,
        idempotency_key,
        request_hash: None,
        payload,
        holder_key: None,
        audit: None,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn currency(&mut self, c: Currency) {
        self.0.extend_from_slice(c.code().as_bytes());
    }
    fn short_text(&mut self, s: &str) {
        // Kinds are short ASCII names.
        self.u8(s.len() as u8);
        self.0.extend_from_slice(s.as_bytes());
    }
    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => {
                self.u8(1);
                self.i64(v);
            }
            None => self.u8(0),
        }
    }
    fn opt_text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => {
                self.u8(1);
                // References are at most REFERENCE_TEXT_MAX (200) bytes, keys 128.
                self.0.extend_from_slice(&(s.len() as u16).to_be_bytes());
                self.0.extend_from_slice(s.as_bytes());
            }
            None => self.u8(0),
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LeafError> {
        if self.0.len() < n {
            return Err(LeafError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, LeafError> {
        Ok(self.take(1)?[0])
    }
    fn i64(&mut self) -> Result<i64, LeafError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }
    fn currency(&mut self) -> Result<Currency, LeafError> {
        let b = self.take(3)?;
        let code = std::str::from_utf8(b).map_err(|_| LeafError::Invalid("currency"))?;
        Currency::parse(code).map_err(|_| LeafError::Invalid("currency"))
    }
    fn short_text(&mut self) -> Result<String, LeafError> {
        let n = usize::from(self.u8()?);
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map_err(|_| LeafError::Invalid("text"))
    }
    fn flag(&mut self) -> Result<bool, LeafError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(LeafError::Invalid("presence flag")),
        }
    }
    fn opt_i64(&mut self) -> Result<Option<i64>, LeafError> {
        if self.flag()? {
            Ok(Some(self.i64()?))
        } else {
            Ok(None)
        }
    }
    fn opt_text(&mut self) -> Result<Option<String>, LeafError> {
        if !self.flag()? {
            return Ok(None);
        }
        let len = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([len[0], len[1]]));
        let b = self.take(n)?;
        String::from_utf8(b.to_vec()).map(Some).map_err(|_| LeafError::Invalid("text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            seq: 3,
            kind: EntryKind::Payment,
            time_us: 1_800_000_000_000_000,
            currency: Currency::IDR,
            amount_minor: 1_250_000,
            fee_minor: 8_750,
            account_id: Some(AccountId(7)),
            counterparty_id: Some(AccountId(9)),
            related_seq: None,
            expires_at_us: None,
            references: References {
                terminal_id: Some("pos-1".into()),
                card_id: Some(11),
                card_read_counter: Some(61),
                merchant_reference: Some("order 77".into()),
                memo: None,
            },
            idempotency_key: None,
            request_hash: None,
            postings: vec![
                Posting {
                    account_id: AccountId(7),
                    currency: Currency::IDR,
                    amount_minor: -1_250_000,
                    balance_after_minor: 3_750_000,
                },
                Posting {
                    account_id: AccountId(9),
                    currency: Currency::IDR,
                    amount_minor: 1_241_250,
                    balance_after_minor: 1_241_250,
                },
                Posting {
                    account_id: AccountId(2),
                    currency: Currency::IDR,
                    amount_minor: 8_750,
                    balance_after_minor: 8_750,
                },
            ],
            audit: None,
        }
    }

    /// The layout of docs/AUDIT.md, written out by hand for one entry.
    #[test]
    fn encoding_matches_the_documented_layout() {
        let mut want = vec![1u8, 1];
        want.extend_from_slice(&3i64.to_be_bytes());
        want.extend_from_slice(&1_800_000_000_000_000i64.to_be_bytes());
        want.push(7);
        want.extend_from_slice(b"payment");
        want.extend_from_slice(b"IDR");
        want.extend_from_slice(&1_250_000i64.to_be_bytes());
        want.extend_from_slice(&8_750i64.to_be_bytes());
        for v in [Some(7i64), Some(9), None, None, Some(11), Some(61)] {
            match v {
                Some(v) => {
                    want.push(1);
                    want.extend_from_slice(&v.to_be_bytes());
                }
                None => want.push(0),
            }
        }
        want.extend_from_slice(&[1, 0, 5]);
        want.extend_from_slice(b"pos-1");
        want.extend_from_slice(&[1, 0, 8]);
        want.extend_from_slice(b"order 77");
        want.extend_from_slice(&[0, 0, 3]);
        for (a, amount, after) in [(7i64, -1_250_000i64, 3_750_000i64), (9, 1_241_250, 1_241_250), (2, 8_750, 8_750)] {
            want.extend_from_slice(&a.to_be_bytes());
            want.extend_from_slice(b"IDR");
            want.extend_from_slice(&amount.to_be_bytes());
            want.extend_from_slice(&after.to_be_bytes());
        }
        assert_eq!(hex::encode(entry_leaf(&sample())), hex::encode(&want));
        assert_eq!(decode_entry_leaf(&want), Ok(sample()));
    }

    #[test]
    fn truncated_or_extended_leaves_are_errors() {
        let leaf = entry_leaf(&sample());
        for n in 0..leaf.len() {
            assert!(decode_entry_leaf(&leaf[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut longer = leaf.clone();
        longer.push(0);
        assert_eq!(decode_entry_leaf(&longer), Err(LeafError::Trailing(1)));
    }

    proptest::proptest! {
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            let _ = decode_entry_leaf(&bytes);
        }
    }
}
