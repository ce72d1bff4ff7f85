//! 64 payments on one card at once, with money for exactly 10 of them.
//!
//! Taps of one card that race to the server arrive out of order. A counter below the
//! card's last is accepted only within the race allowance (at most 4 below, less than 10 s
//! after the last rose); the rest are replays. So every answer is an approval, a refusal
//! for funds or a replay, never more than the money allows.

use std::sync::{Arc, Barrier};

use serde_json::json;

use crate::support::{idr, Backend, City, TestResult};

pub fn concurrent_payments_one_card(backend: Backend) -> TestResult {
    const THREADS: usize = 64;
    const PRICE: &str = "1000.00";
    let c = Arc::new(City::new(backend, "10000.00")?);
    let (last_before, _) = c.s.trial(&c.auditor)?;
    // Distinct taps with increasing counters, made before the start.
    let taps: Vec<_> = (0..THREADS).map(|_| c.s.tap(&c.card)).collect();
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = taps
        .into_iter()
        .enumerate()
        .map(|(i, tap)| {
            let (c, barrier) = (c.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                let r = c.s.post("/v1/payments", &c.pos_a, &json!({"tap": tap, "amount": PRICE}));
                (i + 1, r)
            })
        })
        .collect();
    let mut approved = Vec::new();
    let (mut insufficient, mut replays) = (0, 0);
    for h in handles {
        let (counter, r) = h.join().map_err(|_| "a thread panicked")?;
        let r = r?;
        match r.status {
            201 => approved.push((r.json["entry_seq"].as_i64().ok_or("entry_seq")?, counter)),
            409 => {
                r.problem(409, "card_replay")?;
                replays += 1;
            }
            _ => {
                r.problem(422, "insufficient_funds")?;
                insufficient += 1;
            }
        }
    }
    let s = &c.s;
    check_eq!(approved.len() + insufficient + replays, THREADS);
    check!(!approved.is_empty() && approved.len() <= 10, "{} approved with money for 10", approved.len());
    // The wallet ends at exactly its balance minus what was approved.
    let left = 10_000 - 1_000 * approved.len() as i64;
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, format!("{left}.00"));
    // One entry per approved payment, and nothing else.
    let (last, balanced) = s.trial(&c.auditor)?;
    check!(balanced, "trial balance balanced");
    check_eq!(last, last_before + approved.len() as i64);
    // Distinct counters; every replay is on record; the card's last counter is the highest
    // approved (a refusal, for funds or as a replay, uses no counter).
    approved.sort_by_key(|a| a.1);
    check!(approved.windows(2).all(|w| w[0].1 < w[1].1), "a counter approved twice: {approved:?}");
    let card = s.get(&format!("/v1/cards/{}", c.card.id), &s.operator)?;
    let card = card.expect(200)?;
    check_eq!(card["replays"], json!(replays));
    check_eq!(card["last_counter"], json!(approved.last().map(|a| a.1)));
    check_eq!(card["balance"], idr(&format!("{left}.00")));
    // Each approved tap, presented again, is a replay now.
    let again = c.s.tap_at(&c.card.uid, approved[0].1 as u32);
    let r = s.post("/v1/payments", &c.pos_a, &json!({"tap": again, "amount": "1.00"}))?;
    r.problem(409, "card_replay")?;
    Ok(())
}

/// The same race on the card's wallet without the tap counter in the way: 64 debits of
/// the card approved at once (adjustments take no tap), money for exactly 10.
pub fn concurrent_debits_one_card(backend: Backend) -> TestResult {
    const THREADS: usize = 64;
    let c = Arc::new(City::new(backend, "10000.00")?);
    let s = &c.s;
    let mut pending = Vec::new();
    for i in 0..THREADS {
        let body = json!({"account_id": c.card.account_id, "amount": "-1000.00", "reason": format!("debit {i}")});
        pending.push(crate::support::id(s.post("/v1/adjustments", &s.operator, &body)?.expect(201)?)?);
    }
    let (last_before, _) = s.trial(&c.auditor)?;
    let barrier = Arc::new(Barrier::new(THREADS));
    let handles: Vec<_> = pending
        .into_iter()
        .map(|adjustment| {
            let (c, barrier) = (c.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                c.s.post_empty(&format!("/v1/adjustments/{adjustment}/approve"), &c.operator2)
            })
        })
        .collect();
    let (mut posted, mut insufficient) = (0, 0);
    for h in handles {
        let r = h.join().map_err(|_| "a thread panicked")??;
        match r.status {
            200 => {
                check_eq!(r.json["status"], json!("posted"));
                posted += 1;
            }
            _ => {
                r.problem(422, "insufficient_funds")?;
                insufficient += 1;
            }
        }
    }
    check_eq!((posted, insufficient), (10, 54));
    check_eq!(s.balance(&c.auditor, &c.card.account_id)?, "0.00".to_owned());
    let (last, balanced) = s.trial(&c.auditor)?;
    check!(balanced, "trial balance balanced");
    check_eq!(last, last_before + 10);
    Ok(())
}
