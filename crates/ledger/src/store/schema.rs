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
        holder_key -> Nullable<Text>,
    }
}

diesel::table! {
    holders (id) {
        id -> BigInt,
        name -> Text,
        nik_hash -> Binary,
        categories -> Text,
        created_at_us -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    cards (id) {
        id -> BigInt,
        uid -> Text,
        holder_id -> BigInt,
        account_id -> BigInt,
        status -> Text,
        block_reason -> Nullable<Text>,
        replaced_by -> Nullable<BigInt>,
        created_at_us -> BigInt,
        updated_at_us -> BigInt,
        event_id -> BigInt,
        status_event_id -> BigInt,
        key_version -> Integer,
    }
}

diesel::table! {
    merchants (id) {
        id -> BigInt,
        name -> Text,
        category -> Text,
        fee_rate -> Text,
        account_id -> BigInt,
        created_at_us -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    service_points (id) {
        id -> BigInt,
        name -> Text,
        service -> Text,
        policy -> Text,
        created_at_us -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    agents (id) {
        id -> BigInt,
        name -> Text,
        account_id -> BigInt,
        created_at_us -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    credentials (id) {
        id -> BigInt,
        role -> Text,
        name -> Text,
        token_hash -> Binary,
        merchant_id -> Nullable<BigInt>,
        service_point_id -> Nullable<BigInt>,
        agent_id -> Nullable<BigInt>,
        public_key -> Nullable<Text>,
        offline_limits -> Nullable<Text>,
        created_at_us -> BigInt,
        revoked_at_us -> Nullable<BigInt>,
        event_id -> BigInt,
        revoked_event_id -> Nullable<BigInt>,
        person -> Nullable<Text>,
        created_by -> Nullable<BigInt>,
    }
}

diesel::table! {
    approvals (id) {
        id -> BigInt,
        kind -> Text,
        payload -> Text,
        status -> Text,
        requested_by -> BigInt,
        requested_person -> Text,
        decided_by -> Nullable<BigInt>,
        decided_person -> Nullable<Text>,
        result -> Nullable<Text>,
        created_at_us -> BigInt,
        decided_at_us -> Nullable<BigInt>,
        event_id -> BigInt,
        decided_event_id -> Nullable<BigInt>,
    }
}

diesel::table! {
    adjustments (id) {
        id -> BigInt,
        account_id -> BigInt,
        amount_minor -> BigInt,
        currency -> Text,
        reason -> Text,
        requested_by -> BigInt,
        approved_by -> Nullable<BigInt>,
        status -> Text,
        entry_seq -> Nullable<BigInt>,
        created_at_us -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    offline_heads (credential_id) {
        credential_id -> BigInt,
        last_seq -> BigInt,
        last_hash -> Binary,
        updated_at_us -> BigInt,
    }
}

diesel::table! {
    offline_records (credential_id, seq) {
        credential_id -> BigInt,
        seq -> BigInt,
        record_hash -> Binary,
        result -> Text,
        entry_seq -> Nullable<BigInt>,
        event_id -> Nullable<BigInt>,
        created_at_us -> BigInt,
    }
}

diesel::table! {
    card_debts (entry_seq) {
        entry_seq -> BigInt,
        card_id -> BigInt,
        delta_minor -> BigInt,
    }
}

diesel::table! {
    wallet_debts (entry_seq, wallet_id) {
        entry_seq -> BigInt,
        wallet_id -> BigInt,
        delta_minor -> BigInt,
        payment_seq -> Nullable<BigInt>,
        merchant_id -> Nullable<BigInt>,
        time_us -> BigInt,
    }
}

diesel::table! {
    wallet_successors (wallet_id) {
        wallet_id -> BigInt,
        successor_id -> BigInt,
        entry_seq -> BigInt,
    }
}

diesel::table! {
    offline_payments (entry_seq) {
        entry_seq -> BigInt,
        credential_id -> BigInt,
        record_seq -> BigInt,
        sync_id -> BigInt,
        card_id -> BigInt,
        record_time_us -> BigInt,
        amount_minor -> BigInt,
    }
}

diesel::table! {
    offline_syncs (id) {
        id -> BigInt,
        credential_id -> BigInt,
        time_us -> BigInt,
        limits -> Nullable<Text>,
        denied -> Text,
    }
}

diesel::table! {
    webhook_subscriptions (id) {
        id -> BigInt,
        url -> Text,
        secret -> Text,
        account_id -> Nullable<BigInt>,
        kinds -> Text,
        created_at_us -> BigInt,
        event_id -> BigInt,
        revoked_at_us -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_outbox (id) {
        id -> BigInt,
        kind -> Text,
        account_id -> Nullable<BigInt>,
        entry_seq -> Nullable<BigInt>,
        payload -> Text,
        created_at_us -> BigInt,
    }
}

diesel::table! {
    webhook_deliveries (outbox_id, subscription_id) {
        outbox_id -> BigInt,
        subscription_id -> BigInt,
        attempts -> Integer,
        next_attempt_us -> BigInt,
        lease_until_us -> BigInt,
        state -> Text,
        done_at_us -> Nullable<BigInt>,
    }
}

diesel::table! {
    webhook_attempts (id) {
        id -> BigInt,
        outbox_id -> BigInt,
        subscription_id -> BigInt,
        attempt -> Integer,
        time_us -> BigInt,
        status -> Nullable<Integer>,
        error -> Nullable<Text>,
        duration_us -> BigInt,
    }
}

diesel::table! {
    transit_routes (id) {
        id -> BigInt,
        merchant_id -> BigInt,
        name -> Text,
        mode -> Text,
        stops -> Text,
        created_at_us -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    transit_validators (credential_id) {
        credential_id -> BigInt,
        route_id -> BigInt,
        stop -> Nullable<BigInt>,
        event_id -> BigInt,
    }
}

diesel::table! {
    fare_tables (id) {
        id -> BigInt,
        effective_from_us -> BigInt,
        time_zone -> Text,
        body -> Text,
        created_at_us -> BigInt,
        event_id -> BigInt,
    }
}

diesel::table! {
    transit_taps (event_id) {
        event_id -> BigInt,
        card_id -> BigInt,
        credential_id -> BigInt,
        route_id -> BigInt,
        stop -> BigInt,
        direction -> Text,
        tap_time_us -> BigInt,
        offline -> Bool,
        sync_id -> Nullable<BigInt>,
        offline_minor -> Nullable<BigInt>,
    }
}

diesel::table! {
    transit_entries (entry_seq) {
        entry_seq -> BigInt,
        card_id -> BigInt,
        ride_event_id -> BigInt,
        event_id -> BigInt,
    }
}

diesel::allow_tables_to_appear_in_same_query!(transit_routes, merchants);
diesel::allow_tables_to_appear_in_same_query!(transit_entries, journal_entries);
diesel::allow_tables_to_appear_in_same_query!(webhook_outbox, webhook_deliveries, webhook_subscriptions);
// The payment's one read: the caller's credential and the tapped card (`Registry::credential_and_card`).
diesel::allow_tables_to_appear_in_same_query!(credentials, cards);
