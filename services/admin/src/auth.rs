//! Who may call the API: accounts with the admin role, holding a token.
//!
//! A token is `<id>.<secret>`: the id names it (in listings, revocations
//! and the audit log), the secret proves it, and only the secret's SHA-256
//! is stored. A password login gets a login token that expires after
//! `admin.login_token_ttl_secs` (the web console's login gets it as a
//! cookie, with a CSRF value: `cookie.rs`); an administrator makes API
//! tokens for automation, which expire when asked to and are revoked by id. Every
//! request checks its token and that its holder still has the role, so a
//! revoked role or token takes effect at the next request.

use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use xmppd_grpc::Credential;
use xmppd_sasl::ScramHash;
use xmppd_session::clock::now_ms;
use xmppd_session::service::Core;

use crate::cookie;
use crate::error::ApiError;
use crate::store::{self, TokenRow};
use crate::{AdminApi, AfterQuery, Body, Limit, Page, Params, timestamp};

/// How long a failed password login waits before it answers, so that
/// guessing is slow.
const FAILED_LOGIN_DELAY: Duration = Duration::from_secs(1);
/// Expired tokens are remembered this long (to answer `token_expired`
/// rather than `invalid_token`), then forgotten at the next login.
const EXPIRED_TOKENS_KEPT_MS: i64 = 24 * 3600 * 1000;
/// The longest name a token may be given.
const MAX_TOKEN_NAME: usize = 200;

/// The administrator making a request, once its token checked out.
#[derive(Clone, Debug)]
pub struct Caller {
    pub jid: String,
    pub token_id: String,
    /// The login's CSRF value, when the token came in the console's cookie.
    pub csrf: Option<String>,
}

impl FromRequestParts<AdminApi> for Caller {
    type Rejection = ApiError;

    /// A bearer token wins over a cookie; a cookie needs its CSRF value on
    /// requests that change something ([`cookie`]).
    async fn from_request_parts(parts: &mut Parts, api: &AdminApi) -> Result<Self, ApiError> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "));
        if let Some(token) = bearer {
            return api.authenticate(token.trim()).await;
        }
        let Some(token) = cookie::token(&parts.headers) else {
            return Err(ApiError::unauthorized(
                "missing_token",
                "send Authorization: Bearer <token>, or log in to the console",
            ));
        };
        let caller = api.authenticate(token).await?;
        cookie::check_csrf(&parts.method, &parts.headers, token)?;
        Ok(Caller {
            csrf: Some(cookie::csrf_value(token)),
            ..caller
        })
    }
}

impl AdminApi {
    /// Whether `jid` holds the admin role, by configuration or grant.
    pub async fn is_admin(&self, jid: &str) -> Result<bool, ApiError> {
        Ok(is_admin(self.core(), &self.settings().admins, jid).await?)
    }

    async fn authenticate(&self, token: &str) -> Result<Caller, ApiError> {
        let invalid = || ApiError::unauthorized("invalid_token", "unknown or malformed token");
        let (id, secret) = token.split_once('.').ok_or_else(invalid)?;
        let row = store::token(&self.core().store, id)
            .await?
            .ok_or_else(invalid)?;
        let matches: bool = secret_hash(secret)
            .as_bytes()
            .ct_eq(row.secret_hash.as_bytes())
            .into();
        if !matches {
            return Err(invalid());
        }
        if row.revoked_at.is_some() {
            return Err(ApiError::unauthorized(
                "token_revoked",
                "this token was revoked",
            ));
        }
        if row.expires_at.is_some_and(|expires| expires <= now_ms()) {
            return Err(ApiError::unauthorized(
                "token_expired",
                "this token expired",
            ));
        }
        if !self.is_admin(&row.jid).await? {
            return Err(not_admin(&row.jid));
        }
        Ok(Caller {
            jid: row.jid,
            token_id: row.id,
            csrf: None,
        })
    }

    /// Writes one entry of the audit log. A change the log cannot record
    /// is still made (it was made before), but the request fails, so the
    /// caller knows.
    pub async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: serde_json::Value,
    ) -> Result<(), ApiError> {
        Ok(audit(self.core(), actor, action, target, detail).await?)
    }

    /// A new token for `jid`, stored; its secret is in the answer only.
    async fn issue(
        &self,
        jid: &str,
        kind: &str,
        name: &str,
        ttl: Option<Duration>,
    ) -> Result<NewToken, ApiError> {
        let mut random = [0u8; 40];
        rand::rng().fill_bytes(&mut random);
        let id = hex(&random[..8]);
        let secret = URL_SAFE_NO_PAD.encode(&random[8..]);
        let created_at = now_ms();
        let expires_at = ttl.map(|ttl| {
            created_at.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
        });
        let row = TokenRow {
            id: id.clone(),
            secret_hash: secret_hash(&secret),
            jid: jid.to_string(),
            kind: kind.to_string(),
            name: name.to_string(),
            created_at,
            expires_at,
            revoked_at: None,
        };
        store::insert_token(&self.core().store, &row).await?;
        Ok(NewToken {
            token: format!("{id}.{secret}"),
            info: TokenInfo::from(row),
        })
    }
}

/// Whether `jid` holds the admin role: listed in `admins` (the
/// configuration's) or granted.
pub async fn is_admin(core: &Core, admins: &[String], jid: &str) -> Result<bool, sqlx::Error> {
    if admins.iter().any(|admin| admin == jid) {
        return Ok(true);
    }
    store::has_role(&core.store, jid).await
}

/// Records a change in the audit log.
pub async fn audit(
    core: &Core,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    store::record(
        &core.store,
        now_ms(),
        actor,
        action,
        target,
        &detail.to_string(),
    )
    .await?;
    tracing::info!(actor, action, target, "admin change");
    Ok(())
}

fn not_admin(jid: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "not_admin",
        format!("{jid} does not hold the admin role"),
    )
}

fn secret_hash(secret: &str) -> String {
    hex(&Sha256::digest(secret.as_bytes()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A token as listings show it: never its secret.
#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub id: String,
    pub jid: String,
    /// `login` or `api`.
    pub kind: String,
    pub name: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked: bool,
}

impl From<TokenRow> for TokenInfo {
    fn from(row: TokenRow) -> Self {
        TokenInfo {
            id: row.id,
            jid: row.jid,
            kind: row.kind,
            name: row.name,
            created_at: timestamp(row.created_at),
            expires_at: row.expires_at.map(timestamp),
            revoked: row.revoked_at.is_some(),
        }
    }
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Serialize)]
pub struct NewToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenInfo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    jid: String,
    password: String,
}

/// `POST /auth/login`: a password for a login token.
pub async fn login(
    State(api): State<AdminApi>,
    Body(login): Body<Login>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let token = password_login(&api, login).await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// What `POST /auth/console-login` answers: the login, without its token,
/// which is in the cookie only.
#[derive(Debug, Serialize)]
pub struct ConsoleLogin {
    pub jid: String,
    pub id: String,
    pub expires_at: Option<String>,
    /// The value to echo in `X-CSRF-Token` on every request that is not a GET.
    pub csrf: String,
}

/// `POST /auth/console-login`: a password for a login token, set as the
/// console's cookie.
pub async fn console_login(
    State(api): State<AdminApi>,
    Body(login): Body<Login>,
) -> Result<impl IntoResponse, ApiError> {
    let token = password_login(&api, login).await?;
    let cookie = cookie::set(&token.token, api.settings().login_token_ttl.as_secs());
    let answer = ConsoleLogin {
        csrf: cookie::csrf_value(&token.token),
        jid: token.info.jid,
        id: token.info.id,
        expires_at: token.info.expires_at,
    };
    Ok((StatusCode::CREATED, cookie, Json(answer)))
}

/// Checks an administrator's password and issues a login token.
async fn password_login(api: &AdminApi, login: Login) -> Result<NewToken, ApiError> {
    let jid = api.local_account(&login.jid)?;
    let credentials = api.core().store.credentials(jid.as_str()).await?;
    let keys = Credential::keys_for(ScramHash::Sha256, &credentials)
        .or_else(|| Credential::keys_for(ScramHash::Sha1, &credentials));
    let verified = match keys {
        Some(keys) => {
            tokio::task::spawn_blocking(move || xmppd_sasl::verify_password(&keys, &login.password))
                .await
                .unwrap_or(false)
        }
        None => false,
    };
    if !verified {
        tokio::time::sleep(FAILED_LOGIN_DELAY).await;
        return Err(ApiError::unauthorized(
            "bad_credentials",
            "wrong JID or password",
        ));
    }
    if !api.is_admin(jid.as_str()).await? {
        return Err(not_admin(jid.as_str()));
    }
    store::forget_expired(&api.core().store, now_ms() - EXPIRED_TOKENS_KEPT_MS).await?;
    let ttl = api.settings().login_token_ttl;
    let token = api.issue(jid.as_str(), "login", "login", Some(ttl)).await?;
    api.audit(jid.as_str(), "auth.login", &token.info.id, json!({}))
        .await?;
    Ok(token)
}

/// `POST /auth/logout`: revokes the token the request carries, and has the
/// browser forget the console's cookie.
pub async fn logout(
    State(api): State<AdminApi>,
    caller: Caller,
) -> Result<impl IntoResponse, ApiError> {
    store::revoke_token(&api.core().store, &caller.token_id, now_ms()).await?;
    api.audit(&caller.jid, "auth.logout", &caller.token_id, json!({}))
        .await?;
    Ok((StatusCode::NO_CONTENT, cookie::clear()))
}

/// What `GET /auth/me` answers.
#[derive(Debug, Serialize)]
pub struct Me {
    pub jid: String,
    /// The id of the token the request carries.
    pub token_id: String,
    /// With the console's cookie: the value to echo in `X-CSRF-Token`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub csrf: Option<String>,
}

/// `GET /auth/me`: who the request's token belongs to. The console asks it
/// when it opens, to learn whether its cookie still holds a login.
pub async fn me(caller: Caller) -> Json<Me> {
    Json(Me {
        jid: caller.jid,
        token_id: caller.token_id,
        csrf: caller.csrf,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewApiToken {
    name: String,
    /// Seconds until it expires; never when absent.
    ttl_secs: Option<u64>,
}

/// `POST /tokens`: an API token for the caller.
pub async fn create_token(
    State(api): State<AdminApi>,
    caller: Caller,
    Body(request): Body<NewApiToken>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    if request.name.is_empty() || request.name.len() > MAX_TOKEN_NAME {
        return Err(ApiError::bad_request(
            "bad_name",
            format!("a token's name has 1 to {MAX_TOKEN_NAME} bytes"),
        ));
    }
    if request.ttl_secs == Some(0) {
        return Err(ApiError::bad_request(
            "bad_ttl",
            "ttl_secs must be positive, or absent for a token that does not expire",
        ));
    }
    let ttl = request.ttl_secs.map(Duration::from_secs);
    let token = api.issue(&caller.jid, "api", &request.name, ttl).await?;
    let detail = json!({"name": request.name, "ttl_secs": request.ttl_secs});
    api.audit(&caller.jid, "token.create", &token.info.id, detail)
        .await?;
    Ok((StatusCode::CREATED, Json(token)))
}

/// `GET /tokens`: the API tokens (every administrator's), by id.
pub async fn list_tokens(
    State(api): State<AdminApi>,
    _caller: Caller,
    Params(query): Params<AfterQuery>,
) -> Result<Json<Page<TokenInfo>>, ApiError> {
    let limit = query.limit.get()?;
    let rows = store::api_tokens_page(&api.core().store, &query.after, limit + 1).await?;
    let items = rows.into_iter().map(TokenInfo::from).collect();
    Ok(Json(Page::from_rows(items, limit, |token: &TokenInfo| {
        token.id.clone()
    })))
}

/// `DELETE /tokens/{id}`: revokes a token.
pub async fn revoke_token(
    State(api): State<AdminApi>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !store::revoke_token(&api.core().store, &id, now_ms()).await? {
        return Err(ApiError::not_found(
            "unknown_token",
            format!("no token {id} that is not revoked already"),
        ));
    }
    api.audit(&caller.jid, "token.revoke", &id, json!({}))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// An entry id: the page holds older entries only.
    before: Option<i64>,
    #[serde(default)]
    limit: Limit,
}

/// `GET /audit`: the audit log, newest first.
pub async fn audit_log(
    State(api): State<AdminApi>,
    _caller: Caller,
    Params(query): Params<AuditQuery>,
) -> Result<Json<Page<store::AuditEntry>>, ApiError> {
    let limit = query.limit.get()?;
    let before = match query.before {
        None => 0,
        Some(before @ 1..) => before,
        Some(_) => {
            return Err(ApiError::bad_request(
                "bad_cursor",
                "before is a positive entry id",
            ));
        }
    };
    let rows = store::audit_page(&api.core().store, before, limit + 1).await?;
    Ok(Json(Page::from_rows(rows, limit, |entry| {
        entry.id.to_string()
    })))
}

/// Grants or takes back the admin role from the command line, which works
/// on the database and records itself in the audit log as `cli`.
pub async fn set_role(
    store: &xmppd_storage::Store,
    jid: &str,
    admin: bool,
) -> Result<bool, sqlx::Error> {
    let (changed, action) = if admin {
        (store::grant(store, jid, now_ms()).await?, "role.grant")
    } else {
        (store::revoke_role(store, jid).await?, "role.revoke")
    };
    if changed {
        store::record(store, now_ms(), "cli", action, jid, "{}").await?;
    }
    Ok(changed)
}
