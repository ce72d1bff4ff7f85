//! Bearer tokens: one per terminal or person, shown once, stored as SHA-256, each with a
//! role and a scope. Every request looks its token up, so a revoked token stops working
//! at once, on every server process.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest};
use base64::Engine;
use card::CardUid;
use ledger::registry::{Card, Credential};

use crate::error::ApiError;
use crate::AppState;

/// Token prefix, so leaked tokens are easy to find by scanners.
pub const TOKEN_PREFIX: &str = "kt_";

/// What a credential may do: the domain's roles, stored by name.
pub use domain::registry::Role;

/// A new random token: `kt_` and 32 random bytes in URL-safe base64.
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| ApiError::internal("no randomness"))?;
    Ok(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// What is stored: SHA-256 of the token (tokens carry 256 random bits, so no salt or
/// slow hash is needed).
pub fn token_hash(token: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The credential.
    pub credential: Credential,
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// Refuses callers of other roles.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!("a {} credential may not do this", self.role.as_str())))
        }
    }

    /// The merchant of a merchant terminal.
    pub fn merchant_id(&self) -> Result<i64, ApiError> {
        self.require(&[Role::MerchantTerminal])?;
        self.credential.merchant_id.ok_or_else(|| ApiError::forbidden("this terminal has no merchant"))
    }

    /// The idempotency namespace of this caller: keys of different credentials never meet.
    pub fn key(&self, key: &str) -> String {
        format!("c{}:{key}", self.credential.id)
    }

    /// How the caller appears in references and event scopes.
    pub fn reference(&self) -> String {
        format!("credential:{}", self.credential.id)
    }
}

fn unauthorized(detail: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
}

/// The bearer token of a request, checked for shape and hashed, not yet looked up: a
/// handler on the hot path resolves it ([`Caller::resolve`]) in the same trip to the
/// blocking pool as its other reads. Most handlers take [`Caller`], which does both.
#[derive(Debug, Clone)]
pub struct BearerToken {
    hash: [u8; 32],
    /// Where the request log learns the credential, once looked up.
    log: Option<crate::requests::RequestLog>,
    /// The request came from this machine (loopback): exempt from the per-credential rate
    /// limit unless `limits.rate_limit_loopback` says otherwise.
    loopback: bool,
}

impl FromRequest for BearerToken {
    type Error = ApiError;
    type Future = std::future::Ready<Result<BearerToken, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let token = match req.headers().get(actix_web::http::header::AUTHORIZATION).map(|h| h.to_str()) {
            None => Err(unauthorized("send Authorization: Bearer <token>")),
            Some(Err(_)) => Err(unauthorized("the Authorization header is not ASCII")),
            Some(Ok(header)) => header
                .strip_prefix("Bearer ")
                .filter(|t| t.starts_with(TOKEN_PREFIX) && t.len() < 100)
                .map(|token| BearerToken {
                    hash: token_hash(token),
                    log: actix_web::HttpMessage::extensions(req).get::<crate::requests::RequestLog>().cloned(),
                    loopback: req.peer_addr().is_some_and(|a| a.ip().is_loopback()),
                })
                .ok_or_else(|| unauthorized("send Authorization: Bearer <token>")),
        };
        std::future::ready(token)
    }
}

impl Caller {
    /// Looks the token up (blocking: call it on the blocking pool). Unknown and revoked
    /// tokens are refused; the stored hash is compared again in constant time.
    pub fn resolve(state: &AppState, token: BearerToken) -> Result<Caller, ApiError> {
        let found = state.ledger.registry(|r| r.credential_by_hash(&token.hash))?;
        Caller::admit(state, token, found)
    }

    /// [`Caller::resolve`], and the card with UID `uid` read in the same statement
    /// (`Registry::credential_and_card`): the card payment's one round trip. The card is
    /// told only to a caller the token admits.
    pub fn resolve_with_card(
        state: &AppState,
        token: BearerToken,
        uid: Option<CardUid>,
    ) -> Result<(Caller, Option<Card>), ApiError> {
        let found = state.ledger.registry(|r| r.credential_and_card(&token.hash, uid))?;
        let (credential, card) = found.map_or((None, None), |(credential, card)| (Some(credential), card));
        Ok((Caller::admit(state, token, credential)?, card))
    }

    /// The caller of `token`, given the credential its hash found (if any).
    fn admit(state: &AppState, token: BearerToken, found: Option<Credential>) -> Result<Caller, ApiError> {
        let hash = token.hash;
        let credential = match found {
            // The index lookup found it by hash; compare again in constant time so the
            // decision never depends on a short-circuiting comparison.
            Some(c) if bool::from(subtle::ConstantTimeEq::ct_eq(c.token_hash.as_slice(), hash.as_slice())) => c,
            _ => return Err(unauthorized("unknown token")),
        };
        if credential.revoked_at_us.is_some() {
            return Err(unauthorized("this token was revoked"));
        }
        let role = credential.role;
        if let Some(log) = &token.log {
            log.set_credential(credential.id);
        }
        state.admit(credential.id, token.loopback)?;
        Ok(Caller { credential, role })
    }
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Caller, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let state = req.app_data::<web::Data<AppState>>().cloned();
        let token = BearerToken::from_request(req, payload).into_inner();
        Box::pin(async move {
            let state = state.ok_or_else(|| ApiError::internal("no app state"))?;
            let token = token?;
            web::block(move || Caller::resolve(&state, token)).await?
        })
    }
}

/// The `Idempotency-Key` header every write takes.
#[derive(Debug, Clone)]
pub struct IdempotencyHeader(pub String);

/// Longest client key (the server prefixes the credential).
pub const CLIENT_KEY_MAX: usize = 100;

impl FromRequest for IdempotencyHeader {
    type Error = ApiError;
    type Future = std::future::Ready<Result<IdempotencyHeader, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let key = match req.headers().get("idempotency-key") {
            None => {
                Err(ApiError::bad_request("idempotency_key_required", "every write takes an Idempotency-Key header"))
            }
            Some(v) => match v.to_str() {
                Ok(k) if !k.is_empty() && k.len() <= CLIENT_KEY_MAX && k.bytes().all(|b| b.is_ascii_graphic()) => {
                    Ok(IdempotencyHeader(k.to_owned()))
                }
                _ => Err(ApiError::bad_request(
                    "idempotency_key_invalid",
                    format!("an Idempotency-Key is 1 to {CLIENT_KEY_MAX} printable ASCII characters"),
                )),
            },
        };
        std::future::ready(key)
    }
}
