//! The bench's set-up through the API, with `kartu-client`'s async face: a merchant and
//! its terminal credential, an agent with float and its credential, holders with one card
//! each, every card topped up. Only the load loop (`loadgen`) keeps its own minimal
//! HTTP/1.1 writer, for speed; the set-up is not measured.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use api_client::wire::NewTopup;
use api_client::{AsyncClient, Client, ClientError};
use card::CardUid;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::loadgen::{run_nonce, CardKeys, VirtualCard, ATTEMPTS, ATTEMPT_TIMEOUT};

/// What the set-up made: the merchant terminal's token and the cards, topped up.
#[derive(Debug)]
pub struct Fleet {
    /// Bearer token of the merchant terminal that takes the payments.
    pub merchant_token: String,
    /// The virtual cards.
    pub cards: Vec<VirtualCard>,
}

/// One write of the set-up, sent again with the same key when the server cannot be
/// reached or answers 503.
async fn call<T: DeserializeOwned + Send + 'static>(
    api: &AsyncClient,
    path: &str,
    key: &str,
    body: impl serde::Serialize + Clone + Send + 'static,
) -> Result<T> {
    let mut last = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
        }
        match api.post(path, key, body.clone()).await {
            Ok(answer) => return Ok(answer),
            Err(e @ ClientError::Offline(_)) => last = e.to_string(),
            Err(e) if e.status() == Some(503) => last = e.to_string(),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("POST {path}: no answer after {ATTEMPTS} attempts: {last}")
}

fn field(v: &Value, name: &str) -> Result<String> {
    v.get(name).and_then(Value::as_str).map(str::to_owned).ok_or_else(|| anyhow!("no {name:?} in {v}"))
}

/// Creates, through the API, a merchant (fee rate 0.7%) and its terminal credential, an
/// agent with float and its credential, `cards` holders with one card each, and tops each
/// card up with `topup` (decimal, IDR). `parallel` workers do the work.
pub async fn setup(
    addr: SocketAddr,
    operator_token: &str,
    keys: &CardKeys,
    cards: usize,
    topup: &str,
    parallel: usize,
) -> Result<Fleet> {
    let started = Instant::now();
    let nonce = run_nonce();
    let tag = format!("setup-{nonce:016x}");
    let api = AsyncClient::new(Client::new(&format!("http://{addr}"), None, Some(ATTEMPT_TIMEOUT))?);
    let (merchant_token, agent_token) = credentials(&api.with_token(operator_token), &tag, topup, cards).await?;
    let uid_base = nonce.to_be_bytes();
    let uids: Vec<CardUid> = (0..cards)
        .map(|i| {
            let i = i as u32;
            CardUid::from_bytes([0x04, uid_base[0], uid_base[1], uid_base[2], (i >> 16) as u8, (i >> 8) as u8, i as u8])
        })
        .collect();
    // Each worker issues the cards i ≡ w (mod parallel).
    let parallel = parallel.clamp(1, cards.max(1));
    let nik_base = nonce % 9_000_000_000_000_000 + 1_000_000_000_000_000 - cards as u64;
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..parallel {
        let worker = Worker {
            op: api.with_token(operator_token),
            agent: api.with_token(&agent_token),
            tag: tag.clone(),
            topup: topup.to_owned(),
            nik_base,
        };
        let mine: Vec<(usize, CardUid)> = uids.iter().copied().enumerate().skip(w).step_by(parallel).collect();
        workers.spawn(async move { worker.issue(mine).await });
    }
    while let Some(r) = workers.join_next().await {
        r.map_err(|e| anyhow!("set-up worker: {e}"))??;
    }
    let cards = uids.into_iter().map(|uid| VirtualCard::new(uid, keys)).collect::<Result<Vec<_>>>()?;
    eprintln!(
        "bench: set up a merchant, an agent and {} topped-up cards through the API in {:.1} s",
        cards.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(Fleet { merchant_token, cards })
}

/// The largest float funding a default installation accepts (`limits.float_funding_max`).
const FLOAT_FUNDING_MAX: f64 = 1_000_000_000.0;

/// Funds the agent's float with `total` (IDR), in fundings no larger than the server's
/// default maximum, as a city's operator would.
async fn fund_float(op: &AsyncClient, tag: &str, agent_id: &str, total: f64) -> Result<()> {
    let mut left = total;
    let mut n = 0;
    while left > 0.0 {
        let amount = left.min(FLOAT_FUNDING_MAX);
        let body = json!({"amount": format!("{amount:.2}"), "currency": "IDR"});
        let float: Value = call(op, &format!("/v1/agents/{agent_id}/float"), &format!("{tag}-float-{n}"), body).await?;
        if float["status"] == "pending" {
            bail!(
                "the agent's float funding ({amount:.2}) is above the server's float_approval_threshold_minor and \
                 waits for a second operator (approval {}): raise the threshold for a bench installation, or use \
                 fewer cards",
                float["id"]
            );
        }
        left -= amount;
        n += 1;
    }
    Ok(())
}

/// The merchant and its terminal's token, the agent with float for `cards` top-ups of
/// `topup` and its credential's token, made by the operator `op`.
async fn credentials(op: &AsyncClient, tag: &str, topup: &str, cards: usize) -> Result<(String, Arc<str>)> {
    let body = json!({"name": "bench merchant", "category": "grocery", "fee_rate": "0.007"});
    let merchant: Value = call(op, "/v1/merchants", &format!("{tag}-merchant"), body).await?;
    let body = json!({"role": "merchant_terminal", "name": "bench terminal", "merchant_id": field(&merchant, "id")?});
    let terminal: Value = call(op, "/v1/credentials", &format!("{tag}-terminal"), body).await?;
    let agent: Value = call(op, "/v1/agents", &format!("{tag}-agent"), json!({"name": "bench agent"})).await?;
    let agent_id = field(&agent, "id")?;
    let per_card: f64 = topup.parse().context("top-up amount")?;
    fund_float(op, tag, &agent_id, per_card * cards as f64).await?;
    let body = json!({"role": "top_up_agent", "name": "bench agent counter", "agent_id": agent_id});
    let agent_cred: Value = call(op, "/v1/credentials", &format!("{tag}-agentcred"), body).await?;
    Ok((field(&terminal, "token")?, field(&agent_cred, "token")?.into()))
}

/// One set-up worker: issues its share of the cards and tops them up.
struct Worker {
    /// The API as the operator.
    op: AsyncClient,
    /// The API as the agent.
    agent: AsyncClient,
    tag: String,
    topup: String,
    nik_base: u64,
}

impl Worker {
    async fn issue(self, mine: Vec<(usize, CardUid)>) -> Result<()> {
        let tag = &self.tag;
        for (i, uid) in mine {
            let body = json!({"name": format!("bench holder {i}"), "nik": format!("{:016}", self.nik_base + i as u64),
                "categories": ["resident"]});
            let holder: Value = call(&self.op, "/v1/holders", &format!("{tag}-holder-{i}"), body).await?;
            let body = json!({"uid": hex::encode_upper(uid.as_bytes()), "holder_id": field(&holder, "id")?});
            let card: Value = call(&self.op, "/v1/cards", &format!("{tag}-card-{i}"), body).await?;
            let topup = NewTopup {
                tap: None,
                card_id: Some(field(&card, "id")?),
                amount: self.topup.clone(),
                currency: Some("IDR".into()),
            };
            let _: api_client::wire::TopupView =
                call(&self.agent, "/v1/topups", &format!("{tag}-topup-{i}"), topup).await?;
        }
        Ok(())
    }
}
