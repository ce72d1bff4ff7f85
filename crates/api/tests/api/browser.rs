//! A real browser for the pages' tests: Debian's `chromium`, headless, loading a page from
//! the real server and running its script to the end (`--virtual-time-budget`), then
//! printing the DOM (`--dump-dom`). A profile folder per `Browser` keeps localStorage
//! between loads, as a citizen's phone does.
//!
//! `Proxy` stands between the browser and the server and can lie the way a compromised
//! server or network would: change the leaf bytes or details in a receipt page, a hash of
//! an inclusion or consistency proof, a checkpoint's signature, or serve an older
//! checkpoint (a rolled-back log). The pages' own checks must catch each.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::s;

/// How long a page's scripts may run (virtual time: the budget waits for the network).
const BUDGET_MS: u32 = 20_000;
/// The longest a browser may take for one page, in real time.
const TIMEOUT: Duration = Duration::from_secs(90);

/// A headless chromium with its own profile.
pub struct Browser {
    profile: tempfile::TempDir,
}

impl Browser {
    pub fn new() -> Result<Browser, String> {
        Ok(Browser { profile: tempfile::tempdir().map_err(s)? })
    }

    /// The DOM of `url` after its scripts ran, the browser asking for `lang` first.
    pub fn dom(&self, url: &str, lang: &str) -> Result<String, String> {
        let mut child = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--no-first-run",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
            ])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .arg(format!("--accept-lang={lang}"))
            .arg(format!("--virtual-time-budget={BUDGET_MS}"))
            .arg("--dump-dom")
            .arg(url)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("chromium could not start ({e}): scripts/setup.sh installs it"))?;
        let mut out = child.stdout.take().ok_or("chromium stdout")?;
        let reader = std::thread::spawn(move || {
            let mut text = String::new();
            out.read_to_string(&mut text).map(|_| text)
        });
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = child.try_wait().map_err(s)? {
                let text = reader.join().map_err(|_| "reader")?.map_err(s)?;
                check!(status.success(), "chromium {url}: {status}");
                check!(text.contains("</html>"), "chromium printed no DOM for {url}: {text}");
                return Ok(text);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("chromium took over {TIMEOUT:?} for {url}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the proxy changes in what it passes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tamper {
    /// Passes everything on as the server sent it.
    Honest,
    /// One hex digit of a receipt page's leaf bytes.
    LeafBytes,
    /// The amount a receipt page shows (and hands the script), not the bytes.
    Details,
    /// One hash of an inclusion proof.
    InclusionProof,
    /// One hash of a consistency proof.
    ConsistencyProof,
    /// One byte of the checkpoint's signature.
    Signature,
    /// This note instead of the latest checkpoint.
    Checkpoint(String),
    /// A verification script that says "Verified" whatever the proofs say.
    Script,
}

/// A proxy in front of a server, on its own port.
pub struct Proxy {
    pub base: String,
    pub tamper: Arc<Mutex<Tamper>>,
    /// Responses it changed.
    pub changed: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn start(upstream: &str) -> Result<Proxy, String> {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(s)?;
        let base = format!("http://{}", listener.local_addr().map_err(s)?);
        let tamper = Arc::new(Mutex::new(Tamper::Honest));
        let changed = Arc::new(AtomicUsize::new(0));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let (upstream, t, c) = (upstream.to_owned(), tamper.clone(), changed.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (upstream, t, c, agent) = (upstream.clone(), t.clone(), c.clone(), agent.clone());
                std::thread::spawn(move || {
                    let _ = serve(stream, &upstream, &agent, &t, &c);
                });
            }
        });
        Ok(Proxy { base, tamper, changed })
    }

    pub fn set(&self, tamper: Tamper) {
        if let Ok(mut t) = self.tamper.lock() {
            *t = tamper;
        }
    }

    pub fn changed(&self) -> usize {
        self.changed.load(Ordering::SeqCst)
    }
}

/// One request (GET, no body), passed on and answered with `Connection: close`.
fn serve(
    mut stream: TcpStream,
    upstream: &str,
    agent: &ureq::Agent,
    tamper: &Mutex<Tamper>,
    changed: &AtomicUsize,
) -> Result<(), String> {
    let mut reader = BufReader::new(stream.try_clone().map_err(s)?);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(s)?;
    let path = line.split_whitespace().nth(1).ok_or("request line")?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).map_err(s)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((name, value)) = h.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "accept-language" || name == "cookie" {
                headers.push((name, value.trim().to_owned()));
            }
        }
    }
    let mut request = ureq::http::Request::builder().method("GET").uri(format!("{upstream}{path}"));
    for (n, v) in &headers {
        request = request.header(n, v);
    }
    let mut response = agent.run(request.body(()).map_err(s)?).map_err(s)?;
    let status = response.status().as_u16();
    let pass = ["content-type", "content-security-policy", "set-cookie"];
    let kept: Vec<(String, String)> = response
        .headers()
        .iter()
        .filter(|(n, _)| pass.contains(&n.as_str()))
        .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let body = response.body_mut().read_to_string().map_err(s)?;
    let mode = tamper.lock().map_err(|_| "lock")?.clone();
    let body = match change(&mode, &path, &body) {
        Some(b) => {
            changed.fetch_add(1, Ordering::SeqCst);
            b
        }
        None => body,
    };
    let mut out = format!("HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
    for (n, v) in kept {
        out.push_str(&format!("{n}: {v}\r\n"));
    }
    out.push_str("\r\n");
    stream.write_all(out.as_bytes()).map_err(s)?;
    stream.write_all(body.as_bytes()).map_err(s)
}

/// The body as the proxy's lie has it (`None`: passed on as it is).
fn change(mode: &Tamper, path: &str, body: &str) -> Option<String> {
    match mode {
        Tamper::Honest => None,
        Tamper::LeafBytes if path.starts_with("/receipts/") => {
            // The 11th byte: inside the entry's time.
            let at = body.find("data-leaf=\"")? + "data-leaf=\"".len() + 20;
            Some(flip_at(body, at, b'0', b'1'))
        }
        Tamper::Details if path.starts_with("/receipts/") => {
            let marker = "data-amount-minor=\"";
            let at = body.find(marker)? + marker.len();
            let end = at + body[at..].find('"')?;
            let amount: i64 = body[at..end].parse().ok()?;
            Some(format!("{}{}{}", &body[..at], amount + 100, &body[end..]))
        }
        Tamper::InclusionProof if path.starts_with("/v1/audit/proofs/inclusion") => flip_first_hash(body),
        Tamper::ConsistencyProof if path.starts_with("/v1/audit/proofs/consistency") => flip_first_hash(body),
        Tamper::Signature if path.starts_with("/v1/audit/checkpoints/latest") => {
            // Past the signature line's key id (the first 4 bytes, 6 base64 digits).
            let at = body.find("\n\n\u{2014} ")? + 2;
            let sig = at + body[at..].rfind(' ')? + 1 + 20;
            Some(flip_at(body, sig, b'A', b'B'))
        }
        Tamper::Checkpoint(note) if path.starts_with("/v1/audit/checkpoints/latest") => Some(note.clone()),
        Tamper::Script if path.starts_with("/assets/kartu.js") => Some(
            "var s = document.getElementById('verify-status'); s.dataset.state = 'ok'; s.dataset.check = 'ok';".into(),
        ),
        _ => None,
    }
}

fn flip_at(body: &str, at: usize, a: u8, b: u8) -> String {
    let mut bytes = body.as_bytes().to_vec();
    bytes[at] = if bytes[at] == a { b } else { a };
    String::from_utf8(bytes).unwrap_or_default()
}

fn flip_first_hash(body: &str) -> Option<String> {
    let mut v: serde_json::Value = serde_json::from_str(body).ok()?;
    let first = v["hashes"].get_mut(0)?;
    let h = first.as_str()?.to_owned();
    *first = serde_json::Value::String(flip_at(&h, 0, b'0', b'1'));
    Some(v.to_string())
}

// ---- reading the DOM chromium printed ----

/// The opening tag of the element with this id.
pub fn tag<'a>(dom: &'a str, id: &str) -> Option<&'a str> {
    let at = dom.find(&format!(" id=\"{id}\""))?;
    let start = dom[..at].rfind('<')?;
    let end = at + dom[at..].find('>')?;
    Some(&dom[start..=end])
}

/// An attribute of an opening tag, unescaped.
pub fn attr_in(tag: &str, name: &str) -> Option<String> {
    let marker = format!(" {name}=\"");
    let at = tag.find(&marker)? + marker.len();
    let end = at + tag[at..].find('"')?;
    Some(unescape(&tag[at..end]))
}

/// An attribute of the element with this id.
pub fn attr(dom: &str, id: &str, name: &str) -> Option<String> {
    attr_in(tag(dom, id)?, name)
}

/// The text of the element with this id, up to its first child element.
pub fn text(dom: &str, id: &str) -> Option<String> {
    let t = tag(dom, id)?;
    let start = dom.find(t)? + t.len();
    let end = start + dom[start..].find('<')?;
    Some(unescape(&dom[start..end]).trim().to_owned())
}

/// Every opening tag that has this attribute, in document order.
pub fn tags_with<'a>(dom: &'a str, name: &str) -> Vec<&'a str> {
    let marker = format!(" {name}=\"");
    dom.match_indices(&marker)
        .filter_map(|(at, _)| {
            let start = dom[..at].rfind('<')?;
            let end = at + dom[at..].find('>')?;
            Some(&dom[start..=end])
        })
        .collect()
}

fn unescape(text: &str) -> String {
    text.replace("&quot;", "\"").replace("&lt;", "<").replace("&gt;", ">").replace("&#39;", "'").replace("&amp;", "&")
}
