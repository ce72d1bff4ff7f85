//! `make bench`'s public transport figures (issue 18): a real `kartu serve` (release
//! build) with a rail line, a station gate and the fare table of docs/TRANSIT.md (approved
//! by a second operator made on the host), then boardings at the gate from keep-alive
//! connections (closed loop): every tap is priced by the ledger's writer against the
//! card's taps of the week, so this is the gate's taps/s and the tap-to-decision time the
//! server adds.

use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use api_client::{AsyncClient, Client};
use serde_json::{json, Value};

use crate::http_bench::HttpSettings;
use crate::loadgen::{self, CardKeys, RunSpec};
use crate::server::KartuServer;
use crate::{BenchDb, Row};

/// A second operator, made on the host (`kartu operator add`), who approves the fare table.
fn approver(kartu: &std::path::Path, data_dir: &std::path::Path, db: Option<&BenchDb>) -> Result<String> {
    let mut cmd = std::process::Command::new(kartu);
    cmd.args(["operator", "add", "--person", "Bench Approver", "--data-dir"]).arg(data_dir);
    if let Some(db) = db {
        cmd.args(["--database-url", &db.url]);
    }
    let out = cmd.output().context("kartu operator add")?;
    if !out.status.success() {
        return Err(anyhow!("kartu operator add: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

async fn post(api: &AsyncClient, path: &str, key: &str, body: Value) -> Result<Value> {
    api.post(path, key, body).await.map_err(|e| anyhow!("POST {path}: {e}"))
}

fn field(v: &Value, name: &str) -> Result<String> {
    v[name].as_str().map(str::to_owned).ok_or_else(|| anyhow!("no {name} in {v}"))
}

/// A transit operator with a rail line of two stations, a gate at the first, and the fare
/// table in force: the gate's token.
async fn network(addr: std::net::SocketAddr, operator: &str, approver: &str) -> Result<String> {
    let api = AsyncClient::new(Client::new(&format!("http://{addr}"), None, Some(Duration::from_secs(10)))?);
    let op = api.with_token(operator);
    let body = json!({"name": "bench rail", "category": "transit", "fee_rate": "0.02"});
    let m = post(&op, "/v1/merchants", "bench-transit", body).await?;
    let body = json!({"merchant_id": field(&m, "id")?, "name": "line 1", "mode": "rail", "stops": ["A", "B"]});
    let route = post(&op, "/v1/transit/routes", "bench-route", body).await?;
    let body = json!({"role": "merchant_terminal", "name": "gate A", "merchant_id": field(&m, "id")?});
    let gate = post(&op, "/v1/credentials", "bench-gate", body).await?;
    let bind = json!({"credential_id": field(&gate, "id")?, "route_id": field(&route, "id")?, "stop": 0});
    post(&op, "/v1/transit/validators", "bench-bind", bind).await?;
    let id = field(&route, "id")?;
    let table = json!({"time_zone": "Asia/Jakarta", "table": {
        "routes": {id: {"kind": "flat", "fare_minor": 3500}},
        "transfer": {"window_minutes": 60, "integrated_fare_minor": 5000},
        "daily_cap_minor": 10000, "weekly_cap_minor": 40000, "concessions": {"student": 50}}});
    let asked = post(&op, "/v1/transit/fares", "bench-fares", table).await?;
    let path = format!("/v1/approvals/{}/approve", field(&asked, "id")?);
    post(&api.with_token(approver), &path, "bench-approve", json!({})).await?;
    field(&gate, "token")
}

/// Gate boardings/s and their latency on `backend`.
pub fn measure(
    settings: &HttpSettings,
    backend: &str,
    dir: &std::path::Path,
    postgres_admin: &str,
) -> Result<Vec<Row>> {
    let data_dir = dir.join(format!("transit_{backend}"));
    let db =
        (backend == "postgres").then(|| BenchDb::create("postgres", dir, postgres_admin, "transit")).transpose()?;
    let server = KartuServer::start(&settings.kartu, &data_dir, db.as_ref().map(|d| d.url.as_str()))?;
    let keys = CardKeys::load(&data_dir.join("keys.toml"))?;
    let approver = approver(&settings.kartu, &data_dir, db.as_ref())?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(settings.client_threads.max(1))
        .enable_all()
        .build()?;
    let spec = RunSpec {
        conns: settings.conns,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(settings.seconds),
        count: None,
        rate: None,
        amount: String::new(),
        transit: true,
        server_pid: Some(server.pid()),
    };
    let addr = server.addr;
    let closed = rt.block_on(async {
        let gate = network(addr, &server.operator_token, &approver).await?;
        let fleet =
            kartu_bench::setup::setup(addr, &server.operator_token, &keys, settings.cards, "1000.00", 8).await?;
        let (closed, _) = loadgen::run(addr, &gate, &keys, fleet.cards, &spec).await?;
        anyhow::Ok(closed)
    })?;
    server.stop()?;
    drop(db);
    eprintln!("bench: transit {backend} gate, {} conns: {}", settings.conns, closed.summary());
    let window = closed.window.as_secs_f64();
    let name = |what: &str| format!("transit.{backend}.{what}");
    Ok(vec![
        Row {
            name: name(&format!("gate_taps_per_s.{}_conns", settings.conns)),
            value: closed.approved() as f64 / window,
            unit: "taps/s",
            goal: None,
        },
        Row { name: name("gate_p50_ms"), value: closed.quantile_ms(0.5), unit: "ms", goal: None },
        Row { name: name("gate_p99_ms"), value: closed.quantile_ms(0.99), unit: "ms", goal: Some(-300.0) },
        Row {
            name: name("not_open"),
            value: (closed.answered - closed.approved()) as f64,
            unit: "requests",
            goal: None,
        },
    ])
}
