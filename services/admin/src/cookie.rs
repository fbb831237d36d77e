//! Logins from a browser: the login token travels in a cookie the page's
//! scripts cannot read, and a request that changes something must also
//! carry the login's CSRF value in a header.
//!
//! A browser attaches the cookie to every request to the API, including
//! ones another site's page makes it send; `SameSite=Strict` already keeps
//! it off cross-site requests, and the CSRF header is the second lock: a
//! value derived from the token's secret, which the console gets from its
//! login (or from `GET /auth/me`, which no other site can read) and echoes
//! in `X-CSRF-Token` on every request that is not a GET. A bearer token is
//! never sent by a browser on its own, so requests with `Authorization`
//! need no CSRF value.

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The cookie holding the login token. `__Host-` makes browsers refuse it
/// unless it is `Secure`, for the whole host (`Path=/`) and set by the host
/// itself, so no sibling domain can plant one.
pub const COOKIE_NAME: &str = "__Host-xmppd-admin";
/// The header a cookie-authenticated request that changes something carries.
pub const CSRF_HEADER: &str = "x-csrf-token";
/// Keeps a CSRF value apart from any other hash of the token's secret (the
/// store holds the secret's plain SHA-256).
const CSRF_CONTEXT: &[u8] = b"xmppd admin csrf\0";

/// The login token in the request's cookie, if any.
pub fn token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, token)| token)
}

/// The CSRF value of the login whose token is `token` (`<id>.<secret>`).
pub fn csrf_value(token: &str) -> String {
    let secret = token.split_once('.').map_or(token, |(_, secret)| secret);
    let mut hash = Sha256::new();
    hash.update(CSRF_CONTEXT);
    hash.update(secret.as_bytes());
    crate::auth::hex(&hash.finalize())
}

/// Refuses a cookie-authenticated request with `method` unless `headers`
/// carry the CSRF value of `token`. GET and HEAD change nothing and pass.
pub fn check_csrf(method: &Method, headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    if method.is_safe() {
        return Ok(());
    }
    let Some(sent) = headers.get(CSRF_HEADER) else {
        return Err(csrf_refused(
            "a request authenticated by the console's cookie must send X-CSRF-Token",
        ));
    };
    let matches: bool = sent.as_bytes().ct_eq(csrf_value(token).as_bytes()).into();
    if !matches {
        return Err(csrf_refused("X-CSRF-Token is not this login's CSRF value"));
    }
    Ok(())
}

fn csrf_refused(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "bad_csrf", message)
}

/// The `Set-Cookie` header that hands the browser `token` for
/// `max_age_secs`.
pub fn set(token: &str, max_age_secs: u64) -> [(HeaderName, HeaderValue); 1] {
    let cookie = format!(
        "{COOKIE_NAME}={token}; Max-Age={max_age_secs}; Path=/; Secure; HttpOnly; SameSite=Strict"
    );
    // A token is hex, a dot and URL-safe base64: always a valid header.
    let value = HeaderValue::try_from(cookie).expect("a cookie of token characters");
    [(SET_COOKIE, value)]
}

/// The `Set-Cookie` header that makes the browser forget the login token.
pub fn clear() -> [(HeaderName, HeaderValue); 1] {
    set("", 0)
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;
    use std::sync::Arc;
    use std::time::Duration;

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, Response, header};
    use serde_json::{Value, json};
    use tower::ServiceExt;
    use xmppd_registry::{MemoryRegistry, SharedRegistry};
    use xmppd_session::SessionService;
    use xmppd_session::metrics::SessionMetrics;
    use xmppd_storage::Store;

    use super::*;
    use crate::{AdminApi, Settings};

    const ROOT: &str = "root@example.org";
    const PASSWORD: &str = "root password";

    /// The API of a replica with an embedded store, whose `root` account
    /// holds the admin role; login tokens live `login_ttl`.
    async fn api(login_ttl: Duration) -> (tempfile::TempDir, Router) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("xmppd.db").display());
        let store = Store::connect(&url, NonZeroU32::new(2).unwrap())
            .await
            .unwrap();
        crate::migrate(&store).await.unwrap();
        let modules = xmppd_session::modules::all(&Default::default(), Vec::new()).unwrap();
        modules.migrate(&store).await.unwrap();
        let registry: SharedRegistry = Arc::new(MemoryRegistry::default());
        let settings = xmppd_session::service::Settings {
            domain: "example.org".into(),
            node_id: "s1".into(),
            registration: false,
            scram_iterations: 4096,
            max_offline_messages: 10,
            max_resources_per_account: 0,
            max_directed_presences: 0,
            max_roster_items: 0,
            max_pending_subscriptions: 0,
            muc: Default::default(),
        };
        let replica = SessionService::new(
            settings,
            store,
            registry,
            SessionMetrics::default(),
            modules,
        );
        let core = replica.core().clone();
        let credentials = crate::accounts::credentials(&core, PASSWORD.into())
            .await
            .unwrap();
        core.store.create_account(ROOT, &credentials).await.unwrap();
        let settings = Settings {
            admins: vec![ROOT.into()],
            login_token_ttl: login_ttl,
        };
        (dir, AdminApi::new(core, settings).router())
    }

    async fn send(
        router: &Router,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (Response<Body>, Value) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = match body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string())),
            None => request.body(Body::empty()),
        }
        .unwrap();
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (Response::from_parts(parts, Body::empty()), json)
    }

    /// A console login: the cookie (`name=value`) and the CSRF value.
    struct Login {
        cookie: String,
        csrf: String,
    }

    async fn console_login(router: &Router) -> Login {
        let body = json!({"jid": ROOT, "password": PASSWORD});
        let (response, answer) = send(
            router,
            "POST",
            "/api/v1/auth/console-login",
            &[],
            Some(body),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED, "{answer}");
        let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap();
        let cookie = set_cookie.split(';').next().unwrap().to_string();
        Login {
            cookie,
            csrf: answer["csrf"].as_str().unwrap().to_string(),
        }
    }

    fn code(answer: &Value) -> &str {
        answer["error"]["code"].as_str().unwrap_or_default()
    }

    async fn create_account(router: &Router, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let body = json!({"jid": "alice@example.org", "password": "alice password"});
        let (response, answer) =
            send(router, "POST", "/api/v1/accounts", headers, Some(body)).await;
        (response.status(), answer)
    }

    #[tokio::test]
    async fn a_console_login_sets_a_strict_secure_http_only_cookie_and_never_shows_the_token() {
        let (_dir, router) = api(Duration::from_secs(3600)).await;
        let body = json!({"jid": ROOT, "password": PASSWORD});
        let (response, answer) = send(
            &router,
            "POST",
            "/api/v1/auth/console-login",
            &[],
            Some(body),
        )
        .await;
        assert_eq!(response.status(), StatusCode::CREATED);
        let set_cookie = response.headers()[SET_COOKIE].to_str().unwrap();
        let (pair, attributes) = set_cookie.split_once("; ").unwrap();
        assert_eq!(
            attributes,
            "Max-Age=3600; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
        let token = pair.strip_prefix("__Host-xmppd-admin=").unwrap();
        assert_eq!(answer["csrf"], csrf_value(token));
        assert_eq!(answer["jid"], ROOT);
        assert!(answer.get("token").is_none(), "{answer}");
        assert!(!answer.to_string().contains(token), "{answer}");
    }

    #[tokio::test]
    async fn the_cookie_authenticates_reads_without_a_csrf_header_and_tells_its_csrf_value() {
        let (_dir, router) = api(Duration::from_secs(3600)).await;
        let login = console_login(&router).await;
        let headers = [("cookie", login.cookie.as_str())];
        let (response, me) = send(&router, "GET", "/api/v1/auth/me", &headers, None).await;
        assert_eq!(response.status(), StatusCode::OK, "{me}");
        assert_eq!(me["jid"], ROOT);
        assert_eq!(me["csrf"], login.csrf);
    }

    #[tokio::test]
    async fn a_change_with_the_cookie_but_without_the_csrf_header_is_refused() {
        let (_dir, router) = api(Duration::from_secs(3600)).await;
        let login = console_login(&router).await;
        let (status, answer) = create_account(&router, &[("cookie", &login.cookie)]).await;
        assert_eq!((status, code(&answer)), (StatusCode::FORBIDDEN, "bad_csrf"));
        let (status, answer) = create_account(
            &router,
            &[("cookie", &login.cookie), (CSRF_HEADER, &login.csrf)],
        )
        .await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "refused was not made: {answer}"
        );
    }

    #[tokio::test]
    async fn a_change_with_another_logins_csrf_value_is_refused() {
        let (_dir, router) = api(Duration::from_secs(3600)).await;
        let mine = console_login(&router).await;
        let other = console_login(&router).await;
        let headers = [("cookie", mine.cookie.as_str()), (CSRF_HEADER, &other.csrf)];
        let (status, answer) = create_account(&router, &headers).await;
        assert_eq!((status, code(&answer)), (StatusCode::FORBIDDEN, "bad_csrf"));
        let headers = [("cookie", mine.cookie.as_str()), (CSRF_HEADER, "")];
        let (status, answer) = create_account(&router, &headers).await;
        assert_eq!((status, code(&answer)), (StatusCode::FORBIDDEN, "bad_csrf"));
    }

    #[tokio::test]
    async fn a_bearer_token_needs_no_csrf_header_even_beside_a_cookie() {
        let (_dir, router) = api(Duration::from_secs(3600)).await;
        let login = console_login(&router).await;
        let body = json!({"jid": ROOT, "password": PASSWORD});
        let (_, answer) = send(&router, "POST", "/api/v1/auth/login", &[], Some(body)).await;
        let bearer = format!("Bearer {}", answer["token"].as_str().unwrap());
        let headers = [
            ("authorization", bearer.as_str()),
            ("cookie", &login.cookie),
        ];
        let (status, answer) = create_account(&router, &headers).await;
        assert_eq!(status, StatusCode::CREATED, "{answer}");
    }

    #[tokio::test]
    async fn an_expired_cookie_is_refused_as_expired() {
        let (_dir, router) = api(Duration::from_millis(1)).await;
        let login = console_login(&router).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let headers = [
            ("cookie", login.cookie.as_str()),
            (CSRF_HEADER, &login.csrf),
        ];
        let (response, answer) = send(&router, "GET", "/api/v1/auth/me", &headers, None).await;
        assert_eq!(
            (response.status(), code(&answer)),
            (StatusCode::UNAUTHORIZED, "token_expired")
        );
        let (status, answer) = create_account(&router, &headers).await;
        assert_eq!(
            (status, code(&answer)),
            (StatusCode::UNAUTHORIZED, "token_expired")
        );
    }

    #[tokio::test]
    async fn logout_needs_the_csrf_value_then_revokes_the_token_and_clears_the_cookie() {
        let (_dir, router) = api(Duration::from_secs(3600)).await;
        let login = console_login(&router).await;
        let cookie = [("cookie", login.cookie.as_str())];
        let (response, answer) = send(&router, "POST", "/api/v1/auth/logout", &cookie, None).await;
        assert_eq!(
            (response.status(), code(&answer)),
            (StatusCode::FORBIDDEN, "bad_csrf")
        );
        let (response, _) = send(&router, "GET", "/api/v1/auth/me", &cookie, None).await;
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "a refused logout logged out"
        );

        let with_csrf = [
            ("cookie", login.cookie.as_str()),
            (CSRF_HEADER, &login.csrf),
        ];
        let (response, _) = send(&router, "POST", "/api/v1/auth/logout", &with_csrf, None).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            response.headers()[SET_COOKIE],
            "__Host-xmppd-admin=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict"
        );
        let (response, answer) = send(&router, "GET", "/api/v1/auth/me", &cookie, None).await;
        assert_eq!(
            (response.status(), code(&answer)),
            (StatusCode::UNAUTHORIZED, "token_revoked")
        );
    }

    #[tokio::test]
    async fn api_answers_are_never_stored_and_carry_the_security_headers() {
        let (_dir, router) = api(Duration::from_secs(3600)).await;
        let (response, answer) = send(&router, "GET", "/api/v1/auth/me", &[], None).await;
        assert_eq!(code(&answer), "missing_token");
        let headers = response.headers();
        assert_eq!(headers[header::CACHE_CONTROL], "no-store");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY");
        let policy = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.contains("script-src 'self';"), "{policy}");
        assert!(policy.contains("frame-ancestors 'none'"), "{policy}");
        assert!(!policy.contains("unsafe-inline"), "{policy}");
    }

    #[test]
    fn the_token_is_found_among_other_cookies() {
        let mut headers = HeaderMap::new();
        headers.append(COOKIE, HeaderValue::from_static("theme=dark"));
        headers.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-xmppd-admin=ab.cd; b=2"),
        );
        assert_eq!(token(&headers), Some("ab.cd"));
        assert_eq!(token(&HeaderMap::new()), None);
    }
}
