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
    /// Connections.
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
    /// p99.
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
    let addr = server.addr;
    let pid = server.pid();
    let spec = RunSpec {
        conns: settings.conns,
        warmup: Duration::from_secs(1),
        duration: Duration::from_secs_f64(settings.seconds),
        count: None,
        rate: None,
        amount: AMOUNT.into(),
        server_pid: Some(pid),
    };
    let wal_path = data_dir.join("kartu.db-wal");
    let wal_path = &wal_path;
    let (closed, sweep_runs, wal, sessions) = rt.block_on(async {
        let fleet = loadgen::setup(addr, &server.operator_token, &keys, settings.cards, TOPUP, 8).await?;
        let token = fleet.merchant_token;
        let sessions_before = pg_sessions(db.as_ref());
        let (closed, mut cards) = loadgen::run(addr, &token, &keys, fleet.cards, &spec).await?;
        let sessions = pg_sessions(db.as_ref()).zip(sessions_before).map(|(a, b)| a - b);
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
                let (r, back) = loadgen::run(addr, &token, &keys, cards, &point).await?;
                cards = back;
                eprintln!("bench: http {backend} open loop at {:.0}%: {}", fraction * 100.0, r.summary());
                sweep.push((fraction, r));
            }
        }
        Ok::<_, anyhow::Error>((closed, sweep, wal, sessions))
    })?;
    let metrics = server.get("/metrics").unwrap_or_default();
    let rss_kib = loadgen::peak_rss_kib(pid).context("reading the server's VmHWM")?;
    server.stop()?;
    drop(db);

    let name = |what: &str| format!("http.{backend}.{what}");
    let mut rows = vec![
        Row {
            name: name(&format!("payments_per_s.{}_conns", settings.conns)),
            value: closed.approved() as f64 / closed.window.as_secs_f64(),
            unit: "payments/s",
            goal: Some(goal),
        },
        Row { name: name("p50_ms"), value: closed.quantile_ms(0.5), unit: "ms", goal: None },
        Row { name: name("p99_ms"), value: closed.quantile_ms(0.99), unit: "ms", goal: Some(-10.0) },
        Row { name: name("p999_ms"), value: closed.quantile_ms(0.999), unit: "ms", goal: None },
        Row {
            name: name("not_approved"),
            value: (closed.answered - closed.approved()) as f64,
            unit: "requests",
            goal: None,
        },
        Row {
            name: name("loadgen_cpu_pct"),
            value: 100.0 * closed.client_cpu_s / closed.window.as_secs_f64(),
            unit: "% of a core",
            goal: None,
        },
        Row {
            name: name("server_cpu_pct"),
            value: 100.0 * closed.server_cpu_s.unwrap_or(0.0) / closed.window.as_secs_f64(),
            unit: "% of a core",
            goal: None,
        },
        Row {
            name: name("machine_cpu_busy_pct"),
            value: 100.0 * closed.machine_cpu_s.unwrap_or(0.0) / closed.window.as_secs_f64(),
            unit: "% of a core",
            goal: None,
        },
        Row { name: name("server_peak_rss_mib"), value: rss_kib as f64 / 1024.0, unit: "MiB", goal: None },
    ];
    if let Some(bytes) = wal.filter(|_| backend == "sqlite") {
        rows.push(Row {
            name: name("wal_mib_after_closed_loop"),
            value: bytes as f64 / (1024.0 * 1024.0),
            unit: "MiB",
            goal: None,
        });
    }
    if let Some(n) = sessions {
        // Each is a PostgreSQL backend forked and torn down: the read pool's overflow.
        rows.push(Row {
            name: name("new_db_sessions_per_1000_payments"),
            value: 1000.0 * n as f64 / closed.approved().max(1) as f64,
            unit: "sessions",
            goal: None,
        });
    }
    let mut sweep = Vec::new();
    for (fraction, r) in &sweep_runs {
        let pct = (fraction * 100.0).round();
        rows.push(Row {
            name: name(&format!("open_loop_{pct}pct.p99_ms")),
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

    let mut details = String::new();
    let _ = writeln!(details, "== {backend} ==");
    let _ = writeln!(
        details,
        "closed loop, {} connections, {} cards: {}",
        settings.conns,
        settings.cards,
        closed.summary()
    );
    let _ = writeln!(details, "  server CPU by thread during the window:\n{}", thread_table(&closed));
    let _ = writeln!(details, "  server peak RSS (VmHWM): {:.1} MiB", rss_kib as f64 / 1024.0);
    if !sweep_runs.is_empty() {
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
        for ((fraction, r), p) in sweep_runs.iter().zip(&sweep) {
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
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("kartu_payments_total")
                || l.starts_with("kartu_writer_")
                || (l.contains("/v1/payments")
                    && (l.contains("_sum")
                        || l.contains("_count")
                        || l.contains("le=\"0.005\"")
                        || l.contains("le=\"0.01\""))))
    }) {
        let _ = writeln!(details, "    {line}");
    }
    details.push('\n');
    Ok(HttpOutcome { rows, sweep, details })
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
