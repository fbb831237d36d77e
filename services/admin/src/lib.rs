//! The HTTP admin API: accounts, sessions across the cluster, announcements,
//! shared roster groups and cluster status as JSON, for administrators holding a token.
//!
//! It runs inside a session replica (and the all-in-one process), because a
//! replica already has everything it needs: the store (accounts), the
//! registry (every bound resource of the cluster, node liveness) and streams
//! to the routers, through which a kick reaches the connection-manager that
//! holds the stream, and an announcement reaches its recipients like any
//! stanza the replica sends (`docs/architecture.md`).
//!
//! # Layout
//!
//! - [`AdminApi`]: the shared state and the routes ([`AdminApi::router`]);
//!   [`serve`] runs them on a listener, over TLS or not ([`tls`]).
//! - [`auth`]: the admin role, password logins, login and API tokens, the
//!   [`auth::Caller`] every other route requires, and the audit log's routes;
//!   [`cookie`]: the console's login cookie and its CSRF value.
//! - [`console`]: the web console at `/console/`, its files built in, and
//!   the security headers of every answer.
//! - [`accounts`], [`sessions`], [`announce`], [`status`], [`rooms`],
//!   [`groups`]: the
//!   resources.
//! - [`commands`]: the same operations as XEP-0050 ad-hoc commands (the
//!   XEP-0133 set), an account module of the replica.
//! - [`store`]: the API's own tables (roles, tokens, audit log).
//! - [`error`]: JSON errors with stable codes.
//! - `openapi.json`: the OpenAPI 3.1 document, served at
//!   `/api/v1/openapi.json`, written by hand and held to the routes by a test.

pub mod accounts;
pub mod announce;
pub mod auth;
pub mod commands;
pub mod console;
pub mod cookie;
pub mod error;
pub mod groups;
pub mod rooms;
pub mod sessions;
pub mod status;
pub mod store;
pub mod tls;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::FromRequest;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::routing::{delete, get, post, put};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use xmppd_protocol::jid::Jid;
use xmppd_session::service::Core;

use crate::error::ApiError;

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Items per page when a list request names no `limit`.
pub const DEFAULT_LIMIT: u32 = 50;
/// The largest `limit` a list request may ask for.
pub const MAX_LIMIT: u32 = 500;

/// What the API needs from the configuration.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Bare JIDs that hold the admin role by configuration.
    pub admins: Vec<String>,
    /// Lifetime of a password login's token.
    pub login_token_ttl: Duration,
}

/// The API's state. Cheap to clone.
#[derive(Clone)]
pub struct AdminApi {
    inner: Arc<Inner>,
}

struct Inner {
    /// The replica the API runs in: its store, registry, domain, and the
    /// router streams that kicks and announcements leave by.
    core: Arc<Core>,
    settings: Settings,
}

impl AdminApi {
    /// The API over `core`; the admin tables must exist ([`migrate`]).
    pub fn new(core: Arc<Core>, settings: Settings) -> AdminApi {
        AdminApi {
            inner: Arc::new(Inner { core, settings }),
        }
    }

    pub fn core(&self) -> &Core {
        &self.inner.core
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Every route of `/api/v1`, and the console at `/console/`.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/openapi.json", get(openapi))
            .route("/auth/login", post(auth::login))
            .route("/auth/console-login", post(auth::console_login))
            .route("/auth/logout", post(auth::logout))
            .route("/auth/me", get(auth::me))
            .route("/tokens", get(auth::list_tokens).post(auth::create_token))
            .route("/tokens/{id}", delete(auth::revoke_token))
            .route("/audit", get(auth::audit_log))
            .route("/accounts", get(accounts::list).post(accounts::create))
            .route(
                "/accounts/{jid}",
                get(accounts::show).delete(accounts::delete),
            )
            .route("/accounts/{jid}/password", put(accounts::set_password))
            .route("/accounts/{jid}/sessions", delete(sessions::kick_account))
            .route("/sessions", get(sessions::list))
            .route("/sessions/{jid}", delete(sessions::kick))
            .route("/announcements", post(announce::send))
            .route("/cluster", get(status::cluster))
            .route("/rooms", get(rooms::list))
            .route("/rooms/{jid}", get(rooms::show).delete(rooms::destroy))
            .route("/groups", get(groups::list).post(groups::create))
            .route(
                "/groups/{name}",
                get(groups::show)
                    .put(groups::describe)
                    .delete(groups::delete),
            )
            .route("/groups/{name}/members", get(groups::members))
            .route(
                "/groups/{name}/members/{jid}",
                put(groups::add_member).delete(groups::remove_member),
            )
            .fallback(not_found)
            .with_state(self.clone());
        Router::new()
            .nest("/api/v1", api)
            .route("/", get(console::to_console))
            .route("/console", get(console::to_console))
            .route(console::PATH, get(console::index))
            .route("/console/{file}", get(console::file))
            .fallback(not_found)
            .layer(axum::middleware::map_response(console::security_headers))
    }

    /// The bare JID of an account of this server, or why `jid` is not one.
    pub fn local_account(&self, jid: &str) -> Result<Jid, ApiError> {
        local_account(self.core(), jid)
    }
}

/// The bare JID of an account of `core`'s domain, or why `jid` is not one.
pub fn local_account(core: &Core, jid: &str) -> Result<Jid, ApiError> {
    let jid = Jid::parse(jid)
        .map_err(|error| ApiError::bad_request("malformed_jid", format!("{jid:?}: {error}")))?;
    if jid.node().is_none() || jid.resource().is_some() {
        return Err(ApiError::bad_request(
            "malformed_jid",
            format!("{jid} is not an account's bare JID (user@domain)"),
        ));
    }
    if jid.domain() != core.domain {
        return Err(ApiError::bad_request(
            "not_local",
            format!("{jid} is not on this server's domain {}", core.domain),
        ));
    }
    Ok(jid)
}

/// Creates or migrates the API's tables.
pub async fn migrate(store: &xmppd_storage::Store) -> Result<(), xmppd_storage::StoreError> {
    store.migrate(&store::SCHEMA).await
}

/// Serves `router` on `listener` (over TLS when `tls` is given) until
/// `stopped` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match tls {
        Some(config) => {
            axum::serve(tls::TlsListener::new(listener, config), router)
                .with_graceful_shutdown(stopped)
                .await
        }
        None => {
            axum::serve(listener, router)
                .with_graceful_shutdown(stopped)
                .await
        }
    }
}

async fn openapi() -> impl axum::response::IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("not_found", "no such route")
}

/// A JSON body; a malformed one is an [`ApiError`] (`bad_request`).
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, ApiError> {
        let axum::Json(value) = axum::Json::<T>::from_request(request, state).await?;
        Ok(Body(value))
    }
}

/// Query parameters; malformed ones are an [`ApiError`] (`bad_request`).
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(value) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Params(value))
    }
}

/// The `limit` of a list request, checked.
#[derive(Clone, Copy, Debug, Default, Deserialize)]
#[serde(transparent)]
pub struct Limit(Option<u32>);

impl Limit {
    pub fn get(self) -> Result<u32, ApiError> {
        match self.0 {
            None => Ok(DEFAULT_LIMIT),
            Some(limit @ 1..=MAX_LIMIT) => Ok(limit),
            Some(limit) => Err(ApiError::bad_request(
                "bad_limit",
                format!("limit {limit} is not between 1 and {MAX_LIMIT}"),
            )),
        }
    }
}

/// The query of a list paged by its items' keys: `?after=&limit=`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterQuery {
    /// The `next` of the previous page.
    #[serde(default)]
    pub after: String,
    #[serde(default)]
    pub limit: Limit,
}

/// A list's JSON: one page of items and where the next starts (`null`
/// after the last page).
#[derive(Debug, serde::Serialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl<T> Page<T> {
    /// From `limit + 1` rows read: the extra row, if any, says there is a
    /// next page, which starts after the last item kept.
    pub fn from_rows(mut rows: Vec<T>, limit: u32, cursor: impl Fn(&T) -> String) -> Page<T> {
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next = if more { rows.last().map(cursor) } else { None };
        Page { items: rows, next }
    }
}

/// Unix milliseconds as an RFC 3339 date-time in UTC.
pub fn timestamp(unix_ms: i64) -> String {
    xmppd_session::clock::format_utc(unix_ms)
}
