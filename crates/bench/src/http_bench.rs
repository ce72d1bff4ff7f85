//! `make bench`'s HTTP measurements: a real `kartu serve` (release build) on a fresh
//! SQLite file or PostgreSQL database, set up through the API, then card payments with
//! tap verification from C keep-alive connections (closed loop), then an open-loop sweep
//! of offered load for the latency plot.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::loadgen::{self, CardKeys, RunResult, RunSpec};
use crate::server::KartuServer;
use crate::{BenchDb, Row};

/// Settings of the HTTP section.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// The `kartu` binary.
    pub kartu: std::path::PathBuf,
    /// Concurrent keep-alive connections.
    pub conns: usize,
    /// Virtual cards (dealt out to the connections).
    pub cards: usize,
    /// Measured seconds of the closed-loop run.
    pub seconds: f64,
    /// Seconds per open-loop point (0: no sweep).
    pub sweep_seconds: f64,
    /// Generator threads (1: a current-thread runtime).
    pub client_threads: usize,
}

/// One open-loop point.
#[derive(Debug, Clone, Copy)]
pub struct SweepPoint {
    /// Offered requests/s.
    pub offered: f64,
    /// Answered requests/s.
    pub answered: f64,
    /// Latency quantiles, ms.
    pub p50_ms: f64,
    /// The 99th percentile latency, ms.
    pub p99_ms: f64,
    /// p99.9.
    pub p999_ms: f64,
}

/// What one backend gave.
#[derive(Debug)]
pub struct HttpOutcome {
    /// Report rows.
    pub rows: Vec<Row>,
    /// The sweep.
    pub sweep: Vec<SweepPoint>,
    /// Details for bench-report/http.txt.
    pub details: String,
}

/// Fractions of the closed-loop maximum offered in the sweep.
const SWEEP: [f64; 5] = [0.25, 0.5, 0.75, 0.9, 1.0];
/// Idle time before each point of the sweep.
const REST: Duration = Duration::from_secs(3);
/// What each card is topped up with, and what each payment takes (IDR).
const TOPUP: &str = "1000000.00";
const AMOUNT: &str = "10.00";

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    Ok(if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    })
}

fn thread_table(r: &RunResult) -> String {
    let secs = r.window.as_secs_f64();
    r.server_threads.iter().map(|(name, s)| format!("    {name:<28} {:>5.0}% of a core\n", 100.0 * s / secs)).collect()
}

/// What one backend's runs measured.
struct Measured {
    /// The closed-loop run.
    closed: RunResult,
    /// The open-loop points: the fraction of the closed loop's maximum offered, the run.
    sweep_runs: Vec<(f64, RunResult)>,
    /// SQLite's WAL size after the closed loop.
    wal: Option<u64>,
    /// PostgreSQL sessions opened during the closed loop.
    sessions: Option<i64>,
    /// The server's `/metrics` after the runs.
    metrics: String,
    /// The server's peak RSS, KiB.
    rss_kib: u64,
}

/// The HTTP measurements on one backend (`sqlite` or `postgres`).
pub fn measure(
    settings: &HttpSettings,
    backend: &str,
    dir: &std::path::Path,
    postgres_admin: &str,
    goal: f64,
) -> Result<HttpOutcome> {
    let data_dir = dir.join(format!("http_{backend}"));
    // PostgreSQL: a fresh database, dropped when `db` goes.
    let db = (backend == "postgres").then(|| BenchDb::create("postgres", dir, postgres_admin, "http")).transpose()?;
    let server = KartuServer::start(&settings.kartu, &data_dir, db.as_ref().map(|d| d.url.as_str()))?;
    eprintln!("bench: kartu serve ({backend}) on {}, pid {}", server.addr, server.pid());
    let keys = CardKeys::load(&data_dir.join("keys.toml"))?;
    let rt = runtime(settings.client_threads)?;
    let pid = server.pid();
    let wal_path = data_dir.join("kartu.db-wal");
    let (closed, sweep_runs, wal, sessions) =
        rt.block_on(drive(settings, backend, &server, &keys, db.as_ref(), &wal_path))?;
    let metrics = server.get("/metrics").unwrap_or_default();
    let rss_kib = loadgen::peak_rss_kib(pid).context("reading the server's VmHWM")?;
    server.stop()?;
    drop(db);
    let m = Measured { closed, sweep_runs, wal, sessions, metrics, rss_kib };
    let mut rows = closed_rows(settings, backend, goal, &m);
    let sweep = sweep_rows(backend, &m, &mut rows);
    let details = details(settings, backend, &m, &sweep);
    Ok(HttpOutcome { rows, sweep, details })
}

/// The runs: the set-up through the API, the closed loop, then the open-loop sweep.
async fn drive(
    settings: &HttpSettings,
    backend: &str,
    server: &KartuServer,
    keys: &CardKeys,
    db: Option<&BenchDb>,
    wal_path: &std::path::Path,
) -> Result<(RunResult, Vec<(f64, RunResult)>, Option<u64>, Option<i64>)> {
    let addr = server.addr;
    let spec = RunSpec {
        conns: settings.conns,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(settings.seconds),
        count: None,
        rate: None,
        amount: AMOUNT.into(),
        transit: false,
        server_pid: Some(server.pid()),
    };
    let fleet = kartu_bench::setup::setup(addr, &server.operator_token, keys, settings.cards, TOPUP, 8).await?;
    let token = fleet.merchant_token;
    let sessions_before = pg_sessions(db);
    let (closed, mut cards) = loadgen::run(addr, &token, keys, fleet.cards, &spec).await?;
    let sessions = pg_sessions(db).zip(sessions_before).map(|(a, b)| a - b);
    eprintln!("bench: http {backend} {} conns, closed loop: {}", settings.conns, closed.summary());
    // SQLite's WAL only restarts when the checkpointer catches up, which it does not
    // under continuous load: its size after the closed loop shows how fast it grows.
    let wal = std::fs::metadata(wal_path).map(|m| m.len()).ok();
    let mut sweep = Vec::new();
    if settings.sweep_seconds > 0.0 {
        for fraction in SWEEP {
            // A rest between points, as between bursts in service: the WAL restarts,
            // and each point starts from the same state.
            tokio::time::sleep(REST).await;
            let rate = (closed.throughput() * fraction).max(1.0);
            let point = RunSpec {
                rate: Some(rate),
                warmup: Duration::from_millis(500),
                duration: Duration::from_secs_f64(settings.sweep_seconds),
                ..spec.clone()
            };
            let (r, back) = loadgen::run(addr, &token, keys, cards, &point).await?;
            cards = back;
            eprintln!("bench: http {backend} open loop at {:.0}%: {}", fraction * 100.0, r.summary());
            sweep.push((fraction, r));
        }
    }
    Ok((closed, sweep, wal, sessions))
}

/// The report rows of the closed loop.
fn closed_rows(settings: &HttpSettings, backend: &str, goal: f64, m: &Measured) -> Vec<Row> {
    let name = |what: &str| format!("http.{backend}.{what}");
    let closed = &m.closed;
    let window = closed.window.as_secs_f64();
    let row = |what: &str, value: f64, unit: &'static str| Row { name: name(what), value, unit, goal: None };
    let mut rows = vec![
        Row {
            name: name(&format!("payments_per_s.{}_conns", settings.conns)),
            value: closed.approved() as f64 / window,
            unit: "payments/s",
            goal: Some(goal),
        },
        row("p50_ms", closed.quantile_ms(0.5), "ms"),
        Row { goal: Some(-10.0), ..row("p99_ms", closed.quantile_ms(0.99), "ms") },
        row("p999_ms", closed.quantile_ms(0.999), "ms"),
        row("not_approved", (closed.answered - closed.approved()) as f64, "requests"),
        row("loadgen_cpu_pct", 100.0 * closed.client_cpu_s / window, "% of a core"),
        row("server_cpu_pct", 100.0 * closed.server_cpu_s.unwrap_or(0.0) / window, "% of a core"),
        row("machine_cpu_busy_pct", 100.0 * closed.machine_cpu_s.unwrap_or(0.0) / window, "% of a core"),
        row("server_peak_rss_mib", m.rss_kib as f64 / 1024.0, "MiB"),
    ];
    if let Some(bytes) = m.wal.filter(|_| backend == "sqlite") {
        rows.push(row("wal_mib_after_closed_loop", bytes as f64 / (1024.0 * 1024.0), "MiB"));
    }
    if let Some(n) = m.sessions {
        // Each is a PostgreSQL backend forked and torn down: the read pool's overflow.
        let per_1000 = 1000.0 * n as f64 / closed.approved().max(1) as f64;
        rows.push(row("new_db_sessions_per_1000_payments", per_1000, "sessions"));
    }
    rows
}

/// The sweep's points, and a report row for each.
fn sweep_rows(backend: &str, m: &Measured, rows: &mut Vec<Row>) -> Vec<SweepPoint> {
    let mut sweep = Vec::new();
    for (fraction, r) in &m.sweep_runs {
        let pct = (fraction * 100.0).round();
        rows.push(Row {
            name: format!("http.{backend}.open_loop_{pct}pct.p99_ms"),
            value: r.quantile_ms(0.99),
            unit: "ms",
            goal: None,
        });
        sweep.push(SweepPoint {
            offered: r.offered.unwrap_or(0.0),
            answered: r.throughput(),
            p50_ms: r.quantile_ms(0.5),
            p99_ms: r.quantile_ms(0.99),
            p999_ms: r.quantile_ms(0.999),
        });
    }
    sweep
}

/// The details for bench-report/http.txt.
fn details(settings: &HttpSettings, backend: &str, m: &Measured, sweep: &[SweepPoint]) -> String {
    let closed = &m.closed;
    let mut details = String::new();
    let _ = writeln!(details, "== {backend} ==");
    let _ = writeln!(
        details,
        "closed loop, {} connections, {} cards: {}",
        settings.conns,
        settings.cards,
        closed.summary()
    );
    let _ = writeln!(details, "  server CPU by thread during the window:\n{}", thread_table(closed));
    let _ = writeln!(details, "  server peak RSS (VmHWM): {:.1} MiB", m.rss_kib as f64 / 1024.0);
    if !m.sweep_runs.is_empty() {
        let _ = writeln!(
            details,
            "  open loop (latency from when each request was due; {} s of rest before each point):",
            REST.as_secs()
        );
        let _ = writeln!(
            details,
            "    {:>8} {:>10} {:>10} {:>9} {:>9} {:>9}",
            "of max", "offered/s", "answered/s", "p50 ms", "p99 ms", "p99.9 ms"
        );
        for ((fraction, r), p) in m.sweep_runs.iter().zip(sweep) {
            let _ = writeln!(
                details,
                "    {:>7.0}% {:>10.0} {:>10.0} {:>9.2} {:>9.2} {:>9.2}   results: {}",
                fraction * 100.0,
                p.offered,
                p.answered,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                r.codes.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
            );
        }
    }
    let _ = writeln!(details, "  server metrics after the runs (payments):");
    for line in m.metrics.lines().filter(|l| payment_metric(l)) {
        let _ = writeln!(details, "    {line}");
    }
    details.push('\n');
    details
}

/// The `/metrics` lines about payments the details show.
fn payment_metric(line: &str) -> bool {
    !line.starts_with('#')
        && (line.starts_with("kartu_payments_total")
            || line.starts_with("kartu_writer_")
            || (line.contains("/v1/payments")
                && (line.contains("_sum")
                    || line.contains("_count")
                    || line.contains("le=\"0.005\"")
                    || line.contains("le=\"0.01\""))))
}

/// Sessions ever opened on the benchmark's PostgreSQL database (`pg_stat_database`).
fn pg_sessions(db: Option<&BenchDb>) -> Option<i64> {
    use diesel::{Connection, RunQueryDsl};
    #[derive(diesel::QueryableByName)]
    struct Sessions {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        sessions: i64,
    }
    let (admin, name) = db?.pg.as_ref()?;
    let mut c = diesel::PgConnection::establish(admin).ok()?;
    // Statistics reach the view within a second.
    std::thread::sleep(Duration::from_millis(1100));
    diesel::sql_query(format!("SELECT sessions FROM pg_stat_database WHERE datname = '{name}'"))
        .get_result::<Sessions>(&mut c)
        .ok()
        .map(|s| s.sessions)
}

/// `kartu-bench bare`: a bare actix-web handler (JSON in, 201 and JSON out), printing its
/// address on stdout once it listens.
pub fn bare_server(listen: &str, workers: usize) -> Result<()> {
    use actix_web::{web, App, HttpResponse, HttpServer};
    async fn pay(body: web::Json<serde_json::Value>) -> HttpResponse {
        let ok = body.get("tap").is_some();
        HttpResponse::Created().json(serde_json::json!({"id": "1", "status": "approved", "tap": ok}))
    }
    let listener = std::net::TcpListener::bind(listen)?;
    println!("{}", listener.local_addr()?);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(|| App::new().route("/v1/payments", web::post().to(pay)))
            .workers(workers.max(1))
            .backlog(4096)
            .listen(listener)?
            .run()
            .await
    })?;
    Ok(())
}

/// The load generator against [`bare_server`] in a child process: the ceiling of this
/// generator on this machine, and what it costs per request.
pub fn calibrate(settings: &HttpSettings) -> Result<(Vec<Row>, String)> {
    use std::io::BufRead;
    let exe = std::env::current_exe()?;
    let mut child = std::process::Command::new(exe)
        .arg("bare")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .context("starting the bare server")?;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    let addr: std::net::SocketAddr = line.trim().parse().context("the bare server printed no address")?;
    std::thread::sleep(Duration::from_millis(200));
    let keys = CardKeys::fixed();
    let cards = keys.offline_cards(settings.cards.max(settings.conns))?;
    let spec = RunSpec {
        conns: settings.conns,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(settings.seconds.min(5.0)),
        count: None,
        rate: None,
        amount: AMOUNT.into(),
        transit: false,
        server_pid: Some(child.id()),
    };
    let result = runtime(settings.client_threads)?
        .block_on(async { loadgen::run(addr, "kt_bare", &keys, cards, &spec).await.map(|(r, _)| r) });
    let _ = child.kill();
    let _ = child.wait();
    let r = result?;
    eprintln!("bench: http bare actix-web handler, {} conns: {}", settings.conns, r.summary());
    let rows = vec![
        Row {
            name: format!("http.bare_actix.requests_per_s.{}_conns", settings.conns),
            value: r.throughput(),
            unit: "requests/s",
            goal: None,
        },
        Row {
            name: "http.bare_actix.loadgen_us_per_request".into(),
            value: r.client_cpu_s * 1e6 / r.answered.max(1) as f64,
            unit: "µs CPU",
            goal: None,
        },
    ];
    let details = format!(
        "== bare actix-web handler (calibration: the generator's ceiling) ==\n{}\n  load generator CPU per request: {:.1} µs\n\n",
        r.summary(),
        r.client_cpu_s * 1e6 / r.answered.max(1) as f64
    );
    Ok((rows, details))
}
