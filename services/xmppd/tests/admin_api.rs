//! The HTTP admin API of the all-in-one server: every route, with good and
//! bad input, over HTTPS, against real XMPP clients.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::admin::{AdminApi, segment, set_admin};
use support::cluster::{Nodes, with_cluster};
use support::muc;
use support::{DOMAIN, RawClient, Server};

/// A server whose `root` account holds the admin role by configuration.
async fn start(dir: &std::path::Path) -> (Server, AdminApi) {
    let server = Server::all_in_one(dir, "[admin]\nadmins = [\"root@localhost\"]\n");
    server.ready().await;
    server.add_user("root", "rootpass");
    let api = AdminApi::of(&server);
    api.wait_until_up().await;
    let root = api.login("root", "rootpass").await;
    (server, root)
}

fn jids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["jid"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn every_documented_route_exists_and_wants_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path()).await;
    let anonymous = AdminApi::of(&server);
    let document = anonymous.get("/api/v1/openapi.json").await;
    assert_eq!(document.status, 200);
    assert_eq!(document.body["openapi"], "3.1.0");
    let paths = document.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "{paths:?}");
    for (path, operations) in paths {
        let concrete = path
            .replace("{jid}", "someone%40localhost")
            .replace("{id}", "0123")
            .replace("{name}", "Staff");
        for method in operations.as_object().unwrap().keys() {
            let method = method.to_uppercase();
            let answer = anonymous
                .request(&method, &format!("/api/v1{concrete}"), Some(json!({})))
                .await;
            match path.as_str() {
                "/openapi.json" => assert_eq!(answer.status, 200),
                // The login routes want a body, not a token.
                "/auth/login" | "/auth/console-login" => answer.assert_error(422, "bad_request"),
                _ => answer.assert_error(401, "missing_token"),
            }
        }
    }
    anonymous
        .get("/api/v1/nothing-here")
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn logins_tokens_roles_and_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let (server, root) = start(dir.path()).await;
    let anonymous = AdminApi::of(&server);
    server.add_user("alice", "alicepass");

    // Who may log in.
    let login = |jid: &str, password: &str| json!({"jid": jid, "password": password});
    let path = "/api/v1/auth/login";
    let answer = anonymous
        .post(path, login("alice@localhost", "alicepass"))
        .await;
    answer.assert_error(403, "not_admin");
    let answer = anonymous
        .post(path, login("alice@localhost", "wrong"))
        .await;
    answer.assert_error(401, "bad_credentials");
    let answer = anonymous.post(path, login("nobody@localhost", "x")).await;
    answer.assert_error(401, "bad_credentials");
    let answer = anonymous.post(path, login("not a jid@", "x")).await;
    answer.assert_error(400, "malformed_jid");
    let answer = anonymous
        .post(path, login("alice@elsewhere.example", "x"))
        .await;
    answer.assert_error(400, "not_local");
    let answer = anonymous
        .post(path, json!({"jid": "alice@localhost"}))
        .await;
    answer.assert_error(422, "bad_request");

    // Tokens that do not pass.
    let accounts = "/api/v1/accounts";
    anonymous
        .get(accounts)
        .await
        .assert_error(401, "missing_token");
    anonymous
        .with_token("garbage")
        .get(accounts)
        .await
        .assert_error(401, "invalid_token");
    let forged = format!(
        "{}.forged",
        root.token.as_ref().unwrap().split_once('.').unwrap().0
    );
    anonymous
        .with_token(&forged)
        .get(accounts)
        .await
        .assert_error(401, "invalid_token");

    // A granted administrator, and an API token of hers.
    set_admin(&server, "alice", true);
    let alice = anonymous.login("alice", "alicepass").await;
    assert_eq!(alice.get(accounts).await.status, 200);
    let made = alice
        .post("/api/v1/tokens", json!({"name": "backup job"}))
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(made.body["kind"], "api");
    assert_eq!(made.body["expires_at"], Value::Null);
    let automation = anonymous.with_token(made.body["token"].as_str().unwrap());
    assert_eq!(automation.get(accounts).await.status, 200);
    let listed = root.get("/api/v1/tokens").await;
    assert_eq!(listed.status, 200);
    assert!(
        listed.body["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|token| token["id"] == made.body["id"] && token.get("token").is_none()),
        "{:?}",
        listed.body
    );
    for bad in [json!({"name": ""}), json!({"name": "x", "ttl_secs": 0})] {
        let answer = alice.post("/api/v1/tokens", bad).await;
        assert_eq!(answer.status, 400, "{:?}", answer.body);
    }

    // Revoked and expired tokens.
    let id = made.body["id"].as_str().unwrap();
    let revoked = root.delete(&format!("/api/v1/tokens/{id}")).await;
    assert_eq!(revoked.status, 204);
    automation
        .get(accounts)
        .await
        .assert_error(401, "token_revoked");
    root.delete(&format!("/api/v1/tokens/{id}"))
        .await
        .assert_error(404, "unknown_token");
    let short = alice
        .post("/api/v1/tokens", json!({"name": "short", "ttl_secs": 1}))
        .await;
    let short = anonymous.with_token(short.body["token"].as_str().unwrap());
    assert_eq!(short.get(accounts).await.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    short.get(accounts).await.assert_error(401, "token_expired");

    // A token whose holder lost the role.
    set_admin(&server, "alice", false);
    alice.get(accounts).await.assert_error(403, "not_admin");

    // Logging out revokes the login token.
    let root_again = anonymous.login("root", "rootpass").await;
    assert_eq!(
        root_again
            .post("/api/v1/auth/logout", json!({}))
            .await
            .status,
        204
    );
    root_again
        .get(accounts)
        .await
        .assert_error(401, "token_revoked");

    // Every change is in the audit log, newest first, a page at a time.
    let audit = root.get("/api/v1/audit?limit=100").await;
    assert_eq!(audit.status, 200);
    let entries = audit.body["items"].as_array().unwrap();
    let actions: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["actor"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    for expected in [
        ("cli", "role.grant"),
        ("cli", "role.revoke"),
        ("alice@localhost", "auth.login"),
        ("alice@localhost", "token.create"),
        ("root@localhost", "token.revoke"),
        ("root@localhost", "auth.logout"),
    ] {
        assert!(
            actions.contains(&expected),
            "{expected:?} not in {actions:?}"
        );
    }
    assert_eq!(actions[0], ("root@localhost", "auth.logout"));
    let first = root.get("/api/v1/audit?limit=1").await;
    let next = first.body["next"].as_str().unwrap();
    let second = root
        .get(&format!("/api/v1/audit?limit=1&before={next}"))
        .await;
    assert_eq!(second.body["items"][0]["id"], entries[1]["id"]);
    root.get("/api/v1/audit?before=-1")
        .await
        .assert_error(400, "bad_cursor");
}

#[tokio::test]
async fn accounts_are_created_listed_searched_changed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, root) = start(dir.path()).await;
    let accounts = "/api/v1/accounts";
    for user in ["carol", "dave", "erin", "frank"] {
        let made = root
            .post(
                accounts,
                json!({"jid": format!("{user}@localhost"), "password": "pw"}),
            )
            .await;
        assert_eq!(made.status, 201, "{:?}", made.body);
    }
    let create = |jid: &str, password: &str| json!({"jid": jid, "password": password});
    root.post(accounts, create("carol@localhost", "pw"))
        .await
        .assert_error(409, "account_exists");
    root.post(accounts, create("carol@localhost/phone", "pw"))
        .await
        .assert_error(400, "malformed_jid");
    root.post(accounts, create("@@", "pw"))
        .await
        .assert_error(400, "malformed_jid");
    root.post(accounts, create("carol@elsewhere.example", "pw"))
        .await
        .assert_error(400, "not_local");
    root.post(accounts, create("gina@localhost", ""))
        .await
        .assert_error(400, "bad_password");
    root.post(accounts, json!({"jid": "gina@localhost"}))
        .await
        .assert_error(422, "bad_request");

    // Paging: two at a time, to the end and past it.
    let first = root.get("/api/v1/accounts?limit=2").await;
    assert_eq!(jids(&first.body), ["carol@localhost", "dave@localhost"]);
    let next = first.body["next"].as_str().unwrap();
    let second = root
        .get(&format!("/api/v1/accounts?limit=2&after={}", segment(next)))
        .await;
    assert_eq!(jids(&second.body), ["erin@localhost", "frank@localhost"]);
    let next = second.body["next"].as_str().unwrap();
    let third = root
        .get(&format!("/api/v1/accounts?limit=2&after={}", segment(next)))
        .await;
    assert_eq!(jids(&third.body), ["root@localhost"]);
    assert_eq!(third.body["next"], Value::Null);
    let past = root.get("/api/v1/accounts?after=zzz%40localhost").await;
    assert_eq!(past.status, 200);
    assert!(jids(&past.body).is_empty());
    assert_eq!(past.body["next"], Value::Null);
    for bad in ["limit=0", "limit=501"] {
        root.get(&format!("/api/v1/accounts?{bad}"))
            .await
            .assert_error(400, "bad_limit");
    }
    root.get("/api/v1/accounts?limit=ten")
        .await
        .assert_error(400, "bad_request");
    let found = root.get("/api/v1/accounts?search=RI").await;
    assert_eq!(jids(&found.body), ["erin@localhost"]);

    // A new password is the one that logs in.
    let password = |jid: &str| format!("/api/v1/accounts/{}/password", segment(jid));
    let changed = root
        .put(&password("dave@localhost"), json!({"password": "newpass"}))
        .await;
    assert_eq!(changed.status, 204, "{:?}", changed.body);
    RawClient::login(server.c2s, "dave", "newpass", "phone").await;
    root.put(&password("nobody@localhost"), json!({"password": "x"}))
        .await
        .assert_error(404, "unknown_account");
    root.put(&password("dave@localhost"), json!({"password": ""}))
        .await
        .assert_error(400, "bad_password");

    // Showing and deleting.
    let account = |jid: &str| format!("/api/v1/accounts/{}", segment(jid));
    let shown = root.get(&account("carol@localhost")).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.body["sessions"], json!([]));
    root.get(&account("nobody@localhost"))
        .await
        .assert_error(404, "unknown_account");
    root.get(&account("carol@localhost/x"))
        .await
        .assert_error(400, "malformed_jid");
    let deleted = root.delete(&account("carol@localhost")).await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    root.delete(&account("carol@localhost"))
        .await
        .assert_error(404, "unknown_account");
    let after = root.get(accounts).await;
    assert!(!jids(&after.body).contains(&"carol@localhost".to_string()));
}

fn names(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn shared_groups_are_created_listed_described_filled_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (server, root) = start(dir.path()).await;
    for user in ["alice", "bob", "carol"] {
        server.add_user(user, "pw");
    }
    let groups = "/api/v1/groups";
    let made = root
        .post(groups, json!({"name": "Staff", "description": "everyone"}))
        .await;
    assert_eq!(made.status, 201, "{:?}", made.body);
    assert_eq!(
        made.body,
        json!({"name": "Staff", "description": "everyone", "members": 0})
    );
    for name in ["Sales team", "Ünïcode ✓", "x".repeat(200).as_str()] {
        let made = root.post(groups, json!({"name": name})).await;
        assert_eq!(made.status, 201, "{:?}", made.body);
        assert_eq!(made.body["description"], "");
    }
    root.post(groups, json!({"name": "Staff"}))
        .await
        .assert_error(409, "group_exists");
    for bad in ["", "tab\there", "x".repeat(201).as_str()] {
        root.post(groups, json!({"name": bad}))
            .await
            .assert_error(400, "bad_name");
    }
    root.post(groups, json!({"description": "no name"}))
        .await
        .assert_error(422, "bad_request");
    root.post(groups, json!({"name": "Extra", "members": []}))
        .await
        .assert_error(422, "bad_request");

    // Listed by name (byte order), two at a time, to the end and past it.
    let first = root.get("/api/v1/groups?limit=2").await;
    assert_eq!(names(&first.body), ["Sales team", "Staff"]);
    let next = first.body["next"].as_str().unwrap();
    let second = root
        .get(&format!("/api/v1/groups?limit=2&after={}", segment(next)))
        .await;
    assert_eq!(names(&second.body), ["x".repeat(200), "Ünïcode ✓".into()]);
    assert_eq!(second.body["next"], Value::Null);
    let past = root.get("/api/v1/groups?after=%C3%BF").await;
    assert_eq!(past.status, 200);
    assert!(names(&past.body).is_empty());
    assert_eq!(past.body["next"], Value::Null);
    for bad in ["limit=0", "limit=501"] {
        root.get(&format!("{groups}?{bad}"))
            .await
            .assert_error(400, "bad_limit");
    }

    // Shown and described.
    let group = |name: &str| format!("/api/v1/groups/{}", segment(name));
    let shown = root.get(&group("Sales team")).await;
    assert_eq!(
        shown.body,
        json!({"name": "Sales team", "description": "", "members": 0})
    );
    root.get(&group("Nobody"))
        .await
        .assert_error(404, "unknown_group");
    let described = root
        .put(&group("Sales team"), json!({"description": "they sell"}))
        .await;
    assert_eq!(described.status, 200, "{:?}", described.body);
    assert_eq!(described.body["description"], "they sell");
    root.put(&group("Nobody"), json!({"description": "x"}))
        .await
        .assert_error(404, "unknown_group");
    root.put(&group("Staff"), json!({}))
        .await
        .assert_error(422, "bad_request");

    // Members: added (twice is once), listed, removed.
    let member = |name: &str, jid: &str| format!("{}/members/{}", group(name), segment(jid));
    for user in ["carol", "alice", "bob"] {
        let added = root
            .put(&member("Staff", &format!("{user}@localhost")), json!({}))
            .await;
        assert_eq!(added.status, 204, "{:?}", added.body);
    }
    let again = root
        .put(&member("Staff", "alice@localhost"), json!({}))
        .await;
    assert_eq!(again.status, 204);
    assert_eq!(root.get(&group("Staff")).await.body["members"], 3);
    root.put(&member("Staff", "nobody@localhost"), json!({}))
        .await
        .assert_error(404, "unknown_account");
    root.put(&member("Nobody", "alice@localhost"), json!({}))
        .await
        .assert_error(404, "unknown_group");
    root.put(&member("Staff", "alice@localhost/phone"), json!({}))
        .await
        .assert_error(400, "malformed_jid");
    root.put(&member("Staff", "alice@elsewhere.example"), json!({}))
        .await
        .assert_error(400, "not_local");
    let members = |query: &str| format!("{}/members?{query}", group("Staff"));
    let first = root.get(&members("limit=2")).await;
    assert_eq!(jids(&first.body), ["alice@localhost", "bob@localhost"]);
    let next = first.body["next"].as_str().unwrap();
    let second = root
        .get(&members(&format!("limit=2&after={}", segment(next))))
        .await;
    assert_eq!(jids(&second.body), ["carol@localhost"]);
    assert_eq!(second.body["next"], Value::Null);
    let past = root.get(&members("after=zzz%40localhost")).await;
    assert!(jids(&past.body).is_empty());
    assert_eq!(past.body["next"], Value::Null);
    root.get(&members("limit=501"))
        .await
        .assert_error(400, "bad_limit");
    root.get(&format!("{}/members", group("Nobody")))
        .await
        .assert_error(404, "unknown_group");
    let removed = root.delete(&member("Staff", "carol@localhost")).await;
    assert_eq!(removed.status, 204, "{:?}", removed.body);
    root.delete(&member("Staff", "carol@localhost"))
        .await
        .assert_error(404, "unknown_member");
    root.delete(&member("Nobody", "carol@localhost"))
        .await
        .assert_error(404, "unknown_group");

    // A deleted account leaves its groups.
    let deleted = root.delete("/api/v1/accounts/bob%40localhost").await;
    assert_eq!(deleted.status, 200, "{:?}", deleted.body);
    let left = root.get(&members("")).await;
    assert_eq!(jids(&left.body), ["alice@localhost"]);

    // Deleted groups.
    assert_eq!(root.delete(&group("Staff")).await.status, 204);
    root.delete(&group("Staff"))
        .await
        .assert_error(404, "unknown_group");
    root.get(&group("Staff"))
        .await
        .assert_error(404, "unknown_group");

    // Administrators only.
    set_admin(&server, "carol", false);
    let anonymous = AdminApi::of(&server);
    let answer = anonymous
        .post(
            "/api/v1/auth/login",
            json!({"jid": "carol@localhost", "password": "pw"}),
        )
        .await;
    answer.assert_error(403, "not_admin");
    set_admin(&server, "carol", true);
    let carol = anonymous.login("carol", "pw").await;
    set_admin(&server, "carol", false);
    carol.get(groups).await.assert_error(403, "not_admin");
    carol
        .post(groups, json!({"name": "Mine"}))
        .await
        .assert_error(403, "not_admin");
    carol
        .put(&member("Sales team", "carol@localhost"), json!({}))
        .await
        .assert_error(403, "not_admin");

    // Every change is in the audit log.
    let audit = root.get("/api/v1/audit?limit=100").await;
    let entries: Vec<(String, String)> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let count = |action: &str, target: &str| {
        entries
            .iter()
            .filter(|(a, t)| a == action && t == target)
            .count()
    };
    assert_eq!(count("group.create", "Staff"), 1);
    assert_eq!(count("group.update", "Sales team"), 1);
    // Adding alice again recorded nothing.
    assert_eq!(count("group.add_member", "Staff"), 3, "{entries:?}");
    assert_eq!(count("group.remove_member", "Staff"), 1);
    assert_eq!(count("group.delete", "Staff"), 1);
}

#[tokio::test]
async fn sessions_are_listed_ended_and_announced_to() {
    let dir = tempfile::tempdir().unwrap();
    let (server, root) = start(dir.path()).await;
    for user in ["bob", "carol", "dave"] {
        server.add_user(user, "pw");
    }
    let mut bob = RawClient::login(server.c2s, "bob", "pw", "laptop").await;
    bob.available().await;
    let mut bob_phone = RawClient::login(server.c2s, "bob", "pw", "phone").await;
    bob_phone.available().await;
    let mut dave = RawClient::login(server.c2s, "dave", "pw", "desk").await;
    dave.available().await;

    // Listed with where they come from, a page at a time.
    let all = root.get("/api/v1/sessions").await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    let mut listed = jids(&all.body);
    listed.sort();
    assert_eq!(
        listed,
        [
            "bob@localhost/laptop",
            "bob@localhost/phone",
            "dave@localhost/desk"
        ]
    );
    let laptop = all.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["jid"] == "bob@localhost/laptop")
        .unwrap()
        .clone();
    assert_eq!(laptop["account"], "bob@localhost");
    assert_eq!(laptop["transport"], "tcp");
    assert_eq!(laptop["address"], "127.0.0.1");
    assert_eq!(laptop["available"], true);
    assert!(!laptop["node"].as_str().unwrap().is_empty());
    assert!(laptop["login_at"].as_str().unwrap().ends_with('Z'));
    // One account per page: bob's two resources come together.
    let first = root.get("/api/v1/sessions?limit=1").await;
    assert!(first.body["next"].is_string(), "{:?}", first.body);
    let mut walked = jids(&first.body);
    let mut next = first.body["next"].clone();
    while let Some(cursor) = next.as_str() {
        let page = root
            .get(&format!(
                "/api/v1/sessions?limit=1&cursor={}",
                segment(cursor)
            ))
            .await;
        walked.extend(jids(&page.body));
        next = page.body["next"].clone();
    }
    walked.sort();
    assert_eq!(walked, listed);
    let bobs = root.get("/api/v1/sessions?account=bob%40localhost").await;
    assert_eq!(jids(&bobs.body).len(), 2);
    root.get("/api/v1/sessions?account=bob%40localhost%2Fx")
        .await
        .assert_error(400, "malformed_jid");
    root.get("/api/v1/sessions?limit=0")
        .await
        .assert_error(400, "bad_limit");

    // Announcements: to the online, to one account, to everyone.
    let announce = "/api/v1/announcements";
    let sent = root
        .post(
            announce,
            json!({"to": "online", "subject": "Maintenance", "body": "back at five"}),
        )
        .await;
    assert_eq!(sent.status, 200, "{:?}", sent.body);
    assert_eq!(sent.body["recipients"], 3);
    for client in [&mut bob, &mut bob_phone, &mut dave] {
        let message = client.expect("back at five</body></message>").await;
        assert!(message.contains(&format!("from='{DOMAIN}'")), "{message}");
        assert!(
            message.contains("<subject>Maintenance</subject>"),
            "{message}"
        );
    }
    let sent = root
        .post(
            announce,
            json!({"to": "dave@localhost", "body": "just you"}),
        )
        .await;
    assert_eq!(sent.body["recipients"], 1);
    dave.expect("just you</body>").await;
    let sent = root
        .post(announce, json!({"to": "all", "body": "to everyone"}))
        .await;
    assert_eq!(sent.body["recipients"], 4, "{:?}", sent.body);
    bob.expect("to everyone</body>").await;
    let mut carol = RawClient::login(server.c2s, "carol", "pw", "home").await;
    carol.available().await;
    carol.expect("to everyone</body>").await;
    root.post(announce, json!({"to": "online", "body": ""}))
        .await
        .assert_error(400, "bad_body");
    root.post(
        announce,
        json!({"to": "online", "body": "x".repeat(16 * 1024 + 1)}),
    )
    .await
    .assert_error(400, "too_long");
    root.post(announce, json!({"to": "nobody@localhost", "body": "x"}))
        .await
        .assert_error(404, "unknown_account");
    root.post(announce, json!({"to": "bob@localhost/laptop", "body": "x"}))
        .await
        .assert_error(400, "malformed_jid");

    // Delivered stanzas show in the routers' rate.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        bob.send("<message to='dave@localhost' type='chat'><body>busy</body></message>")
            .await;
        let status = root.get("/api/v1/cluster").await;
        if status.body["stanzas_per_second"].as_f64().unwrap() > 0.0 {
            assert!(
                status.body["routers"][0]["stanzas_per_second"]
                    .as_f64()
                    .unwrap()
                    > 0.0
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", status.body);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ending one session, then the rest of the account's.
    let session = |jid: &str| format!("/api/v1/sessions/{}", segment(jid));
    let ended = root.delete(&session("bob@localhost/laptop")).await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    assert_eq!(ended.body["ended"], json!(["bob@localhost/laptop"]));
    bob.expect_stream_error("policy-violation").await;
    root.delete(&session("bob@localhost/nowhere"))
        .await
        .assert_error(404, "unknown_session");
    root.delete(&session("bob@localhost"))
        .await
        .assert_error(400, "malformed_jid");
    let ended = root
        .delete("/api/v1/accounts/bob%40localhost/sessions")
        .await;
    assert_eq!(ended.body["ended"], json!(["bob@localhost/phone"]));
    bob_phone.expect_stream_error("policy-violation").await;
    root.delete("/api/v1/accounts/nobody%40localhost/sessions")
        .await
        .assert_error(404, "unknown_account");

    // Deleting an account ends its sessions.
    let deleted = root.delete("/api/v1/accounts/dave%40localhost").await;
    assert_eq!(deleted.body["ended"], json!(["dave@localhost/desk"]));
    dave.expect_stream_error("not-authorized").await;

    // The cluster as the all-in-one process has it: one node per role.
    let status = root.get("/api/v1/cluster").await;
    assert_eq!(status.status, 200);
    for role in ["connection_managers", "routers", "session_replicas"] {
        assert_eq!(
            status.body[role].as_array().unwrap().len(),
            1,
            "{role}: {:?}",
            status.body
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let status = root.get("/api/v1/cluster").await;
        if status.body["sessions"] == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", status.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_kick_through_the_api_ends_a_session_on_another_connection_manager() {
    with_cluster(Duration::from_secs(90), kick_across_the_cluster).await;
}

#[tokio::test]
async fn a_room_destroyed_through_one_replicas_api_is_destroyed_by_its_owner() {
    with_cluster(Duration::from_secs(90), destroy_across_the_cluster).await;
}

async fn destroy_across_the_cluster(nodes: Nodes) {
    let sessions = [nodes.session(1), nodes.session(2)];
    for session in &sessions {
        session.ready().await;
    }
    sessions[0].add_user("root", "rootpass");
    set_admin(&sessions[0], "root", true);
    for user in ["alice", "carol"] {
        sessions[0].add_user(user, &muc::password(user));
    }
    let router = nodes.router(None);
    router.ready().await;
    let cm1 = nodes.connection_manager(1);
    let cm2 = nodes.connection_manager(2);
    cm1.ready().await;
    cm2.ready().await;
    // A room that `session-1` owns, destroyed through `session-2`'s API.
    let replicas = ["session-1", "session-2"].map(|id| xmppd_grpc::Node {
        id: id.to_string(),
        ..Default::default()
    });
    let room = (0..)
        .map(|n| muc::room(&format!("hall{n}")))
        .find(|room| {
            xmppd_registry::membership::owner(room, &replicas)
                .unwrap()
                .id
                == "session-1"
        })
        .unwrap();
    let mut alice = muc::login(cm1.c2s, "alice").await;
    let mut carol = muc::login(cm2.c2s, "carol").await;
    muc::create(&mut alice, &room, "Alice", &[]).await;
    muc::join(&mut carol, &room, "Carol", Some("")).await;

    let api = AdminApi::of(&sessions[1]);
    api.wait_until_up().await;
    let root = api.login("root", "rootpass").await;
    let listed = root.get("/api/v1/rooms").await;
    assert_eq!(jids(&listed.body), [room.as_str()]);
    assert_eq!(listed.body["items"][0]["occupants"], 2);
    let path = format!("/api/v1/rooms/{}", segment(&room));
    assert_eq!(root.delete(&path).await.status, 204);
    for (client, nick) in [(&mut alice, "Alice"), (&mut carol, "Carol")] {
        let gone = client
            .wait("the destruction", |s| {
                muc::is_from(s, "presence", &format!("{room}/{nick}"))
                    && s.get_attr("type") == Some("unavailable")
            })
            .await;
        let told = muc::user_x(&gone).unwrap();
        assert!(
            told.get_child("destroy", xmppd_protocol::ns::MUC_USER)
                .is_some()
        );
    }
    root.get(&path).await.assert_error(404, "unknown_room");
}

async fn kick_across_the_cluster(nodes: Nodes) {
    let sessions = [nodes.session(1), nodes.session(2)];
    for session in &sessions {
        session.ready().await;
    }
    sessions[0].add_user("root", "rootpass");
    sessions[0].add_user("bob", "bob-pw");
    set_admin(&sessions[0], "root", true);
    let router = nodes.router(None);
    router.ready().await;
    let cm1 = nodes.connection_manager(1);
    let cm2 = nodes.connection_manager(2);
    cm1.ready().await;
    cm2.ready().await;
    let mut bob_here = RawClient::login(cm1.c2s, "bob", "bob-pw", "here").await;
    bob_here.available().await;
    let mut bob_there = RawClient::login(cm2.c2s, "bob", "bob-pw", "there").await;
    bob_there.available().await;

    // Either replica's API sees every session of the cluster.
    let api = AdminApi::of(&sessions[1]);
    api.wait_until_up().await;
    let root = api.login("root", "rootpass").await;
    let listed = root.get("/api/v1/sessions?account=bob%40localhost").await;
    let nodes_of: Vec<(String, String)> = listed.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["jid"].as_str().unwrap().into(),
                s["node"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        nodes_of,
        [
            ("bob@localhost/here".to_string(), "cm-1".to_string()),
            ("bob@localhost/there".to_string(), "cm-2".to_string())
        ]
    );
    root.get("/api/v1/sessions?cursor=not-a-cursor")
        .await
        .assert_error(400, "bad_cursor");
    let status = root.get("/api/v1/cluster").await;
    let ids = |role: &str| -> Vec<String> {
        status.body[role]
            .as_array()
            .unwrap()
            .iter()
            .map(|node| node["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids("connection_managers"), ["cm-1", "cm-2"]);
    assert_eq!(ids("routers"), ["router-1"]);
    assert_eq!(ids("session_replicas"), ["session-1", "session-2"]);

    // The kick leaves by a router to the connection-manager holding the stream.
    let ended = root
        .delete("/api/v1/sessions/bob%40localhost%2Fthere")
        .await;
    assert_eq!(ended.status, 200, "{:?}", ended.body);
    bob_there.expect_stream_error("policy-violation").await;
    // The other session stays, and hears that this one left.
    bob_here.expect("type='unavailable'").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let listed = root.get("/api/v1/sessions?account=bob%40localhost").await;
        if jids(&listed.body) == ["bob@localhost/here"] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{:?}", listed.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn rooms_are_listed_shown_and_destroyed_through_their_replica() {
    let dir = tempfile::tempdir().unwrap();
    let (server, root) = start(dir.path()).await;
    for user in ["alice", "bob"] {
        server.add_user(user, &muc::password(user));
    }
    let mut alice = muc::login(server.c2s, "alice").await;
    let mut bob = muc::login(server.c2s, "bob").await;
    let (attic, bakery, cellar) = (muc::room("attic"), muc::room("bakery"), muc::room("cellar"));
    let attic_config = [
        ("muc#roomconfig_roomname", "The attic"),
        ("muc#roomconfig_persistentroom", "1"),
        ("muc#roomconfig_moderatedroom", "1"),
        ("muc#roomconfig_passwordprotectedroom", "1"),
        ("muc#roomconfig_roomsecret", "s3cret"),
    ];
    muc::create(&mut alice, &attic, "Alice", &attic_config).await;
    muc::create(&mut alice, &bakery, "Alice", &[]).await;
    let cellar_config = [
        ("muc#roomconfig_membersonly", "1"),
        ("muc#roomconfig_publicroom", "0"),
    ];
    muc::create(&mut alice, &cellar, "Alice", &cellar_config).await;
    muc::join(&mut bob, &bakery, "Bob", Some("")).await;
    alice
        .send(&format!(
            "<message to='{bakery}' type='groupchat'><subject>Fresh bread</subject></message>"
        ))
        .await;
    bob.wait("the new subject", |s| {
        s.get_child("subject", xmppd_protocol::ns::CLIENT)
            .is_some_and(|subject| subject.text_content() == "Fresh bread")
    })
    .await;

    // Listed by JID with their settings, a page at a time, to the end and
    // past it.
    let first = root.get("/api/v1/rooms?limit=2").await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(jids(&first.body), [attic.as_str(), bakery.as_str()]);
    assert_eq!(
        first.body["items"][0],
        json!({
            "jid": attic, "name": "The attic", "occupants": 1, "persistent": true,
            "public": true, "members_only": false, "password_protected": true,
            "moderated": true,
        })
    );
    assert_eq!(first.body["items"][1]["occupants"], 2);
    let next = first.body["next"].as_str().unwrap();
    let second = root
        .get(&format!("/api/v1/rooms?limit=2&after={}", segment(next)))
        .await;
    assert_eq!(jids(&second.body), [cellar.as_str()]);
    assert_eq!(second.body["next"], Value::Null);
    assert_eq!(second.body["items"][0]["members_only"], true);
    assert_eq!(second.body["items"][0]["public"], false);
    let past = root
        .get(&format!(
            "/api/v1/rooms?after={}",
            segment(&muc::room("zzz"))
        ))
        .await;
    assert_eq!((past.status, jids(&past.body).len()), (200, 0));
    assert_eq!(past.body["next"], Value::Null);
    for bad in ["limit=0", "limit=501"] {
        root.get(&format!("/api/v1/rooms?{bad}"))
            .await
            .assert_error(400, "bad_limit");
    }

    // One room, with its subject and who is in it.
    let path = |room: &str| format!("/api/v1/rooms/{}", segment(room));
    let shown = root.get(&path(&bakery)).await;
    assert_eq!(shown.status, 200, "{:?}", shown.body);
    assert_eq!(shown.body["subject"], "Fresh bread");
    assert_eq!(shown.body["password_protected"], false);
    assert_eq!(
        shown.body["occupants"],
        json!([
            {"nick": "Alice", "jid": alice.jid, "role": "moderator", "affiliation": "owner"},
            {"nick": "Bob", "jid": bob.jid, "role": "participant", "affiliation": "none"},
        ])
    );
    root.get(&path(&muc::room("nowhere")))
        .await
        .assert_error(404, "unknown_room");
    root.get(&path("bakery@elsewhere.example"))
        .await
        .assert_error(400, "not_local");
    root.get(&path(&muc::service()))
        .await
        .assert_error(400, "malformed_jid");

    // Bad destructions change nothing.
    let destroy =
        async |room: &str, body: Value| root.request("DELETE", &path(room), Some(body)).await;
    let long = "x".repeat(xmppd_admin::rooms::MAX_REASON_BYTES + 1);
    destroy(&bakery, json!({"reason": long}))
        .await
        .assert_error(400, "too_long");
    destroy(&bakery, json!({"alternate": "@@"}))
        .await
        .assert_error(400, "malformed_jid");
    destroy(&bakery, json!({"venue": "x"}))
        .await
        .assert_error(422, "bad_request");
    destroy(&muc::room("nowhere"), json!({}))
        .await
        .assert_error(404, "unknown_room");

    // An administrator who lost the role may neither look nor destroy.
    set_admin(&server, "bob", true);
    let former = AdminApi::of(&server)
        .login("bob", &muc::password("bob"))
        .await;
    set_admin(&server, "bob", false);
    former
        .get("/api/v1/rooms")
        .await
        .assert_error(403, "not_admin");
    former
        .delete(&path(&bakery))
        .await
        .assert_error(403, "not_admin");

    // A destruction tells every occupant, as an owner's does (§10.9).
    let reason = "closing time";
    let destroyed = destroy(&bakery, json!({"reason": reason, "alternate": attic})).await;
    assert_eq!(destroyed.status, 204, "{:?}", destroyed.body);
    for (client, nick) in [(&mut bob, "Bob"), (&mut alice, "Alice")] {
        let gone = client
            .wait("the destruction", |s| {
                muc::is_from(s, "presence", &format!("{bakery}/{nick}"))
                    && s.get_attr("type") == Some("unavailable")
            })
            .await;
        assert_eq!(muc::codes(&gone), [110]);
        let told = muc::user_x(&gone)
            .unwrap()
            .get_child("destroy", xmppd_protocol::ns::MUC_USER)
            .unwrap();
        assert_eq!(told.get_attr("jid"), Some(attic.as_str()));
        let text = told
            .get_child("reason", xmppd_protocol::ns::MUC_USER)
            .unwrap()
            .text_content();
        assert_eq!(text, reason);
    }
    root.get(&path(&bakery))
        .await
        .assert_error(404, "unknown_room");
    let left = root.get("/api/v1/rooms").await;
    assert_eq!(jids(&left.body), [attic.as_str(), cellar.as_str()]);
    // Without a body.
    assert_eq!(root.delete(&path(&cellar)).await.status, 204);
    root.delete(&path(&cellar))
        .await
        .assert_error(404, "unknown_room");

    let audit = root.get("/api/v1/audit").await;
    let destroyed: Vec<&Value> = audit.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entry| entry["action"] == "room.destroy")
        .collect();
    assert_eq!(destroyed.len(), 2, "{:?}", audit.body);
    assert_eq!(destroyed[1]["target"], bakery.as_str());
    assert_eq!(destroyed[1]["actor"], "root@localhost");
}

/// Sends an IQ whose id is `id` and returns its answer (up to `</iq>`).
async fn iq(client: &mut RawClient, id: &str, xml: &str) -> String {
    client.send(xml).await;
    let head = client.expect(&format!("id='{id}'")).await;
    let start = head.rfind("<iq").unwrap_or(0);
    format!("{}{}", &head[start..], client.expect("</iq>").await)
}

/// An ad-hoc command request: executing `node`, or submitting `fields`.
fn command(id: &str, node: &str, fields: &[(&str, &str)]) -> String {
    let form = if fields.is_empty() {
        String::new()
    } else {
        let fields: String = fields
            .iter()
            .map(|(var, value)| format!("<field var='{var}'><value>{value}</value></field>"))
            .collect();
        format!("<x xmlns='jabber:x:data' type='submit'>{fields}</x>")
    };
    format!(
        "<iq type='set' id='{id}' to='{DOMAIN}'><command xmlns='http://jabber.org/protocol/commands' \
         node='http://jabber.org/protocol/admin#{node}' action='execute'>{form}</command></iq>"
    )
}

#[tokio::test]
async fn administrators_run_the_service_administration_commands_and_others_are_forbidden() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = start(dir.path()).await;
    server.add_user("eve", "evepass");
    let mut root = RawClient::login(server.c2s, "root", "rootpass", "console").await;
    root.available().await;
    let mut eve = RawClient::login(server.c2s, "eve", "evepass", "phone").await;
    eve.available().await;

    // The list of commands, for administrators only.
    let items = "<query xmlns='http://jabber.org/protocol/disco#items' \
                 node='http://jabber.org/protocol/commands'/>";
    let listed = iq(
        &mut root,
        "d1",
        &format!("<iq type='get' id='d1' to='{DOMAIN}'>{items}</iq>"),
    )
    .await;
    for node in [
        "add-user",
        "delete-user",
        "change-user-password",
        "end-user-session",
        "get-online-users-num",
        "get-online-users-list",
        "announce",
    ] {
        assert!(
            listed.contains(&format!("admin#{node}'")),
            "{node} not in {listed}"
        );
    }
    let hidden = iq(
        &mut eve,
        "d2",
        &format!("<iq type='get' id='d2' to='{DOMAIN}'>{items}</iq>"),
    )
    .await;
    assert!(!hidden.contains("<item"), "{hidden}");
    let info = iq(&mut eve, "d3", &format!("<iq type='get' id='d3' to='{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")).await;
    assert!(
        info.contains("var='http://jabber.org/protocol/commands'"),
        "{info}"
    );

    // A command's own disco#info (XEP-0050 §2.3), for administrators only.
    let node_info = |id: &str, node: &str| {
        format!(
            "<iq type='get' id='{id}' to='{DOMAIN}'><query xmlns='http://jabber.org/protocol/disco#info' \
             node='{node}'/></iq>"
        )
    };
    let add_user = "http://jabber.org/protocol/admin#add-user";
    let info = iq(&mut root, "i1", &node_info("i1", add_user)).await;
    assert!(
        info.contains("type='result'")
            && info.contains(&format!("node='{add_user}'"))
            && info.contains("category='automation'")
            && info.contains("type='command-node'")
            && info.contains("var='http://jabber.org/protocol/commands'")
            && info.contains("var='jabber:x:data'"),
        "{info}"
    );
    let refused = iq(&mut eve, "i2", &node_info("i2", add_user)).await;
    assert!(
        refused.contains("type='error'") && refused.contains("<forbidden"),
        "{refused}"
    );
    let unknown = node_info("i3", "http://jabber.org/protocol/admin#no-such-command");
    let unknown = iq(&mut root, "i3", &unknown).await;
    assert!(unknown.contains("<item-not-found"), "{unknown}");

    // Others are refused.
    let refused = iq(&mut eve, "e1", &command("e1", "add-user", &[])).await;
    assert!(
        refused.contains("type='error'") && refused.contains("<forbidden"),
        "{refused}"
    );

    // Add a user: the form, then the submitted form.
    let form = iq(&mut root, "a1", &command("a1", "add-user", &[])).await;
    assert!(form.contains("status='executing'"), "{form}");
    assert!(
        form.contains("var='accountjid'") && form.contains("type='text-private'"),
        "{form}"
    );
    let fields = [
        ("accountjid", "frank@localhost"),
        ("password", "frankpass"),
        ("password-verify", "frankpass"),
    ];
    let done = iq(&mut root, "a2", &command("a2", "add-user", &fields)).await;
    assert!(done.contains("status='completed'"), "{done}");
    RawClient::login(server.c2s, "frank", "frankpass", "x").await;
    let again = iq(&mut root, "a3", &command("a3", "add-user", &fields)).await;
    assert!(again.contains("<conflict"), "{again}");
    let missing = iq(
        &mut root,
        "a4",
        &command("a4", "add-user", &[("accountjid", "gina@localhost")]),
    )
    .await;
    assert!(missing.contains("<bad-request"), "{missing}");
    let differ = [
        ("accountjid", "gina@localhost"),
        ("password", "a"),
        ("password-verify", "b"),
    ];
    let differ = iq(&mut root, "a5", &command("a5", "add-user", &differ)).await;
    assert!(differ.contains("<bad-request"), "{differ}");
    let malformed = iq(
        &mut root,
        "a6",
        &command("a6", "add-user", &[("accountjid", "@@"), ("password", "x")]),
    )
    .await;
    assert!(malformed.contains("<bad-request"), "{malformed}");
    let unknown = iq(&mut root, "a7", &command("a7", "no-such-command", &[])).await;
    assert!(unknown.contains("<item-not-found"), "{unknown}");

    // Change a password.
    let fields = [("accountjid", "frank@localhost"), ("password", "newpass")];
    let done = iq(
        &mut root,
        "p1",
        &command("p1", "change-user-password", &fields),
    )
    .await;
    assert!(done.contains("status='completed'"), "{done}");
    RawClient::login(server.c2s, "frank", "newpass", "y").await;
    let fields = [("accountjid", "nobody@localhost"), ("password", "x")];
    let unknown = iq(
        &mut root,
        "p2",
        &command("p2", "change-user-password", &fields),
    )
    .await;
    assert!(unknown.contains("<item-not-found"), "{unknown}");

    // Who is online.
    let count = iq(&mut root, "o1", &command("o1", "get-online-users-num", &[])).await;
    assert!(count.contains("var='onlineusersnum'"), "{count}");
    let list = iq(
        &mut root,
        "o2",
        &command("o2", "get-online-users-list", &[("max_items", "100")]),
    )
    .await;
    assert!(
        list.contains("<value>eve@localhost</value>")
            && list.contains("<value>root@localhost</value>"),
        "{list}"
    );
    let bad = iq(
        &mut root,
        "o3",
        &command("o3", "get-online-users-list", &[("max_items", "0")]),
    )
    .await;
    assert!(bad.contains("<bad-request"), "{bad}");

    // An announcement reaches the online users.
    let fields = [
        ("subject", "Notice"),
        ("announcement", "server restarts soon"),
    ];
    let done = iq(&mut root, "n1", &command("n1", "announce", &fields)).await;
    assert!(done.contains("status='completed'"), "{done}");
    eve.expect("server restarts soon</body>").await;

    // End a session; delete a user.
    let done = iq(
        &mut root,
        "s1",
        &command(
            "s1",
            "end-user-session",
            &[("accountjids", "eve@localhost/phone")],
        ),
    )
    .await;
    assert!(done.contains("status='completed'"), "{done}");
    eve.expect_stream_error("policy-violation").await;
    let gone = iq(
        &mut root,
        "s2",
        &command(
            "s2",
            "end-user-session",
            &[("accountjids", "eve@localhost/phone")],
        ),
    )
    .await;
    assert!(gone.contains("<item-not-found"), "{gone}");
    let done = iq(
        &mut root,
        "r1",
        &command("r1", "delete-user", &[("accountjids", "frank@localhost")]),
    )
    .await;
    assert!(done.contains("status='completed'"), "{done}");
    let again = iq(
        &mut root,
        "r2",
        &command("r2", "delete-user", &[("accountjids", "frank@localhost")]),
    )
    .await;
    assert!(again.contains("<item-not-found"), "{again}");

    // Canceling answers canceled.
    let cancel = format!(
        "<iq type='set' id='c1' to='{DOMAIN}'><command xmlns='http://jabber.org/protocol/commands' \
         node='http://jabber.org/protocol/admin#add-user' sessionid='abc' action='cancel'/></iq>"
    );
    let canceled = iq(&mut root, "c1", &cancel).await;
    assert!(
        canceled.contains("status='canceled'") && canceled.contains("sessionid='abc'"),
        "{canceled}"
    );
}
