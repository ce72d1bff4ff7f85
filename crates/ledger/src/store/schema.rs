//! Diesel table definitions, the same on both backends (see `migrations/`).

diesel::table! {
    accounts (id) {
        id -> BigInt,
        kind -> Text,
        currency -> Text,
        name -> Text,
        never_negative -> Bool,
        balance_max_minor -> Nullable<BigInt>,
        created_at_us -> BigInt,
    }
}

diesel::table! {
    ledger_head (id) {
        id -> Integer,
        last_seq -> BigInt,
        last_time_us -> BigInt,
        tree_size -> BigInt,
    }
}

diesel::table! {
    journal_entries (seq) {
        seq -> BigInt,
        kind -> Text,
        time_us -> BigInt,
        currency -> Text,
        amount_minor -> BigInt,
        fee_minor -> BigInt,
        account_id -> Nullable<BigInt>,
        counterparty_id -> Nullable<BigInt>,
        related_seq -> Nullable<BigInt>,
        expires_at_us -> Nullable<BigInt>,
        terminal_id -> Nullable<Text>,
        card_id -> Nullable<BigInt>,
        card_read_counter -> Nullable<BigInt>,
        merchant_reference -> Nullable<Text>,
        memo -> Nullable<Text>,
        idempotency_key -> Nullable<Text>,
        request_hash -> Nullable<Binary>,
        leaf_index -> Nullable<BigInt>,
    }
}

diesel::table! {
    postings (entry_seq, leg) {
        entry_seq -> BigInt,
        leg -> Integer,
        account_id -> BigInt,
        amount_minor -> BigInt,
        balance_after_minor -> BigInt,
    }
}

diesel::table! {
    audit_leaves (leaf_index) {
        leaf_index -> BigInt,
        kind -> Text,
        leaf -> Binary,
        leaf_hash -> Binary,
    }
}

diesel::table! {
    merkle_nodes (level, idx) {
        level -> Integer,
        idx -> BigInt,
        hash -> Binary,
    }
}

diesel::table! {
    checkpoints (tree_size) {
        tree_size -> BigInt,
        root -> Binary,
        time_us -> BigInt,
        note -> Text,
    }
}

diesel::joinable!(postings -> journal_entries (entry_seq));
diesel::joinable!(postings -> accounts (account_id));
diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    ledger_head,
    journal_entries,
    postings,
    audit_leaves,
    merkle_nodes,
    checkpoints
);

diesel::table! {
    card_counters (card_id) {
        card_id -> BigInt,
        last_counter -> BigInt,
        time_us -> BigInt,
    }
}

diesel::table! {
    card_replays (id) {
        id -> BigInt,
        card_id -> BigInt,
        counter -> BigInt,
        last_counter -> BigInt,
        time_us -> BigInt,
        source -> Nullable<Text>,
    }
}

diesel::table! {
    audit_events (id) {
        id -> BigInt,
        kind -> Text,
        time_us -> BigInt,
        scope -> Nullable<Text>,
        card_id -> Nullable<BigInt>,
        card_read_counter -> Nullable<BigInt>,
        queue_key -> Nullable<Text>,
        queue_number -> Nullable<BigInt>,
        idempotency_key -> Nullable<Text>,
        request_hash -> Nullable<Binary>,
        payload -> Text,
        leaf_index -> Nullable<BigInt>,
    }
}
