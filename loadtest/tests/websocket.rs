//! The load tool over XMPP over WebSocket (RFC 7395), against a minimal WebSocket XMPP
//! server in the test itself: provisioning, closed-loop chat and idle sessions with the
//! server's memory per session, checked through the JSON reports, while the peer checks
//! the framing the tool sends (the `xmpp` subprotocol, `<open/>` on every stream start
//! including the restart after SASL, one qualified element per text message, `<close/>`)
//! and pings each session at the WebSocket level.
//!
//! A server of the test's own, so that it runs everywhere the tests do: xmppd's own
//! WebSocket listener, and Prosody's (`loadtest/compare/run.sh` with `TRANSPORT=websocket`),
//! are the same runs against a real server.

use std::collections::HashMap;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use xmppd_protocol::Element;

const NS_FRAMING: &str = "urn:ietf:params:xml:ns:xmpp-framing";
const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";

/// What the peer saw, for the test to check after the runs.
#[derive(Default)]
struct Seen {
    /// `<open/>`s received: one per stream start, two per login.
    opens: AtomicU64,
    closes: AtomicU64,
    pongs: AtomicU64,
    /// Messages that were not one namespace-qualified element.
    malformed: Mutex<Vec<String>>,
}

/// Bound sessions by full JID, for routing chat messages.
type Routes = Arc<Mutex<HashMap<String, mpsc::UnboundedSender<String>>>>;

async fn serve(listener: TcpListener, seen: Arc<Seen>) {
    let routes = Routes::default();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(session(tcp, routes.clone(), seen.clone()));
    }
}

/// RFC 7395 §3.1: the client must ask for `xmpp`, and the server names it in its answer.
#[allow(
    clippy::result_large_err,
    reason = "the signature tungstenite's callback takes"
)]
fn select_xmpp(request: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    let asked = request
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|p| p.trim() == "xmpp"));
    if !asked {
        let mut refusal = ErrorResponse::new(Some("no xmpp subprotocol".into()));
        *refusal.status_mut() = 400u16.try_into().unwrap();
        return Err(refusal);
    }
    response
        .headers_mut()
        .insert("sec-websocket-protocol", HeaderValue::from_static("xmpp"));
    Ok(response)
}

async fn session(tcp: TcpStream, routes: Routes, seen: Arc<Seen>) {
    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(tcp, select_xmpp).await else {
        return;
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let mut user = String::new();
    let mut jid = String::new();
    let mut authenticated = false;
    loop {
        let text = tokio::select! {
            routed = rx.recv() => {
                let Some(routed) = routed else { return };
                if ws.send(Message::text(routed)).await.is_err() {
                    break;
                }
                continue;
            }
            incoming = ws.next() => match incoming {
                Some(Ok(Message::Text(text))) => text.to_string(),
                Some(Ok(Message::Pong(_))) => {
                    seen.pongs.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => continue,
            },
        };
        // Parsed without a default namespace: an unqualified stanza shows as one.
        let Ok(element) = Element::parse(text.as_bytes(), "") else {
            seen.malformed.lock().unwrap().push(text);
            break;
        };
        if element.namespace().is_empty() {
            seen.malformed.lock().unwrap().push(text.clone());
        }
        let mut replies = Vec::new();
        match element.name() {
            "open" if element.namespace() == NS_FRAMING => {
                seen.opens.fetch_add(1, Ordering::Relaxed);
                replies.push(format!(
                    "<open xmlns='{NS_FRAMING}' from='localhost' id='s' version='1.0'/>"
                ));
                let features = if authenticated {
                    "<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>".to_owned()
                } else {
                    format!(
                        "<mechanisms xmlns='{NS_SASL}'><mechanism>PLAIN</mechanism></mechanisms>\
                         <register xmlns='http://jabber.org/features/iq-register'/>"
                    )
                };
                replies.push(format!(
                    "<stream:features xmlns:stream='http://etherx.jabber.org/streams'>{features}</stream:features>"
                ));
            }
            "close" if element.namespace() == NS_FRAMING => {
                seen.closes.fetch_add(1, Ordering::Relaxed);
                let _ = ws
                    .send(Message::text(format!("<close xmlns='{NS_FRAMING}'/>")))
                    .await;
                break;
            }
            "auth" => {
                let plain = B64
                    .decode(element.text_content().trim())
                    .unwrap_or_default();
                let mut parts = plain.split(|b| *b == 0).skip(1);
                user = String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                authenticated = true;
                replies.push(format!("<success xmlns='{NS_SASL}'/>"));
            }
            "iq" => {
                let id = element.get_attr("id").unwrap_or_default();
                let bind = element.children().any(|c| c.name() == "bind");
                if bind {
                    jid = format!("{user}@localhost/loadtest");
                    routes.lock().unwrap().insert(jid.clone(), tx.clone());
                    replies.push(format!(
                        "<iq xmlns='jabber:client' type='result' id='{id}'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>{jid}</jid></bind></iq>"
                    ));
                    // A server's keepalive: the client must answer without being asked to.
                    let _ = ws.send(Message::Ping(b"keepalive".to_vec().into())).await;
                } else if element
                    .children()
                    .any(|c| matches!(c.name(), "blocklist" | "block" | "enable"))
                {
                    // No blocking (XEP-0191) nor carbons (XEP-0280) here, as on a server
                    // without those modules.
                    replies.push(format!(
                        "<iq xmlns='jabber:client' type='error' id='{id}'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>"
                    ));
                } else {
                    replies.push(format!(
                        "<iq xmlns='jabber:client' type='result' id='{id}'/>"
                    ));
                }
            }
            "message" => {
                let to = element.get_attr("to").unwrap_or_default().to_owned();
                let routed = text.replacen("<message", &format!("<message from='{jid}'"), 1);
                let peer = routes.lock().unwrap().get(&to).cloned();
                if let Some(peer) = peer {
                    let _ = peer.send(routed);
                }
            }
            _ => {}
        }
        for reply in replies {
            if ws.send(Message::text(reply)).await.is_err() {
                break;
            }
        }
    }
    if !jid.is_empty() {
        routes.lock().unwrap().remove(&jid);
    }
}

fn loadtest(target: &str, args: &[&str]) -> serde_json::Value {
    let report = tempfile::NamedTempFile::new().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_xmppd-loadtest"))
        .args(args)
        .args(["--target", target, "--mechanism", "PLAIN", "--quiet"])
        .arg("--json")
        .arg(report.path())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "loadtest {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&std::fs::read(report.path()).unwrap()).unwrap()
}

fn total(report: &serde_json::Value, counter: &str) -> u64 {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|phase| phase["counters"][counter].as_u64().unwrap())
        .sum()
}

fn errors(report: &serde_json::Value) -> Vec<String> {
    report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|phase| phase["errors"].as_object().unwrap().keys().cloned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_over_websocket_framing() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!(
        "ws://127.0.0.1:{}/xmpp-websocket",
        listener.local_addr().unwrap().port()
    );
    let seen = Arc::new(Seen::default());
    tokio::spawn(serve(listener, seen.clone()));
    let run = |args: &'static [&'static str]| {
        let target = target.clone();
        tokio::task::spawn_blocking(move || loadtest(&target, args))
    };

    let provisioned = run(&["provision", "--users", "10"]).await.unwrap();
    assert_eq!(total(&provisioned, "accounts_created"), 10);

    let chat = run(&["chat", "--users", "10", "--duration", "2s", "--drain", "3s"])
        .await
        .unwrap();
    let sent = total(&chat, "messages_sent");
    assert!(sent > 0, "no messages sent: {chat}");
    assert_eq!(total(&chat, "messages_delivered"), sent, "messages lost");
    assert_eq!(total(&chat, "messages_reordered"), 0);
    assert_eq!(total(&chat, "login_failures"), 0);
    assert_eq!(errors(&chat), Vec::<String>::new());

    // The memory per idle session, here of the test process that is the server.
    let pid = std::process::id().to_string();
    let idle = tokio::task::spawn_blocking({
        let target = target.clone();
        move || {
            loadtest(
                &target,
                &[
                    "idle",
                    "--users",
                    "10",
                    "--duration",
                    "1s",
                    "--server-pid",
                    &pid,
                ],
            )
        }
    })
    .await
    .unwrap();
    assert!(
        idle["server_memory_baseline_bytes"].as_u64().is_some(),
        "{idle}"
    );
    let hold = &idle["phases"][1];
    assert_eq!(
        (hold["name"].as_str(), hold["sessions_end"].as_u64()),
        (Some("hold"), Some(10))
    );
    assert!(
        hold["server"]["memory_end_bytes"].as_u64().unwrap() > 0,
        "{hold}"
    );

    // Registration streams open once; each of the 10 + 10 logins twice (before and after
    // SASL); every stream is closed politely.
    assert_eq!(seen.opens.load(Ordering::Relaxed), 10 + 2 * 20);
    assert_eq!(seen.closes.load(Ordering::Relaxed), 10 + 20);
    assert_eq!(seen.pongs.load(Ordering::Relaxed), 20, "pings unanswered");
    assert_eq!(*seen.malformed.lock().unwrap(), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_features_a_server_lacks_are_counted_as_errors_and_the_chat_goes_on() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = format!(
        "ws://127.0.0.1:{}/xmpp-websocket",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(serve(listener, Arc::new(Seen::default())));
    let chat = tokio::task::spawn_blocking(move || {
        loadtest(
            &target,
            &[
                "chat",
                "--users",
                "10",
                "--duration",
                "2s",
                "--drain",
                "3s",
                "--carbons",
                "--blocklist",
                "2",
            ],
        )
    })
    .await
    .unwrap();
    let sent = total(&chat, "messages_sent");
    assert!(sent > 0, "no messages sent: {chat}");
    assert_eq!(total(&chat, "messages_delivered"), sent, "messages lost");
    assert_eq!(total(&chat, "login_failures"), 0);
    // Each of the 10 logins asked for its blocklist, blocked, and enabled carbons: each
    // refusal is counted under its step, and the session kept.
    let ramp_up = &chat["phases"][0];
    assert_eq!(ramp_up["name"], "ramp-up");
    for kind in [
        "blocklist:service-unavailable",
        "block:service-unavailable",
        "carbons:service-unavailable",
    ] {
        assert_eq!(ramp_up["errors"][kind], 10, "{kind}: {ramp_up}");
    }
    assert_eq!(chat["params"]["carbons"], true);
    assert_eq!(chat["params"]["blocklist"], 2);
}
