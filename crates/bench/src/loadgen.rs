//! The HTTP load generator: virtual cards whose taps are made with the installation's key
//! file, set up through the API (merchant, terminal credential, agent with float,
//! holders, cards, top-ups), then `POST /v1/payments` from C keep-alive connections,
//! closed loop (each connection sends its next request when the last one is answered) or
//! open loop (at a fixed offered rate, latency counted from when each request was due).
//!
//! Each connection owns its own cards, so the taps of a card reach the server in counter
//! order. Every request has a fresh Idempotency-Key; a request that meets a connection
//! error or a 503 is sent again, the same bytes with the same key, so the server can never
//! charge it twice.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use card::keyfile::KeyFile;
use card::sun::{encrypt_picc_data, sdm_mac};
use card::{diversify_card_key, CardUid, Key, ReadCounter};
use hdrhistogram::Histogram;

use crate::client::{self, Conn};

/// The newest key version of a key file: what the generator's virtual cards carry.
pub struct CardKeys {
    meta: Key,
    file_master: Key,
    system_identifier: Vec<u8>,
}

impl std::fmt::Debug for CardKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CardKeys(..)")
    }
}

impl CardKeys {
    /// Reads a key file (SPEC §6), e.g. `DATA/keys.toml`.
    pub fn load(path: &std::path::Path) -> Result<CardKeys> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let file = KeyFile::parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))?;
        let newest = file.newest();
        Ok(CardKeys {
            meta: newest.sdm_meta_read_key().clone(),
            file_master: newest.sdm_file_read_master_key().clone(),
            system_identifier: file.system_identifier().as_bytes().to_vec(),
        })
    }
}

impl CardKeys {
    /// The SDM meta-read key: [`VirtualCard::tap`] encrypts PICCData with it.
    pub fn meta_read_key(&self) -> &Key {
        &self.meta
    }

    /// Fixed keys, for a server that does not check taps (the calibration).
    pub fn fixed() -> CardKeys {
        CardKeys {
            meta: Key::from_bytes([0x11; 16]),
            file_master: Key::from_bytes([0x22; 16]),
            system_identifier: b"KARTU-MKS".to_vec(),
        }
    }

    /// Cards that no server knows (for the calibration against a bare handler).
    pub fn offline_cards(&self, n: usize) -> Result<Vec<VirtualCard>> {
        (0..n as u32)
            .map(|i| {
                VirtualCard::new(
                    CardUid::from_bytes([0x04, 0xBA, 0x4E, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]),
                    self,
                )
            })
            .collect()
    }
}

/// A card the generator taps: its UID, its diversified file-read key, its read counter.
pub struct VirtualCard {
    uid: CardUid,
    file_key: Key,
    counter: u32,
}

impl std::fmt::Debug for VirtualCard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VirtualCard({}, counter {})", hex::encode_upper(self.uid.as_bytes()), self.counter)
    }
}

impl VirtualCard {
    pub(crate) fn new(uid: CardUid, keys: &CardKeys) -> Result<VirtualCard> {
        let file_key = diversify_card_key(&keys.file_master, &uid, 2, &keys.system_identifier)
            .map_err(|e| anyhow!("diversification: {e}"))?;
        Ok(VirtualCard { uid, file_key, counter: 0 })
    }

    /// The next tap's JSON (`{"picc_data": ..., "cmac": ...}`) into `out`: the counter goes up.
    pub fn tap(&mut self, meta: &Key, out: &mut Vec<u8>) -> Result<()> {
        self.counter += 1;
        let counter = ReadCounter::new(self.counter).ok_or_else(|| anyhow!("read counter overflow"))?;
        let padding = self.counter.to_le_bytes();
        let picc = encrypt_picc_data(meta, &self.uid, counter, [padding[0], padding[1], padding[2], 0x5A, 0xA5]);
        let mac = sdm_mac(&self.file_key, &self.uid, counter, &[]);
        out.extend_from_slice(br#"{"picc_data":""#);
        push_hex(out, &picc);
        out.extend_from_slice(br#"","cmac":""#);
        push_hex(out, &mac);
        out.extend_from_slice(br#""}"#);
        Ok(())
    }
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 15)]);
    }
}

/// How many times a request is sent before the generator gives up on it.
pub(crate) const ATTEMPTS: u32 = 8;
/// How long one attempt may take before the connection is dropped and the request resent.
pub(crate) const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long, or how many, and at which pace.
#[derive(Debug, Clone)]
pub struct RunSpec {
    /// Concurrent keep-alive connections.
    pub conns: usize,
    /// Not measured, before the measured window (time-bound runs).
    pub warmup: Duration,
    /// The measured window (when `count` is none).
    pub duration: Duration,
    /// Send exactly this many payments instead (all measured).
    pub count: Option<u64>,
    /// Open loop at this many requests/s in all; closed loop when none.
    pub rate: Option<f64>,
    /// Payment amount, decimal IDR.
    pub amount: String,
    /// Tap at a transit gate instead of paying (`POST /v1/transit/taps`, boarding; the
    /// token is the gate validator's).
    pub transit: bool,
    /// The server's pid, to measure its CPU time and per-thread CPU during the window.
    pub server_pid: Option<u32>,
}

/// Results of one run.
#[derive(Debug)]
pub struct RunResult {
    /// Latency, µs.
    pub hist: Histogram<u64>,
    /// Requests answered within the window.
    pub answered: u64,
    /// The window's length.
    pub window: Duration,
    /// Answers by status and problem code (`201`, `422 card_unknown`, `gave_up`...).
    pub codes: BTreeMap<String, u64>,
    /// Requests sent again (connection error or 503).
    pub retries: u64,
    /// The open-loop rate asked for.
    pub offered: Option<f64>,
    /// CPU seconds of this process (the generator) in the window.
    pub client_cpu_s: f64,
    /// CPU seconds of the server in the window.
    pub server_cpu_s: Option<f64>,
    /// Server CPU seconds by thread name in the window.
    pub server_threads: Vec<(String, f64)>,
    /// CPU seconds the whole machine was busy in the window (every process: the server,
    /// the generator, PostgreSQL, and whatever else runs: the noise).
    pub machine_cpu_s: Option<f64>,
}

impl RunResult {
    /// Answers per second within the window.
    pub fn throughput(&self) -> f64 {
        self.answered as f64 / self.window.as_secs_f64().max(1e-9)
    }
    /// A latency quantile, ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
    /// Approved payments (201, or 200 for a retried one answered from its first result).
    pub fn approved(&self) -> u64 {
        self.codes.get("201").copied().unwrap_or(0) + self.codes.get("200").copied().unwrap_or(0)
    }
    /// A short human summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{:.0} answers/s ({} in {:.1} s{}), latency p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms; \
             retries {}; generator CPU {:.0}% of a core",
            self.throughput(),
            self.answered,
            self.window.as_secs_f64(),
            self.offered.map(|r| format!(", offered {r:.0}/s")).unwrap_or_default(),
            self.quantile_ms(0.5),
            self.quantile_ms(0.99),
            self.quantile_ms(0.999),
            self.hist.max() as f64 / 1000.0,
            self.retries,
            100.0 * self.client_cpu_s / self.window.as_secs_f64(),
        );
        let secs = self.window.as_secs_f64();
        if let Some(cpu) = self.server_cpu_s {
            s.push_str(&format!(", server CPU {:.0}% of a core", 100.0 * cpu / secs));
        }
        if let Some(busy) = self.machine_cpu_s {
            let others = busy - self.client_cpu_s - self.server_cpu_s.unwrap_or(0.0);
            s.push_str(&format!(
                ", machine busy {:.0}% of {} cores (other processes {:.0}% of a core)",
                100.0 * busy / secs / cores() as f64,
                cores(),
                100.0 * others.max(0.0) / secs
            ));
        }
        s.push_str("; results: ");
        s.push_str(&self.codes.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", "));
        s
    }
}

/// A process's CPU time (user + system), seconds, from `/proc/<pid>/stat` (clock ticks of
/// 1/100 s, the Linux `USER_HZ`).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".into(),
    };
    stat_ticks(&std::fs::read_to_string(path).ok()?).map(|(_, t)| t as f64 / 100.0)
}

/// Cores of this machine.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Busy CPU time of the whole machine, seconds, from `/proc/stat` (all but idle and iowait).
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4)?;
    Some((total - idle) as f64 / 100.0)
}

/// (thread name, user + system ticks) of one `stat` line.
fn stat_ticks(stat: &str) -> Option<(String, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat[open + 1..close].to_owned();
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    // After the name: state is field 3, utime field 14, stime field 15 (1-based).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((name, utime + stime))
}

/// CPU ticks of each of a process's threads, summed by thread name (numbers stripped, so
/// `worker 0` and `worker 1` count together).
pub fn thread_ticks(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return out };
    for task in dir.flatten() {
        if let Some((name, ticks)) =
            std::fs::read_to_string(task.path().join("stat")).ok().as_deref().and_then(stat_ticks)
        {
            let name: String = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == ':' || c == ' ').into();
            *out.entry(name).or_insert(0) += ticks;
        }
    }
    out
}

/// Peak resident set of a process, KiB (`VmHWM`).
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct ConnStats {
    hist: Histogram<u64>,
    answered: u64,
    codes: Vec<(u16, String, u64)>,
    retries: u64,
}

impl ConnStats {
    fn count(&mut self, status: u16, code: &str) {
        match self.codes.iter_mut().find(|(s, c, _)| *s == status && c == code) {
            Some(e) => e.2 += 1,
            None => self.codes.push((status, code.to_owned(), 1)),
        }
    }
}

/// When a connection sends and what it records.
#[derive(Clone, Copy)]
struct Plan {
    /// Measured window (closed or open loop by time).
    window: (Instant, Instant),
    /// Requests this connection sends (count mode).
    count: Option<u64>,
    /// Open loop: first due time and the gap between this connection's requests.
    pace: Option<(Instant, Duration)>,
}

/// Sends one payment, again on a connection error or a 503, same bytes, same key.
/// Returns the final status (0: gave up) and the problem code of a non-2xx answer.
async fn send_retrying(
    conn: &mut Option<Conn>,
    addr: SocketAddr,
    request: &[u8],
    stats: &mut ConnStats,
    code: &mut String,
) -> u16 {
    code.clear();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            stats.retries += 1;
            tokio::time::sleep(Duration::from_millis(5 * u64::from(attempt))).await;
        }
        if conn.as_ref().is_none_or(|c| c.closed) {
            match Conn::connect(addr).await {
                Ok(c) => *conn = Some(c),
                Err(_) => continue,
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        match tokio::time::timeout(ATTEMPT_TIMEOUT, c.send(request)).await {
            Ok(Ok(r)) if r.status == 503 => continue,
            Ok(Ok(r)) => {
                if !(200..300).contains(&r.status) {
                    code.push_str(client::problem_code(r.body));
                }
                return r.status;
            }
            Ok(Err(_)) | Err(_) => *conn = None,
        }
    }
    code.push_str("gave_up");
    0
}

/// When the next request's latency starts: now, or its due time when the connection is
/// behind schedule because the last answer came late (the wait counts: no coordinated
/// omission); an idle connection sleeps until it is due and counts from the real send.
async fn send_time(due: Option<Instant>, last_done: Instant) -> Instant {
    let Some(d) = due else { return Instant::now() };
    if Instant::now() < d {
        tokio::time::sleep_until(d.into()).await;
    }
    if last_done > d {
        d
    } else {
        Instant::now()
    }
}

async fn connection(
    index: usize,
    addr: SocketAddr,
    token: Arc<str>,
    meta: Arc<Key>,
    mut cards: Vec<VirtualCard>,
    plan: Plan,
    amount: Option<Arc<str>>,
) -> Result<(ConnStats, Vec<VirtualCard>)> {
    let mut stats =
        ConnStats { hist: Histogram::new_with_bounds(1, 120_000_000, 3)?, answered: 0, codes: Vec::new(), retries: 0 };
    if cards.is_empty() {
        return Ok((stats, cards));
    }
    let mut conn = Conn::connect(addr).await.ok();
    let tag = format!("{:x}", run_nonce());
    let mut body = Vec::with_capacity(256);
    let mut key = String::with_capacity(48);
    let mut code = String::new();
    let (mut next_card, mut seq) = (0usize, 0u64);
    let mut due = plan.pace.map(|(first, _)| first);
    let mut last_done = Instant::now();
    loop {
        match plan.count {
            Some(n) if seq >= n => break,
            None if Instant::now() >= plan.window.1 || due.is_some_and(|d| d >= plan.window.1) => break,
            _ => {}
        }
        let start = send_time(due, last_done).await;
        let n_cards = cards.len();
        let card = &mut cards[next_card];
        next_card = (next_card + 1) % n_cards;
        body.clear();
        body.extend_from_slice(br#"{"tap":"#);
        card.tap(&meta, &mut body)?;
        let path = match &amount {
            Some(amount) => {
                body.extend_from_slice(br#","amount":""#);
                body.extend_from_slice(amount.as_bytes());
                body.extend_from_slice(br#"","currency":"IDR"}"#);
                "/v1/payments"
            }
            None => {
                body.extend_from_slice(br#","direction":"on"}"#);
                "/v1/transit/taps"
            }
        };
        key.clear();
        use std::fmt::Write;
        let _ = write!(key, "lg-{tag}-{index}-{seq}");
        let request = client::request("POST", path, Some(&token), Some(&key), Some(&body));
        let status = send_retrying(&mut conn, addr, &request, &mut stats, &mut code).await;
        let done = Instant::now();
        if plan.count.is_some() || (start >= plan.window.0 && done <= plan.window.1) {
            let _ = stats.hist.record((done - start).as_micros().max(1) as u64);
            stats.answered += 1;
            stats.count(status, &code);
        }
        last_done = done;
        seq += 1;
        if let (Some(d), Some((_, gap))) = (due.as_mut(), plan.pace) {
            *d += gap;
        }
    }
    Ok((stats, cards))
}

/// Connection `index`'s share of the run: its window, its count, its pace.
fn plan(spec: &RunSpec, conns: usize, index: usize, t0: Instant, window: (Instant, Instant)) -> Plan {
    let count = spec.count.map(|n| n / conns as u64 + u64::from((index as u64) < n % conns as u64));
    let pace = spec.rate.map(|rate| {
        let gap = Duration::from_secs_f64(conns as f64 / rate);
        (t0 + gap.mul_f64(index as f64 / conns as f64), gap)
    });
    Plan { window, count, pace }
}

/// What the connections of a run gathered, merged.
type Gathered = (Histogram<u64>, u64, u64, BTreeMap<String, u64>, Vec<VirtualCard>);

/// Waits for every connection; their latencies, answers, retries and result codes merged,
/// and their cards back.
async fn gather(tasks: &mut tokio::task::JoinSet<Result<(ConnStats, Vec<VirtualCard>)>>) -> Result<Gathered> {
    let mut all = Vec::new();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut answered, mut retries) = (0, 0);
    let mut codes = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        let (stats, mine) = r.map_err(|e| anyhow!("connection task: {e}"))??;
        hist.add(&stats.hist)?;
        answered += stats.answered;
        retries += stats.retries;
        for (status, code, n) in stats.codes {
            let name = if status == 0 {
                code
            } else if code.is_empty() {
                status.to_string()
            } else {
                format!("{status} {code}")
            };
            *codes.entry(name).or_insert(0) += n;
        }
        all.extend(mine);
    }
    Ok((hist, answered, retries, codes, all))
}

/// This process's CPU seconds, the server's, and the server's ticks per thread, now.
fn cpu_now(server_pid: Option<u32>) -> (Option<f64>, Option<f64>, BTreeMap<String, u64>) {
    (cpu_seconds(None), server_pid.and_then(|p| cpu_seconds(Some(p))), server_pid.map(thread_ticks).unwrap_or_default())
}

/// Each server thread's CPU seconds between two readings, busiest first.
fn thread_seconds(end: &BTreeMap<String, u64>, start: &BTreeMap<String, u64>) -> Vec<(String, f64)> {
    let mut threads: Vec<(String, f64)> = end
        .iter()
        .map(|(name, t)| (name.clone(), t.saturating_sub(*start.get(name).unwrap_or(&0)) as f64 / 100.0))
        .filter(|(_, s)| *s > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    threads
}

/// Drives `POST /v1/payments` (or transit taps, [`RunSpec::transit`]) with `spec.conns` connections; the cards are dealt out to the
/// connections and handed back (with their counters) for the next run.
pub async fn run(
    addr: SocketAddr,
    token: &str,
    keys: &CardKeys,
    cards: Vec<VirtualCard>,
    spec: &RunSpec,
) -> Result<(RunResult, Vec<VirtualCard>)> {
    if cards.len() < spec.conns {
        bail!("{} cards for {} connections: every connection needs its own cards", cards.len(), spec.conns);
    }
    let conns = spec.conns.max(1);
    let mut dealt: Vec<Vec<VirtualCard>> = (0..conns).map(|_| Vec::new()).collect();
    for (i, c) in cards.into_iter().enumerate() {
        dealt[i % conns].push(c);
    }
    let token: Arc<str> = token.into();
    let meta = Arc::new(keys.meta.clone());
    let amount: Option<Arc<str>> = (!spec.transit).then(|| spec.amount.as_str().into());
    let t0 = Instant::now() + Duration::from_millis(50);
    let window = match spec.count {
        Some(_) => (t0, t0 + Duration::from_secs(3600)),
        None => (t0 + spec.warmup, t0 + spec.warmup + spec.duration),
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (index, mine) in dealt.into_iter().enumerate() {
        let plan = plan(spec, conns, index, t0, window);
        tasks.spawn(connection(index, addr, token.clone(), meta.clone(), mine, plan, amount.clone()));
    }
    // CPU of both processes over the window.
    let measure = spec.count.is_none();
    if measure {
        tokio::time::sleep_until(window.0.into()).await;
    }
    let cpu_at_start = (cpu_seconds(None), spec.server_pid.and_then(|p| cpu_seconds(Some(p))));
    let machine_at_start = machine_busy_seconds();
    let threads_at_start = spec.server_pid.map(thread_ticks).unwrap_or_default();
    let started = Instant::now();
    let mut cpu_at_end = None;
    let mut machine_at_end = None;
    if measure {
        tokio::time::sleep_until(window.1.into()).await;
        machine_at_end = machine_busy_seconds();
        cpu_at_end = Some(cpu_now(spec.server_pid));
    }
    let (hist, answered, retries, codes, all) = gather(&mut tasks).await?;
    let elapsed = started.elapsed();
    if !measure {
        machine_at_end = machine_busy_seconds();
    }
    let (cpu_end, server_end, threads_end) = cpu_at_end.unwrap_or_else(|| cpu_now(spec.server_pid));
    let window_len = if measure { window.1 - window.0 } else { elapsed };
    let server_threads = thread_seconds(&threads_end, &threads_at_start);
    let result = RunResult {
        hist,
        answered,
        window: window_len,
        codes,
        retries,
        offered: spec.rate,
        client_cpu_s: cpu_end.zip(cpu_at_start.0).map_or(0.0, |(e, s)| e - s),
        server_cpu_s: server_end.zip(cpu_at_start.1).map(|(e, s)| e - s),
        server_threads,
        machine_cpu_s: machine_at_end.zip(machine_at_start).map(|(e, s)| e - s),
    };
    Ok((result, all))
}

/// A number that differs between runs, so that a second set-up on the same server makes
/// new holders, cards and keys.
pub(crate) fn run_nonce() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}
