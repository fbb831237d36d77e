//! The web console: a page and its scripts over the API, served at
//! `/console/` by the API's own listener, from files built into the binary
//! (`services/admin/console/`: HTML, CSS and one small JavaScript module per
//! page, no build step). Every answer of the listener, API or console,
//! carries the security headers of [`security_headers`].

use axum::extract::Path;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};

use crate::error::ApiError;

/// Where the console is served.
pub const PATH: &str = "/console/";

/// One file of the console.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_bytes!(concat!("../console/", $name)),
        }
    };
}

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";

const ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("app.js", JAVASCRIPT),
    asset!("api.js", JAVASCRIPT),
    asset!("ui.js", JAVASCRIPT),
    asset!("dashboard.js", JAVASCRIPT),
    asset!("users.js", JAVASCRIPT),
    asset!("sessions.js", JAVASCRIPT),
    asset!("announce.js", JAVASCRIPT),
    asset!("audit.js", JAVASCRIPT),
    asset!("groups.js", JAVASCRIPT),
    asset!("rooms.js", JAVASCRIPT),
];

/// `GET /console/`: the page.
pub async fn index() -> Response {
    serve("index.html")
}

/// `GET /console/{file}`: the page's styles and scripts.
pub async fn file(Path(name): Path<String>) -> Response {
    serve(&name)
}

/// `GET /` and `GET /console`: to the console.
pub async fn to_console() -> Redirect {
    Redirect::to(PATH)
}

fn serve(name: &str) -> Response {
    match ASSETS.iter().find(|asset| asset.name == name) {
        Some(asset) => (
            [
                (header::CONTENT_TYPE, asset.content_type),
                // Small files: asked for again on every load, so that a new
                // server version never runs with an old script.
                (header::CACHE_CONTROL, "no-cache"),
            ],
            asset.body,
        )
            .into_response(),
        None => ApiError::not_found("not_found", format!("no console file {name}")).into_response(),
    }
}

/// Scripts, styles and API calls from this origin only, no inline script,
/// and never inside another site's frame.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
    style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; \
    base-uri 'none'; frame-ancestors 'none'";

/// Adds the security headers to every answer; answers that set no
/// `Cache-Control` (every API answer) get `no-store`, so that no cache keeps
/// a list of accounts or a token.
pub async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &'static str); 4] = [
        (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("console")
    }

    #[test]
    fn every_file_of_the_console_folder_is_served_with_its_type() {
        let mut files: Vec<String> = std::fs::read_dir(console_dir())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let mut served: Vec<String> = ASSETS.iter().map(|a| a.name.to_string()).collect();
        served.sort();
        assert_eq!(files, served);
        for asset in ASSETS {
            let response = serve(asset.name);
            assert_eq!(response.status(), 200, "{}", asset.name);
            let extension = asset.name.rsplit('.').next().unwrap();
            let expected = match extension {
                "html" => "text/html; charset=utf-8",
                "css" => "text/css; charset=utf-8",
                "js" => JAVASCRIPT,
                other => panic!("no type for .{other}"),
            };
            assert_eq!(response.headers()[header::CONTENT_TYPE], expected);
        }
    }

    #[test]
    fn an_unknown_file_is_not_found() {
        for name in ["nope.js", "../Cargo.toml", ""] {
            assert_eq!(serve(name).status(), 404, "{name:?}");
        }
    }

    /// A script or style the page loads, or a module a script imports, that
    /// is not served would break the console only in a browser.
    #[test]
    fn every_file_the_page_and_scripts_load_is_served() {
        for asset in ASSETS {
            let text = std::str::from_utf8(asset.body).unwrap();
            let references = text
                .split(['"', '\''])
                .filter(|part| {
                    (part.ends_with(".js") || part.ends_with(".css")) && !part.contains(' ')
                })
                .map(|part| part.trim_start_matches("./"));
            for reference in references {
                assert!(
                    ASSETS.iter().any(|served| served.name == reference),
                    "{} loads {reference}, which is not served",
                    asset.name
                );
            }
        }
    }

    #[test]
    fn the_page_has_no_inline_script_or_style() {
        let index = ASSETS.iter().find(|a| a.name == "index.html").unwrap();
        let page = std::str::from_utf8(index.body).unwrap();
        assert!(page.contains("<script type=\"module\" src=\"app.js\"></script>"));
        assert_eq!(page.matches("<script").count(), 1, "{page}");
        assert!(
            !page.contains("<style") && !page.contains("style="),
            "{page}"
        );
        let handlers = page
            .split_whitespace()
            .any(|word| word.starts_with("on") && word.contains('='));
        assert!(!handlers, "inline event handler in {page}");
    }
}
