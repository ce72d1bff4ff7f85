//! Every committed fuzz seed (`fuzz/corpus/<target>/`) runs through its target's checks,
//! so the inputs a fuzzing run kept (and the findings it led to) stay tested.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("corpus entry").path();
            (path.display().to_string(), std::fs::read(&path).expect("read seed"))
        })
        .collect();
    seeds.sort();
    seeds
}

fn run<T>(target: &str, min: usize, check: fn(&[u8]) -> T) {
    let seeds = corpus(target);
    assert!(seeds.len() >= min, "{target}: {} seeds, expected at least {min}", seeds.len());
    for (name, data) in &seeds {
        if std::panic::catch_unwind(|| {
            check(data);
        })
        .is_err()
        {
            panic!("{target}: the seed {name} fails its checks");
        }
    }
}

#[test]
fn apdu_seeds() {
    run("apdu", 8, fuzz_checks::apdu);
}

#[test]
fn sun_seeds() {
    run("sun", 6, fuzz_checks::sun);
}

#[test]
fn amount_seeds() {
    run("amount", 12, fuzz_checks::amount);
}

/// Also: the committed seeds include the generated ones (a genuine tap for each tap route,
/// a body for every write route), and after them all the books balance.
#[test]
fn request_body_seeds() {
    let committed: Vec<Vec<u8>> = corpus("request_body").into_iter().map(|(_, d)| d).collect();
    let generated = fuzz_checks::request_seeds();
    let targets = fuzz_checks::request_targets();
    assert_eq!(generated.len(), targets.len(), "one generated seed per route");
    if std::env::var_os("KARTU_WRITE_SEEDS").is_some() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/request_body");
        for (i, seed) in generated.iter().enumerate() {
            std::fs::write(dir.join(format!("route-{i:02}")), seed).expect("write seed");
        }
    }
    for seed in &generated {
        assert!(
            committed.contains(seed),
            "fuzz/corpus/request_body lacks a generated seed (KARTU_WRITE_SEEDS=1 writes them)"
        );
    }
    // The generated seeds reach past validation: the genuine payment is approved, and
    // most routes take their seed.
    let statuses: Vec<u16> = generated.iter().map(|s| fuzz_checks::request_body(s)).collect();
    eprintln!("generated seeds' statuses: {statuses:?}");
    assert_eq!(statuses[0], 201, "the payment seed");
    let taken = statuses.iter().filter(|s| (200..300).contains(*s)).count();
    assert!(taken >= targets.len() / 2, "only {taken} seeds taken: {statuses:?}");
    run("request_body", targets.len(), fuzz_checks::request_body);
    fuzz_checks::request_body_books_balance();
}

/// The model agrees with the published AN12196 SUN example: a check that could fail if
/// the keys or the grammar drifted.
#[test]
fn an12196_sun_example_verifies() {
    let tap = card::sun::SunTap::from_hex("EF963FF7828658A599F3041510671E88", "94EED9EE65337086", None).expect("tap");
    let key = card::Key::from_bytes([0; 16]);
    let message = tap.verify(&key, &card::FileReadKey::Direct(&key)).expect("decrypts");
    assert!(message.mac_valid());
    assert_eq!(hex::encode_upper(message.uid().as_bytes()), "04DE5F1EACC040");
    assert_eq!(message.counter().value(), 0x3D);
}
