//! The client against a real server: `api::server::server` (every middleware included)
//! in-process on a random port over a new SQLite installation. Each check states what a
//! caller may rely on: a refusal carries the problem's `code` and status, an unreachable
//! server is *offline*, a wrong connection is *broken*, and the typed routes parse.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use client::wire::{NewTopup, TrialBalance};
use client::{AsyncClient, Client, ClientError};

/// A served installation: its base URL and its first operator's token.
struct Served {
    base: String,
    operator: String,
    _dir: tempfile::TempDir,
}

static SERVED: OnceLock<Served> = OnceLock::new();

fn served() -> &'static Served {
    SERVED.get_or_init(|| serve().unwrap_or_else(|e| panic!("the test server did not start: {e}")))
}

fn serve() -> Result<Served, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let init = api::server::init(dir.path(), None, "KARTU-MKS").map_err(|e| e.to_string())?;
    let loaded = api::server::load(dir.path(), None).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let base = format!("http://{}", listener.local_addr().map_err(|e| e.to_string())?);
    let state = loaded.state;
    api::server::serve_in_thread(state, listener, 1);
    let client = Client::new(&base, None, Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let started = Instant::now();
    while client.healthz().is_err() {
        if started.elapsed() > Duration::from_secs(20) {
            return Err("the server did not answer /healthz".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Served { base, operator: init.operator_token, _dir: dir })
}

fn client() -> Client {
    Client::new(&served().base, None, Some(Duration::from_secs(10))).expect("client")
}

#[test]
fn a_typed_read_parses_the_documented_json() {
    let trial = client().with_token(&served().operator).trial_balance().expect("trial balance");
    assert!(trial.currencies.iter().all(|l| l.balanced), "{trial:?}");
    assert!(trial.last_entry_seq >= 0);
    let today = client().transparency(None).expect("transparency (public)");
    assert_eq!(today.topups.currency, "IDR");
}

#[test]
fn a_refusal_carries_the_problem_code_and_status() {
    let e = client().with_token("kt_not_a_token").trial_balance().expect_err("a bad token is refused");
    assert_eq!(e.status(), Some(401), "{e}");
    let problem = e.problem().expect("a problem document");
    assert_eq!(problem.type_, format!("urn:kartu:problem:{}", problem.code));
    assert_eq!(e.code(), Some(problem.code.as_str()));
    assert!(!e.is_unavailable(), "a 401 is an answer, not an outage");
    assert!(e.to_string().contains("GET /v1/audit/trial-balance: 401"), "{e}");
}

#[test]
fn a_refused_write_names_its_code() {
    let body = NewTopup { tap: None, card_id: Some("1".into()), amount: "10.00".into(), currency: None };
    let e = client().with_token(&served().operator).topup("client-test-topup", &body).expect_err("not an agent");
    assert_eq!(e.status(), Some(403), "{e}");
    assert!(e.code().is_some_and(|c| !c.is_empty()), "{e}");
}

#[test]
fn an_answer_that_is_not_the_documented_json_is_a_decode_error() {
    let e = client().get::<TrialBalance>("/healthz").expect_err("healthz is not a trial balance");
    assert!(matches!(e, ClientError::Decode { .. }), "{e:?}");
}

#[test]
fn an_unreachable_server_is_offline() {
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    let e = Client::new(&format!("http://127.0.0.1:{port}"), None, Some(Duration::from_secs(2)))
        .expect("client")
        .healthz()
        .expect_err("nothing listens there");
    assert!(matches!(e, ClientError::Offline(_)), "{e:?}");
    assert!(e.is_unavailable());
}

#[test]
fn https_to_a_plain_http_server_is_broken_not_offline() {
    let base = served().base.replacen("http://", "https://", 1);
    let e = Client::new(&base, None, Some(Duration::from_secs(5))).expect("client").healthz().expect_err("no TLS");
    assert!(matches!(e, ClientError::Broken(_)), "{e:?}");
    assert!(!e.is_unavailable());
}

#[test]
fn a_url_that_is_not_http_is_a_configuration_error() {
    let e = Client::new("ftp://127.0.0.1:1", None, None).expect_err("not http");
    assert!(matches!(&e, ClientError::Config(m) if m.contains("unknown scheme")), "{e:?}");
    assert!(matches!(Client::new("http://", None, None), Err(ClientError::Config(_))));
}

#[test]
fn the_async_face_gives_the_same_answers() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let api = AsyncClient::new(client());
    let (trial, refused) = runtime.block_on(async {
        let trial: Result<TrialBalance, _> = api.with_token(&served().operator).get("/v1/audit/trial-balance").await;
        let refused: Result<TrialBalance, _> = api.with_token("kt_nope").get("/v1/audit/trial-balance").await;
        (trial, refused)
    });
    assert!(trial.is_ok(), "{trial:?}");
    assert_eq!(refused.expect_err("refused").status(), Some(401));
}
