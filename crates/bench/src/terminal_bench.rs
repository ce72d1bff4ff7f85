//! The terminal tap time (`--only terminal`): the release `kartu demo --tap-bench N` puts
//! one virtual card (cardsim over vpcd, a pcscd of its own in private namespaces) N times
//! on a POS terminal's reader (a payment each), N times on a gate's (an access check
//! each), and N times on each of two bus validators' (a boarding each): one online, one
//! out of coverage that prices the ride from its last sync and journals it. Each tap is
//! timed as `kartu terminal` does: from PC/SC reporting the card present to the answer
//! (the server's, or the offline decision written to the journal). Goals at the 99th
//! percentile: a POS or gate 100 ms (the software's share), a validator 300 ms (the
//! transit gate standard) and 50 ms offline. The rows split it into the card read (connect, UID, SUN read over
//! APDUs through pcscd and vpcd, disconnect) and the API call (POST, the server's checks
//! and ledger write, the answer). Needs root, pcscd and vsmartcard-vpcd, as `kartu demo`.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use crate::Row;

/// Nearest-rank quantile of sorted values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(taps: &[Value], field: &str) -> Result<Vec<f64>> {
    let mut v = taps
        .iter()
        .map(|t| {
            t[field].as_f64().filter(|x| x.is_finite() && *x > 0.0).with_context(|| format!("a tap without {field}"))
        })
        .collect::<Result<Vec<f64>>>()?;
    v.sort_by(f64::total_cmp);
    Ok(v)
}

/// Runs `kartu demo --tap-bench taps` and returns the rows; the per-tap times go to
/// `out/terminal.json`, a summary to `out/terminal.txt`.
pub fn measure(kartu: &Path, taps: u32, out: &Path) -> Result<Vec<Row>> {
    ensure!(kartu.exists(), "{} does not exist: build it first (cargo build --release -p kartu)", kartu.display());
    let json = out.join("terminal.json");
    let _ = std::fs::remove_file(&json);
    eprintln!(
        "bench: terminal: {taps} POS, {taps} gate and 2 × {taps} validator taps through pcscd and vpcd (kartu demo \
         --tap-bench)"
    );
    let output = Command::new(kartu)
        .arg("demo")
        .arg("--tap-bench")
        .arg(taps.to_string())
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} demo --tap-bench", kartu.display()))?;
    if !output.status.success() {
        bail!(
            "kartu demo --tap-bench failed ({}):\n{}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let result: Value = serde_json::from_str(&std::fs::read_to_string(&json).context("reading the tap times")?)
        .context("the tap times are not JSON")?;
    let mut rows = Vec::new();
    let mut text = String::from("Kartu terminal tap time (kartu demo --tap-bench)\n\n");
    text.push_str(
        "Each tap from PC/SC reporting the card present to the server's answer, as `kartu terminal` times it.\n\
         card_read: connect, UID, SUN read over APDUs (pcscd with the vpcd driver, a virtual card), disconnect.\n\
         http: the terminal's POST to kartu serve (release, SQLite), the server's checks, the ledger write, the answer;\n\
         offline (validator_offline): pricing from the last sync with domain::fares and the journal's fsync.\n\
         pcscd runs with --apdu --debug (it logs every APDU), so the card read is a little pessimistic.\n\n",
    );
    let kinds = [
        ("pos", "approved", "payments approved", 100.0),
        ("gate", "allowed", "entries allowed", 100.0),
        ("validator", "opened", "bus boardings opened online", 300.0),
        ("validator_offline", "opened", "bus boardings opened offline (priced, journaled)", 50.0),
    ];
    for (kind, field, what, goal_ms) in kinds {
        let list = result[kind].as_array().with_context(|| format!("no {kind} taps in the result"))?;
        ensure!(list.len() == taps as usize, "{} {kind} taps in the result, {taps} made", list.len());
        let good = list.iter().filter(|t| t[field] == true).count();
        ensure!(good == list.len(), "{kind}: only {good} of {} taps {what}", list.len());
        text.push_str(&format!("{kind}: {} taps, {good} {what}; ", list.len()));
        text.push_str(&kind_rows(list, kind, goal_ms, &mut rows)?);
    }
    std::fs::write(out.join("terminal.txt"), &text)?;
    eprint!("{text}");
    Ok(rows)
}

/// One kind of tap's rows (p50, p99 against `goal_ms`, max, the card read's and the rest's
/// p50) pushed to `rows`; its line for the report.
fn kind_rows(list: &[Value], kind: &str, goal_ms: f64, rows: &mut Vec<Row>) -> Result<String> {
    let total = sorted(list, "ms")?;
    let card = sorted(list, "card_ms")?;
    let http = sorted(list, "http_ms")?;
    let name = |what: &str| format!("terminal.{kind}_tap_ms.{what}");
    rows.push(Row { name: name("p50"), value: quantile(&total, 0.5), unit: "ms", goal: None });
    rows.push(Row { name: name("p99"), value: quantile(&total, 0.99), unit: "ms", goal: Some(-goal_ms) });
    rows.push(Row { name: name("max"), value: quantile(&total, 1.0), unit: "ms", goal: None });
    rows.push(Row { name: name("card_read_p50"), value: quantile(&card, 0.5), unit: "ms", goal: None });
    rows.push(Row { name: name("http_p50"), value: quantile(&http, 0.5), unit: "ms", goal: None });
    Ok(format!(
        "total p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; card_read p50 {:.1} ms (max {:.1}); http p50 {:.1} ms \
         (max {:.1})\n",
        quantile(&total, 0.5),
        quantile(&total, 0.99),
        quantile(&total, 1.0),
        quantile(&card, 0.5),
        quantile(&card, 1.0),
        quantile(&http, 0.5),
        quantile(&http, 1.0),
    ))
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert_eq!(quantile(&[7.0], 0.99), 7.0);
    }
}
