//! A real `kartu serve` process for the HTTP measurements: `kartu init` a data directory,
//! serve it on a free loopback port, wait until `/readyz` answers, stop it with SIGTERM.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A running `kartu serve`.
#[derive(Debug)]
pub struct KartuServer {
    child: Option<Child>,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The first operator's token, from `kartu init`.
    pub operator_token: String,
    /// Its standard error.
    pub log: PathBuf,
}

/// The `kartu` binary next to this one (both are built into the same target directory).
pub fn default_kartu_binary() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("kartu")))
        .unwrap_or_else(|| PathBuf::from("kartu"))
}

impl KartuServer {
    /// `kartu init --data-dir DATA [--database-url URL]`, then `kartu serve` on a free port.
    pub fn start(kartu: &Path, data_dir: &Path, database_url: Option<&str>) -> Result<KartuServer> {
        if !kartu.exists() {
            bail!("{} does not exist: build it first (cargo build --release -p kartu)", kartu.display());
        }
        let mut init = Command::new(kartu);
        init.arg("init").arg("--data-dir").arg(data_dir);
        if let Some(url) = database_url {
            init.arg("--database-url").arg(url);
        }
        let out = init.stderr(Stdio::piped()).output().with_context(|| format!("running {}", kartu.display()))?;
        if !out.status.success() {
            bail!("kartu init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let operator_token = String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.starts_with("kt_"))
            .map(str::to_owned)
            .context("kartu init printed no operator token")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let log = data_dir.join("serve.log");
        // A bench funds its agent with every card's top-up at once, far above the default
        // threshold at which a float waits for a second operator: this installation is a
        // bench's, so the threshold is lifted.
        let child = Command::new(kartu)
            .env("KARTU_FLOAT_APPROVAL_THRESHOLD_MINOR", i64::MAX.to_string())
            .arg("serve")
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--listen")
            .arg(addr.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting kartu serve")?;
        let mut server = KartuServer { child: Some(child), addr, operator_token, log };
        server.wait_ready(Duration::from_secs(60))?;
        Ok(server)
    }

    fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                bail!("kartu serve exited ({status}): {}", std::fs::read_to_string(&self.log).unwrap_or_default());
            }
            if get(self.addr, "/readyz").is_ok_and(|(status, _)| status == 200) {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!("kartu serve was not ready within {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `GET path` on the server (e.g. `/metrics`).
    pub fn get(&self, path: &str) -> Result<String> {
        let (status, body) = get(self.addr, path)?;
        if status != 200 {
            bail!("GET {path}: {status}");
        }
        Ok(body)
    }

    /// SIGTERM, and wait for the graceful shutdown (at most 40 s, then SIGKILL).
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else { return Ok(()) };
        let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(40) {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    eprintln!("bench: kartu serve exited with {status}; its log is {}", self.log.display());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        bail!("kartu serve did not stop within 40 s of SIGTERM")
    }
}

impl Drop for KartuServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A one-off `GET` (Connection: close), for readiness and metrics.
fn get(addr: SocketAddr, path: &str) -> Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: kartu\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let status = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).context("no status line")?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}
