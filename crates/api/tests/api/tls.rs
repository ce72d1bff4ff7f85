//! Wires nobody can read (issue 13): the API over HTTPS with a certificate made in the test
//! (rcgen: a CA and a server certificate for `localhost` and 127.0.0.1), a client that
//! trusts another CA refused, plain HTTP to the TLS port refused, the certificate replaced
//! on SIGHUP (a bad new file keeps the old one), and `/metrics` on a listener of its own.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{s, Backend, Body, City, Server, TestResult};

/// A test certificate authority.
pub struct Ca {
    pub pem: String,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Result<Ca, String> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(s)?;
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
        let key = rcgen::KeyPair::generate().map_err(s)?;
        let cert = params.self_signed(&key).map_err(s)?;
        Ok(Ca { pem: cert.pem(), issuer: rcgen::Issuer::new(params, key) })
    }

    /// A server certificate for `localhost` and 127.0.0.1: (certificate PEM, key PEM).
    pub fn server_cert(&self) -> Result<(String, String), String> {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).map_err(s)?;
        params.distinguished_name.push(rcgen::DnType::CommonName, "kartu test server");
        let key = rcgen::KeyPair::generate().map_err(s)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(s)?;
        Ok((cert.pem(), key.serialize_pem()))
    }
}

/// Writes a certificate and key where the server reads them; the key owner-only.
pub fn install(cert_path: &Path, key_path: &Path, (cert, key): &(String, String)) -> TestResult {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(cert_path, cert).map_err(s)?;
    std::fs::write(key_path, key).map_err(s)?;
    std::fs::set_permissions(key_path, std::fs::Permissions::from_mode(0o600)).map_err(s)
}

/// A client that trusts only `ca_pem`, with no pooled connections (each request a new
/// handshake).
pub fn client(ca_pem: &str) -> Result<ureq::Agent, String> {
    let ca = ureq::tls::Certificate::from_pem(ca_pem.as_bytes()).map_err(s)?;
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::Specific(Arc::new(vec![ca])))
        .build();
    Ok(ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .max_idle_connections(0)
        .tls_config(tls)
        .build()
        .into())
}

/// GET with a new connection: the status, or the transport error's text.
fn probe(agent: &ureq::Agent, url: &str) -> Result<u16, String> {
    agent.get(url).call().map(|r| r.status().as_u16()).map_err(|e| e.to_string())
}

fn set(config: String, from: &str, to: &str) -> String {
    assert!(config.contains(from), "kartu.toml has no {from:?}: {config}");
    config.replace(from, to)
}

/// Adds top-level settings to kartu.toml (before its `[limits]` table).
fn with_top_level(config: String, lines: &str) -> String {
    set(config, "hold_sweep_interval_ms = 200\n", &format!("hold_sweep_interval_ms = 200\n{lines}"))
}

fn sighup() -> TestResult {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .map_err(|e| format!("kill -HUP: {e}"))?;
    check!(status.success(), "kill -HUP: {status}");
    Ok(())
}

/// Polls until `done`, for up to 10 s.
fn eventually(what: &str, mut done: impl FnMut() -> Result<bool, String>) -> TestResult {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done()? {
        check!(Instant::now() < deadline, "{what}: not within 10 s");
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

fn reloads(s: &Server) -> Result<(i64, i64), String> {
    let m = s.get_public("/metrics")?;
    check!(m.status == 200, "metrics over HTTPS: {} {}", m.status, m.text);
    let value = |result: &str| {
        let prefix = format!("kartu_tls_reloads_total{{result=\"{result}\"}} ");
        m.text.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse::<i64>().ok())
    };
    Ok((value("ok").ok_or(format!("no ok reloads in\n{}", m.text))?, value("failed").ok_or("no failed reloads")?))
}

/// HTTPS: a key file others may read is refused at start; with the test CA trusted a real
/// payment goes through and the audit log's checkpoint is served; a client trusting
/// another CA is refused with a certificate error; plain HTTP to the TLS port gets no
/// answer. SIGHUP after the files are replaced by a certificate of a second CA: new
/// connections see the new certificate (the second CA's client is accepted, the first's
/// refused). SIGHUP after a broken certificate file: the reload fails, counted in
/// /metrics, and the certificate in use stays.
pub fn https_and_sighup_reload(backend: Backend) -> TestResult {
    let dir = tempfile::tempdir().map_err(s)?;
    let (cert_path, key_path): (PathBuf, PathBuf) = (dir.path().join("server.crt"), dir.path().join("server.key"));
    let (ca1, ca2) = (Ca::new("Kartu test CA one")?, Ca::new("Kartu test CA two")?);
    install(&cert_path, &key_path, &ca1.server_cert()?)?;
    let tls = format!("tls_cert = \"{}\"\ntls_key = \"{}\"\n", cert_path.display(), key_path.display());

    // A key file the group may read: the server does not start.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o640)).map_err(s)?;
        let refused = Server::start_with(backend, |c| with_top_level(c, &tls));
        let why = refused.err().ok_or("a group-readable TLS key was accepted")?;
        check!(why.contains("readable by group or others") && why.contains("server.key"), "{why}");
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).map_err(s)?;
    }

    let server = Server::start_with(backend, |c| with_top_level(c, &tls))?;
    let port = server.addr.port();
    let base = format!("https://localhost:{port}");
    // A real payment over HTTPS, and the audit log through it.
    let mut c = City::on(server.over(base.clone(), client(&ca1.pem)?), "100.00")?;
    let paid = c.pay(&c.card, "12.50")?;
    check_eq!(paid.expect(201)?["balance"], crate::support::idr("87.50"));
    let note = c.s.get("/v1/audit/checkpoints/latest", &c.auditor)?;
    check!(note.status == 200 && note.text.contains("kartu.example/log"), "{} {}", note.status, note.text);
    // By IP address too: the certificate names 127.0.0.1.
    check_eq!(probe(&client(&ca1.pem)?, &format!("https://127.0.0.1:{port}/healthz")), Ok(200));

    // Another CA: the handshake fails on the certificate.
    let refused = probe(&client(&ca2.pem)?, &format!("{base}/healthz"));
    let why = refused.err().ok_or("a client trusting another CA was served")?;
    check!(why.contains("UnknownIssuer") || why.contains("certificate"), "{why}");
    // Plain HTTP to the TLS port: no HTTP answer.
    let plain: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let answer = probe(&plain, &format!("http://127.0.0.1:{port}/healthz"));
    check!(answer.is_err(), "plain HTTP on the TLS port was answered: {answer:?}");

    // SIGHUP with the second CA's certificate in the files.
    let (ok_before, failed_before) = reloads(&c.s)?;
    install(&cert_path, &key_path, &ca2.server_cert()?)?;
    sighup()?;
    eventually("the second CA's client accepted after SIGHUP", || {
        Ok(probe(&client(&ca2.pem)?, &format!("{base}/healthz")) == Ok(200))
    })?;
    let old = probe(&client(&ca1.pem)?, &format!("{base}/healthz"));
    check!(old.as_ref().is_err_and(|e| e.contains("UnknownIssuer")), "the old certificate is still served: {old:?}");
    c.s.use_client(base.clone(), client(&ca2.pem)?);
    let (ok_after, _) = reloads(&c.s)?;
    check!(ok_after > ok_before, "reloads {ok_before} → {ok_after}");
    // The money is still there, over the new certificate.
    let card = c.s.get(&format!("/v1/cards/{}", c.card.id), &c.s.operator)?;
    check_eq!(card.expect(200)?["balance"], crate::support::idr("87.50"));

    // A broken certificate file: the reload fails and the certificate in use stays.
    std::fs::write(&cert_path, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n").map_err(s)?;
    sighup()?;
    eventually("the failed reload counted", || Ok(reloads(&c.s)?.1 > failed_before))?;
    check_eq!(probe(&client(&ca2.pem)?, &format!("{base}/healthz")), Ok(200));
    check_eq!(c.s.send("GET", "/healthz", None, None, Body::None)?.status, 200);
    Ok(())
}

/// `metrics_listen`: `/metrics` on its own address (plain HTTP, still behind
/// `metrics_token`), nothing else there; the main listener answers 404 `not_found` for it.
pub fn metrics_on_its_own_listener(backend: Backend) -> TestResult {
    const TOKEN: &str = "m-fedcba9876543210";
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_err(s)?.port();
    let metrics = format!("127.0.0.1:{port}");
    let srv = Server::start_with(backend, |c| {
        with_top_level(c, &format!("metrics_listen = \"{metrics}\"\nmetrics_token = \"{TOKEN}\"\n"))
    })?;
    // The main listener: the API, and 404 for /metrics (with or without the token).
    check_eq!(srv.get_public("/healthz")?.status, 200);
    srv.get_public("/metrics")?.problem(404, "not_found")?;
    srv.send("GET", "/metrics", Some(TOKEN), None, Body::None)?.problem(404, "not_found")?;
    // The metrics listener: /metrics with the token only, and nothing else.
    let on_metrics = |path: &str, token: Option<&str>| -> Result<(u16, String), String> {
        let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
        let mut req = agent.get(&format!("http://{metrics}{path}"));
        if let Some(t) = token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let mut r = req.call().map_err(s)?;
        Ok((r.status().as_u16(), r.body_mut().read_to_string().map_err(s)?))
    };
    let (status, text) = on_metrics("/metrics", Some(TOKEN))?;
    check!(status == 200 && text.contains("kartu_audit_tree_size "), "{status} {text}");
    check_eq!(on_metrics("/metrics", None)?.0, 401);
    let (status, text) = on_metrics("/healthz", None)?;
    check!(status == 404 && text.contains("not_found"), "{status} {text}");
    check_eq!(on_metrics("/v1/cards/1", Some(&srv.operator))?.0, 404);
    // Requests to the main listener are what the metrics count.
    let (_, text) = on_metrics("/metrics", Some(TOKEN))?;
    check!(
        text.lines()
            .any(|l| l.starts_with("kartu_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}")),
        "{text}"
    );
    Ok(())
}
