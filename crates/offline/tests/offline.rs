//! The offline journal: a good journal passes; each kind of damage is found at the right
//! record and the records before it are kept.

use offline::{
    check_upload, generate_key, ChainHead, JournalError, JournalWriter, NewRecord, RecordKind, SignedRecord,
};
use proptest::prelude::*;

fn pay(i: i64) -> NewRecord {
    NewRecord {
        time_us: 1_800_000_000_000_000 + i,
        kind: RecordKind::Payment,
        uid: "04a1b2c3d4e501".into(),
        picc_data: format!("{:032X}", i),
        cmac: format!("{:016X}", i),
        amount_minor: 1_000 + i,
        currency: "IDR".into(),
        reference: Some(format!("r{i}")),
        decision: None,
        sync_id: 7,
    }
}

fn journal(n: i64) -> (Vec<u8>, Vec<SignedRecord>) {
    let key = generate_key().expect("key");
    let mut w = JournalWriter::new(&key, None).expect("writer");
    let records = (1..=n).map(|i| w.append(pay(i)).expect("append")).collect();
    (hex::decode(w.public_key_hex()).expect("hex"), records)
}

#[test]
fn a_good_journal_passes_and_continues_after_a_restart() {
    let key = generate_key().expect("key");
    let mut w = JournalWriter::new(&key, None).expect("writer");
    let first: Vec<_> = (1..=3).map(|i| w.append(pay(i)).expect("append")).collect();
    // The terminal restarts and continues from its last record.
    let mut w = JournalWriter::new(&key, Some(&first[2].record)).expect("writer");
    let second: Vec<_> = (4..=5).map(|i| w.append(pay(i)).expect("append")).collect();
    let pk = hex::decode(w.public_key_hex()).expect("hex");
    let all: Vec<_> = first.iter().chain(&second).cloned().collect();
    let (good, err) = check_upload(&pk, ChainHead::EMPTY, &all);
    assert_eq!((good.len(), err), (5, None));
    assert_eq!(all[0].record.prev_hash, "0".repeat(64));
    // The server already has 3: a second upload of everything posts only 4 and 5.
    let head = ChainHead { seq: 3, hash: all[2].record.hash() };
    let (good, err) = check_upload(&pk, head, &all);
    assert_eq!(good.iter().map(|r| r.record.seq).collect::<Vec<_>>(), vec![4, 5]);
    assert_eq!(err, None);
}

#[test]
fn each_kind_of_damage_is_found_and_what_came_before_is_kept() {
    let (pk, records) = journal(6);
    // An edited amount: its own signature fails.
    let mut edited = records.clone();
    edited[3].record.amount_minor += 1;
    let (good, err) = check_upload(&pk, ChainHead::EMPTY, &edited);
    assert_eq!((good.len(), err), (3, Some(JournalError::BadSignature { seq: 4 })));
    // Another sync named (to be judged by older limits or an older deny list): the same.
    let mut resynced = records.clone();
    resynced[2].record.sync_id = 6;
    let (good, err) = check_upload(&pk, ChainHead::EMPTY, &resynced);
    assert_eq!((good.len(), err), (2, Some(JournalError::BadSignature { seq: 3 })));
    // A removed record: a gap.
    let mut removed = records.clone();
    removed.remove(2);
    let (good, err) = check_upload(&pk, ChainHead::EMPTY, &removed);
    assert_eq!((good.len(), err), (2, Some(JournalError::Gap { expected: 3, got: 4 })));
    // Reordered records.
    let mut reordered = records.clone();
    reordered.swap(1, 4);
    let (good, err) = check_upload(&pk, ChainHead::EMPTY, &reordered);
    assert_eq!((good.len(), err), (1, Some(JournalError::Gap { expected: 2, got: 5 })));
    // Signed by another key.
    let (other_pk, _) = journal(1);
    let (good, err) = check_upload(&other_pk, ChainHead::EMPTY, &records);
    assert_eq!((good.len(), err), (0, Some(JournalError::BadSignature { seq: 1 })));
    // A forged signature string.
    let mut forged = records.clone();
    forged[5].signature = "00".repeat(64);
    let (good, err) = check_upload(&pk, ChainHead::EMPTY, &forged);
    assert_eq!((good.len(), err), (5, Some(JournalError::BadSignature { seq: 6 })));
    // A fork: the same key signs a different record 4 on top of 3 (a terminal whose state
    // was restored from a backup); the server already holds the first history's 4.
    let key = generate_key().expect("key");
    let mut w = JournalWriter::new(&key, None).expect("writer");
    let a: Vec<_> = (1..=4).map(|i| w.append(pay(i)).expect("append")).collect();
    let mut w2 = JournalWriter::new(&key, Some(&a[2].record)).expect("writer");
    let mut fork = w2.append(pay(40)).expect("append");
    let pk = hex::decode(w.public_key_hex()).expect("hex");
    let head = ChainHead { seq: 4, hash: a[3].record.hash() };
    fork.record.seq = 5; // relabelled to slip past the server's head: the chain link is wrong
    let (_, err) = check_upload(&pk, head, std::slice::from_ref(&fork));
    assert!(matches!(err, Some(JournalError::BadSignature { seq: 5 })), "{err:?}");
    let fork5 = {
        let mut w3 = JournalWriter::new(&key, Some(&a[2].record)).expect("writer");
        w3.append(pay(41)).expect("4'");
        w3.append(pay(42)).expect("5'")
    };
    let (good, err) = check_upload(&pk, head, std::slice::from_ref(&fork5));
    assert_eq!((good.len(), err), (0, Some(JournalError::Fork { seq: 5 })));
}

#[test]
fn malformed_records_are_refused_by_the_writer_and_the_server() {
    let key = generate_key().expect("key");
    let mut w = JournalWriter::new(&key, None).expect("writer");
    let mut bad = pay(1);
    bad.uid = "zz".into();
    assert!(matches!(w.append(bad), Err(JournalError::Malformed { field: "uid", .. })));
    let mut zero = pay(1);
    zero.amount_minor = 0;
    assert!(matches!(w.append(zero), Err(JournalError::Malformed { field: "amount_minor", .. })));
    // The failed appends used no sequence number.
    assert_eq!(w.append(pay(1)).expect("append").record.seq, 1);
    // Unknown JSON fields are refused at the door.
    let json = r#"{"record":{"seq":1,"prev_hash":"00","time_us":0,"kind":"payment","uid":"","picc_data":"","cmac":"","amount_minor":1,"currency":"IDR","reference":null,"decision":null,"extra":1},"signature":""}"#;
    assert!(serde_json::from_str::<SignedRecord>(json).is_err());
}

proptest! {
    /// Any single byte change to any field of any record is found at that record.
    #[test]
    fn any_change_is_found(n in 2i64..8, at in 0usize..8, delta in 1i64..1000) {
        let (pk, mut records) = journal(n);
        let at = at % records.len();
        records[at].record.time_us += delta;
        let (good, err) = check_upload(&pk, ChainHead::EMPTY, &records);
        prop_assert_eq!(good.len(), at);
        prop_assert_eq!(err, Some(JournalError::BadSignature { seq: at as u64 + 1 }));
    }
}

#[test]
fn risk_limits_refuse_in_order_and_count_what_was_taken() {
    use offline::{Refusal, RiskLimits, RiskState};
    let limits = RiskLimits {
        per_tap_minor: 50_000,
        per_card_per_day_minor: 80_000,
        outstanding_minor: 120_000,
        max_offline_hours: None,
    };
    let mut deny = std::collections::HashSet::new();
    deny.insert("04A1B2C3D4E5FF".to_owned());
    let mut s = RiskState::default();
    assert_eq!(s.check(&limits, &deny, "04a1b2c3d4e5ff", 1, 1), Err(Refusal::DenyListed));
    assert_eq!(s.check(&limits, &deny, "04A1B2C3D4E501", 1, 50_001), Err(Refusal::PerTap));
    s.check(&limits, &deny, "04A1B2C3D4E501", 1, 50_000).expect("first");
    s.record("04A1B2C3D4E501", 1, 50_000);
    assert_eq!(s.check(&limits, &deny, "04A1B2C3D4E501", 1, 30_001), Err(Refusal::PerCardPerDay));
    s.check(&limits, &deny, "04A1B2C3D4E501", 2, 30_001).expect("another day");
    s.record("04A1B2C3D4E501", 1, 30_000);
    s.record("04A1B2C3D4E502", 1, 40_000);
    assert_eq!(s.outstanding_minor(), 120_000);
    assert_eq!(s.check(&limits, &deny, "04A1B2C3D4E503", 1, 1), Err(Refusal::Outstanding));
    s.uploaded(120_000);
    s.check(&limits, &deny, "04A1B2C3D4E503", 1, 1).expect("after the upload");
}

/// A gate's offline decisions in the server's order, with hours and days in the policy's
/// time zone (Asia/Makassar is UTC+8, no daylight saving: local 08:00 on 2026-11-28 is
/// 00:00 UTC, Unix time 1_795_824_000).
#[test]
fn offline_access_decides_like_the_server() {
    use offline::{AccessRefusal, OfflineAccess};
    const UTC_MIDNIGHT_US: i64 = 1_795_824_000 * 1_000_000;
    let hour = 3_600_000_000_i64;
    let local = |h: i64, m: i64| UTC_MIDNIGHT_US + (h - 8) * hour + m * 60_000_000;
    let access = OfflineAccess {
        entitled: vec!["04A1B2C3D4E501".into(), "04A1B2C3D4E502".into()],
        opens: Some("07:30".into()),
        closes: Some("16:00".into()),
        timezone: "Asia/Makassar".into(),
        daily_quota: Some(2),
        anti_passback_minutes: Some(30),
    };
    let mut deny = std::collections::HashSet::new();
    deny.insert("04A1B2C3D4E502".to_owned());
    let ani = "04a1b2c3d4e501";
    assert_eq!(access.decide(ani, local(9, 0), &deny, &[]), Ok(()));
    assert_eq!(access.decide("04A1B2C3D4E502", local(9, 0), &deny, &[]), Err(AccessRefusal::CardBlocked));
    assert_eq!(access.decide("04A1B2C3D4E503", local(9, 0), &deny, &[]), Err(AccessRefusal::NotEntitled));
    // 07:29 is before opening, 16:00 is closing (exclusive); 07:30 is open.
    assert_eq!(access.decide(ani, local(7, 29), &deny, &[]), Err(AccessRefusal::Closed));
    assert_eq!(access.decide(ani, local(16, 0), &deny, &[]), Err(AccessRefusal::Closed));
    assert_eq!(access.decide(ani, local(7, 30), &deny, &[]), Ok(()));
    // Passback: 29 minutes after an entry no, 30 yes.
    assert_eq!(access.decide(ani, local(9, 29), &deny, &[local(9, 0)]), Err(AccessRefusal::Passback));
    assert_eq!(access.decide(ani, local(9, 30), &deny, &[local(9, 0)]), Ok(()));
    // Quota 2 per local day. 07:00 local today is 23:00 UTC yesterday: it counts (a UTC day
    // would not); 23:00 local yesterday does not.
    assert_eq!(access.decide(ani, local(15, 0), &deny, &[local(7, 0), local(9, 0)]), Err(AccessRefusal::QuotaReached));
    assert_eq!(access.decide(ani, local(15, 0), &deny, &[local(-1, 0), local(9, 0)]), Ok(()));
    assert_eq!(AccessRefusal::QuotaReached.code(), "quota_reached");
    // A policy with a bad time zone refuses rather than guessing.
    let bad = OfflineAccess { timezone: "Mars/Olympus".into(), ..access };
    assert_eq!(bad.decide(ani, local(9, 0), &deny, &[]), Err(AccessRefusal::BadPolicy));
}

/// A transit record names its direction and stop (`on:3`, `off:12`) in `decision`; the
/// writer refuses anything else, and the stop is part of the signed bytes.
#[test]
fn transit_records_name_direction_and_stop() {
    let key = generate_key().expect("key");
    let mut w = JournalWriter::new(&key, None).expect("writer");
    let ride = |decision: Option<&str>| NewRecord {
        kind: RecordKind::Transit,
        decision: decision.map(str::to_owned),
        amount_minor: 3500,
        reference: None,
        ..pay(1)
    };
    for bad in [None, Some("up:3"), Some("on:"), Some("on:x"), Some("on:-1"), Some("on:3:4"), Some("allow")] {
        assert!(w.append(ride(bad)).is_err(), "{bad:?} was accepted");
    }
    let on = w.append(ride(Some("on:3"))).expect("on:3");
    assert_eq!(offline::transit_tap(on.record.decision.as_deref()), Some((true, 3)));
    assert_eq!(offline::transit_tap(Some("off:12")), Some((false, 12)));
    let pk = hex::decode(w.public_key_hex()).expect("hex");
    let mut moved = on.clone();
    moved.record.decision = Some("on:4".into());
    let upload = [moved];
    let (good, error) = check_upload(&pk, ChainHead::EMPTY, &upload);
    assert!(good.is_empty());
    assert_eq!(error, Some(JournalError::BadSignature { seq: 1 }));
}
