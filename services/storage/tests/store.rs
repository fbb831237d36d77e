//! Every test runs twice: on SQLite in a temporary folder, and on a fresh Postgres database
//! (created from `XMPPD_TEST_POSTGRES_URL`, default `postgres://root@127.0.0.1:5432/postgres`,
//! and dropped afterwards) so that tests run in parallel.

use std::future::Future;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::postgres::PgConnection;
use sqlx::{Connection, Executor};
use xmppd_storage::{
    Backend, CacheStatistics, Credential, CredentialCaching, PoolSize, RosterItem, SharedContact,
    SharedGroup, Store, StoreError, Subscription,
};

const DEFAULT_ADMIN_URL: &str = "postgres://root@127.0.0.1:5432/postgres";

/// `storage.max_connections`' default.
const POOL: NonZeroU32 = NonZeroU32::new(10).unwrap();

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test]
            async fn $test() {
                crate::with_sqlite(super::$test).await;
            })*
        }
        mod postgres {
            $(#[tokio::test]
            async fn $test() {
                crate::with_postgres(super::$test).await;
            })*
        }
    };
}

on_both_backends![
    create_account_and_duplicate,
    delete_account_removes_everything,
    set_credentials_replaces_all,
    accounts_page_by_domain_search_and_cursor,
    credentials_upgrade_only_the_keys_it_checked,
    roster_put_remove_and_versions,
    roster_groups_round_trip,
    shared_groups_are_created_listed_described_and_deleted,
    shared_group_members_see_each_other_and_bump_versions,
    deleting_an_account_takes_it_out_of_its_groups,
    offline_quota_order_and_take,
    last_activity_is_replaced,
    migrations_idempotent_on_reconnect,
];

/// Runs `test` on the URL of a SQLite file whose parent folders do not exist yet.
async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not/yet/there/xmppd.db");
    test(format!("sqlite://{}", path.display())).await;
}

/// Runs `test` on the URL of a new Postgres database, dropped afterwards even if it panics.
async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let admin_url =
        std::env::var("XMPPD_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_ADMIN_URL.to_owned());
    let mut admin = PgConnection::connect(&admin_url)
        .await
        .unwrap_or_else(|err| panic!("postgres at {admin_url} (XMPPD_TEST_POSTGRES_URL): {err}"));
    let name = unique_database_name();
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let outcome = tokio::spawn(test(sibling_database(&admin_url, &name))).await;
    admin
        .execute(format!("DROP DATABASE {name} WITH (FORCE)").as_str())
        .await
        .unwrap();
    if let Err(err) = outcome {
        std::panic::resume_unwind(err.into_panic());
    }
}

fn unique_database_name() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("xmppd_test_{}_{nanos}_{n}", std::process::id())
}

/// The admin URL with its database name swapped for `name`.
fn sibling_database(admin_url: &str, name: &str) -> String {
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let (scheme, rest) = base.split_once("://").expect("url with a scheme");
    let server = rest.split_once('/').map_or(rest, |(server, _)| server);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{scheme}://{server}/{name}{query}")
}

fn credential(mechanism: &str, byte: u8) -> Credential {
    Credential {
        mechanism: mechanism.to_owned(),
        salt: vec![byte; 16],
        iterations: 4096,
        stored_key: vec![byte.wrapping_add(1); 32],
        server_key: vec![byte.wrapping_add(2); 32],
    }
}

fn item(contact: &str, groups: &[&str]) -> RosterItem {
    RosterItem {
        contact: contact.to_owned(),
        name: None,
        subscription: Subscription::None,
        ask_out: false,
        pending_in: false,
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

async fn create_account_and_duplicate(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let expected_backend = if url.starts_with("sqlite") {
        Backend::Sqlite
    } else {
        Backend::Postgres
    };
    assert_eq!(store.backend(), expected_backend);

    let mut sha1 = credential("SCRAM-SHA-1", 1);
    sha1.iterations = u32::MAX;
    let creds = vec![sha1, credential("SCRAM-SHA-256", 7)];
    assert!(!store.account_exists("juliet@example.com").await.unwrap());
    assert!(
        store
            .credentials("juliet@example.com")
            .await
            .unwrap()
            .is_empty()
    );

    store
        .create_account("juliet@example.com", &creds)
        .await
        .unwrap();
    assert!(store.account_exists("juliet@example.com").await.unwrap());
    assert_eq!(
        store.credentials("juliet@example.com").await.unwrap(),
        creds
    );

    let again = store.create_account("juliet@example.com", &[]).await;
    assert!(matches!(again, Err(StoreError::AlreadyExists)), "{again:?}");
    assert_eq!(
        store.credentials("juliet@example.com").await.unwrap(),
        creds
    );
}

async fn delete_account_removes_everything(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let jid = "romeo@example.net";
    store
        .create_account(jid, &[credential("SCRAM-SHA-256", 3)])
        .await
        .unwrap();
    store
        .put_roster_item(jid, &item("juliet@example.com", &["Lovers"]))
        .await
        .unwrap();
    assert!(
        store
            .store_offline(jid, b"<message/>", 5, 10)
            .await
            .unwrap()
    );
    store.set_last_activity(jid, 9, "gone").await.unwrap();
    store
        .create_account("other@example.net", &[])
        .await
        .unwrap();
    store
        .put_roster_item("other@example.net", &item("juliet@example.com", &[]))
        .await
        .unwrap();

    assert!(store.delete_account(jid).await.unwrap());
    assert!(!store.account_exists(jid).await.unwrap());
    assert!(store.credentials(jid).await.unwrap().is_empty());
    let roster = store.roster(jid).await.unwrap();
    assert!(roster.items.is_empty());
    assert_eq!(roster.version, 0);
    assert_eq!(store.count_offline(jid).await.unwrap(), 0);
    assert!(store.last_activity(jid).await.unwrap().is_none());
    assert!(!store.delete_account(jid).await.unwrap());

    // Another account sharing a contact keeps its data.
    let other = store.roster("other@example.net").await.unwrap();
    assert_eq!(other.items.len(), 1);

    // The JID can be registered again from scratch.
    store.create_account(jid, &[]).await.unwrap();
    assert!(store.credentials(jid).await.unwrap().is_empty());
}

/// An upgrade names the key its login checked: it replaces the keys while that key is
/// there, and leaves alone keys that a password change wrote meanwhile.
async fn credentials_upgrade_only_the_keys_it_checked(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let jid = "patient@example.com";
    let old = [credential("SCRAM-SHA-1", 1), credential("SCRAM-SHA-256", 3)];
    store.create_account(jid, &old).await.unwrap();
    let checked = old[1].stored_key.clone();

    let upgraded = [credential("SCRAM-SHA-1", 5), credential("SCRAM-SHA-256", 7)];
    store
        .set_credentials(jid, &upgraded, Some(&checked))
        .await
        .unwrap();
    assert_eq!(store.credentials(jid).await.unwrap(), upgraded);

    // The same upgrade again finds the key it checked gone: nothing changes.
    let stale = store
        .set_credentials(jid, &[credential("SCRAM-SHA-1", 9)], Some(&checked))
        .await;
    assert!(matches!(stale, Err(StoreError::NotFound)), "{stale:?}");
    assert_eq!(store.credentials(jid).await.unwrap(), upgraded);
}

async fn set_credentials_replaces_all(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let jid = "nurse@example.com";
    store
        .create_account(
            jid,
            &[credential("SCRAM-SHA-1", 1), credential("SCRAM-SHA-256", 2)],
        )
        .await
        .unwrap();

    let new = vec![credential("SCRAM-SHA-256", 9)];
    store.set_credentials(jid, &new, None).await.unwrap();
    assert_eq!(store.credentials(jid).await.unwrap(), new);

    let missing = store
        .set_credentials("nobody@example.com", &new, None)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    assert!(
        store
            .credentials("nobody@example.com")
            .await
            .unwrap()
            .is_empty()
    );
}

async fn accounts_page_by_domain_search_and_cursor(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    for jid in [
        "b@example.com",
        "Z@example.com",
        "a@example.org",
        "a@example.com",
        "c@sub.example.com",
        "a_b@example.com",
        "a%b@example.com",
    ] {
        store.create_account(jid, &[]).await.unwrap();
    }
    let page = |domain: Option<&'static str>, search: &'static str, after: &'static str, limit| {
        let store = store.clone();
        async move {
            let entries = store
                .accounts_page(domain, search, after, limit)
                .await
                .unwrap();
            entries
                .into_iter()
                .map(|entry| entry.jid)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        page(None, "", "", 100).await,
        [
            "Z@example.com",
            "a%b@example.com",
            "a@example.com",
            "a@example.org",
            "a_b@example.com",
            "b@example.com",
            "c@sub.example.com"
        ]
    );
    assert_eq!(
        page(Some("example.com"), "", "", 2).await,
        ["Z@example.com", "a%b@example.com"]
    );
    assert_eq!(
        page(Some("example.com"), "", "a%b@example.com", 2).await,
        ["a@example.com", "a_b@example.com"]
    );
    assert!(
        page(Some("example.com"), "", "b@example.com", 2)
            .await
            .is_empty()
    );
    assert!(page(Some("nowhere.test"), "", "", 10).await.is_empty());
    // LIKE's wildcards in a search are taken literally.
    assert_eq!(page(None, "_", "", 10).await, ["a_b@example.com"]);
    assert_eq!(page(None, "%", "", 10).await, ["a%b@example.com"]);
    assert_eq!(page(None, "sub.", "", 10).await, ["c@sub.example.com"]);
}

async fn roster_put_remove_and_versions(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let jid = "juliet@example.com";
    store.create_account(jid, &[]).await.unwrap();
    assert_eq!(store.roster_version(jid).await.unwrap(), 0);
    assert!(store.roster(jid).await.unwrap().items.is_empty());

    let mut romeo = item("romeo@example.net", &[]);
    assert_eq!(store.put_roster_item(jid, &romeo).await.unwrap(), 1);
    let nurse = RosterItem {
        name: Some("Nurse".to_owned()),
        subscription: Subscription::From,
        pending_in: true,
        ..item("nurse@example.com", &[])
    };
    assert_eq!(store.put_roster_item(jid, &nurse).await.unwrap(), 2);

    romeo.subscription = Subscription::Both;
    romeo.ask_out = true;
    romeo.name = Some("Romeo".to_owned());
    assert_eq!(store.put_roster_item(jid, &romeo).await.unwrap(), 3);
    assert_eq!(store.roster_version(jid).await.unwrap(), 3);

    let roster = store.roster(jid).await.unwrap();
    assert_eq!(roster.version, 3);
    assert_eq!(roster.items, [nurse.clone(), romeo.clone()]);
    assert_eq!(
        store.roster_item(jid, "romeo@example.net").await.unwrap(),
        Some(romeo)
    );
    assert_eq!(
        store.roster_item(jid, "tybalt@example.net").await.unwrap(),
        None
    );

    assert_eq!(
        store
            .remove_roster_item(jid, "romeo@example.net")
            .await
            .unwrap(),
        Some(4)
    );
    assert_eq!(
        store
            .remove_roster_item(jid, "romeo@example.net")
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.roster_version(jid).await.unwrap(), 4);
    assert_eq!(store.roster(jid).await.unwrap().items, [nurse]);

    // Versions are per account.
    assert_eq!(
        store
            .put_roster_item("romeo@example.net", &item(jid, &[]))
            .await
            .unwrap(),
        1
    );
}

async fn roster_groups_round_trip(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let jid = "juliet@example.com";
    let romeo = item(
        "romeo@example.net",
        &["Zeta", "Friends", "Ünïcode ✓", "Zeta"],
    );
    store.put_roster_item(jid, &romeo).await.unwrap();
    store
        .put_roster_item(jid, &item("nurse@example.com", &["Staff"]))
        .await
        .unwrap();

    let got = store
        .roster_item(jid, "romeo@example.net")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.groups, ["Zeta", "Friends", "Ünïcode ✓"]);

    let regrouped = item("romeo@example.net", &["Work"]);
    store.put_roster_item(jid, &regrouped).await.unwrap();
    let ungrouped = item("nurse@example.com", &[]);
    store.put_roster_item(jid, &ungrouped).await.unwrap();
    assert_eq!(
        store.roster(jid).await.unwrap().items,
        [ungrouped, regrouped]
    );

    // Removing an item removes its groups: re-adding it starts with none.
    store
        .remove_roster_item(jid, "romeo@example.net")
        .await
        .unwrap();
    let bare = item("romeo@example.net", &[]);
    store.put_roster_item(jid, &bare).await.unwrap();
    assert_eq!(
        store.roster_item(jid, "romeo@example.net").await.unwrap(),
        Some(bare)
    );
}

fn group(name: &str, description: &str, members: u64) -> SharedGroup {
    SharedGroup {
        name: name.to_owned(),
        description: description.to_owned(),
        members,
    }
}

fn shared(contact: &str, groups: &[&str]) -> SharedContact {
    SharedContact {
        contact: contact.to_owned(),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

/// A store with an account for each of `users` at example.com.
async fn store_with_accounts(url: &str, users: &[&str]) -> Store {
    let store = Store::connect(url, POOL).await.unwrap();
    for user in users {
        store
            .create_account(&format!("{user}@example.com"), &[])
            .await
            .unwrap();
    }
    store
}

async fn shared_groups_are_created_listed_described_and_deleted(url: String) {
    let store = store_with_accounts(&url, &["juliet"]).await;
    for name in ["Staff", "Capulets", "Ünïcode ✓"] {
        store.create_group(name, "").await.unwrap();
    }
    let again = store.create_group("Staff", "other").await;
    assert!(matches!(again, Err(StoreError::AlreadyExists)), "{again:?}");

    // Byte order, a page at a time, and nothing past the end.
    let names = |page: Vec<SharedGroup>| page.into_iter().map(|g| g.name).collect::<Vec<_>>();
    assert_eq!(
        names(store.groups_page("", 2).await.unwrap()),
        ["Capulets", "Staff"]
    );
    assert_eq!(
        names(store.groups_page("Staff", 2).await.unwrap()),
        ["Ünïcode ✓"]
    );
    assert!(store.groups_page("Ünïcode ✓", 2).await.unwrap().is_empty());

    assert!(
        store
            .set_group_description("Capulets", "the house")
            .await
            .unwrap()
    );
    assert!(!store.set_group_description("Montagues", "x").await.unwrap());
    assert!(
        store
            .add_group_member("Capulets", "juliet@example.com")
            .await
            .unwrap()
    );
    assert_eq!(
        store.group("Capulets").await.unwrap(),
        Some(group("Capulets", "the house", 1))
    );
    assert_eq!(store.group("Montagues").await.unwrap(), None);

    assert_eq!(
        store.delete_group("Capulets").await.unwrap(),
        Some(vec!["juliet@example.com".to_owned()])
    );
    assert_eq!(store.delete_group("Capulets").await.unwrap(), None);
    assert_eq!(store.group("Capulets").await.unwrap(), None);
    assert!(
        store
            .shared_contacts("juliet@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    // A group made again under the same name starts empty.
    store.create_group("Capulets", "").await.unwrap();
    assert_eq!(
        store.group("Capulets").await.unwrap(),
        Some(group("Capulets", "", 0))
    );
}

async fn shared_group_members_see_each_other_and_bump_versions(url: String) {
    let users = ["juliet", "nurse", "tybalt", "romeo"];
    let store = store_with_accounts(&url, &users).await;
    let jid = |user: &str| format!("{user}@example.com");
    let version = async |user: &str| store.roster_version(&jid(user)).await.unwrap();
    store.create_group("Capulets", "").await.unwrap();
    store.create_group("Household", "").await.unwrap();

    let add = async |group: &str, user: &str| store.add_group_member(group, &jid(user)).await;
    assert!(add("Capulets", "juliet").await.unwrap());
    assert_eq!(version("juliet").await, 1);
    assert!(add("Capulets", "tybalt").await.unwrap());
    assert!(add("Capulets", "nurse").await.unwrap());
    assert!(add("Household", "nurse").await.unwrap());
    assert!(add("Household", "juliet").await.unwrap());
    // Every member's roster changed with each arrival.
    assert_eq!([version("juliet").await, version("tybalt").await], [4, 2]);
    assert_eq!(version("romeo").await, 0);
    // Again: nothing changes.
    assert!(!add("Capulets", "juliet").await.unwrap());
    assert_eq!(version("juliet").await, 4);
    for (group, user) in [("Montagues", "juliet"), ("Capulets", "paris")] {
        let missing = add(group, user).await;
        assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    }

    assert_eq!(
        store.shared_contacts(&jid("juliet")).await.unwrap(),
        [
            shared("nurse@example.com", &["Capulets", "Household"]),
            shared("tybalt@example.com", &["Capulets"]),
        ]
    );
    assert_eq!(
        store
            .shared_groups_between(&jid("nurse"), &jid("juliet"))
            .await
            .unwrap(),
        ["Capulets", "Household"]
    );
    assert!(
        store
            .shared_groups_between(&jid("juliet"), &jid("juliet"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .shared_contacts(&jid("romeo"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.group_members_page("Capulets", "", 2).await.unwrap(),
        [jid("juliet"), jid("nurse")]
    );
    assert_eq!(
        store
            .group_members_page("Capulets", &jid("nurse"), 2)
            .await
            .unwrap(),
        [jid("tybalt")]
    );
    assert!(
        store
            .group_members_page("Capulets", &jid("tybalt"), 2)
            .await
            .unwrap()
            .is_empty()
    );

    // Leaving bumps the one who left and those who stay, no one else.
    assert!(
        store
            .remove_group_member("Capulets", &jid("tybalt"))
            .await
            .unwrap()
    );
    assert!(
        !store
            .remove_group_member("Capulets", &jid("tybalt"))
            .await
            .unwrap()
    );
    assert_eq!(
        [
            version("juliet").await,
            version("tybalt").await,
            version("nurse").await
        ],
        [5, 3, 4]
    );
    assert_eq!(store.shared_contacts(&jid("tybalt")).await.unwrap(), []);
    // A deleted group bumps its members.
    store.delete_group("Household").await.unwrap();
    assert_eq!([version("juliet").await, version("nurse").await], [6, 5]);
    assert_eq!(
        store.shared_contacts(&jid("nurse")).await.unwrap(),
        [shared("juliet@example.com", &["Capulets"])]
    );
}

async fn deleting_an_account_takes_it_out_of_its_groups(url: String) {
    let store = store_with_accounts(&url, &["juliet", "nurse", "romeo"]).await;
    store.create_group("Capulets", "").await.unwrap();
    for user in ["juliet", "nurse"] {
        store
            .add_group_member("Capulets", &format!("{user}@example.com"))
            .await
            .unwrap();
    }
    let before = store.roster_version("nurse@example.com").await.unwrap();
    assert!(store.delete_account("juliet@example.com").await.unwrap());
    assert_eq!(
        store.group("Capulets").await.unwrap(),
        Some(group("Capulets", "", 1))
    );
    assert!(
        store
            .shared_contacts("nurse@example.com")
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.roster_version("nurse@example.com").await.unwrap(),
        before + 1
    );
    assert_eq!(store.roster_version("romeo@example.com").await.unwrap(), 0);
}

async fn offline_quota_order_and_take(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let jid = "juliet@example.com";
    assert!(store.take_offline(jid).await.unwrap().is_empty());

    // Stored times deliberately out of order: arrival order wins.
    for (i, at) in [(0_u8, 300), (1, 100), (2, 200)] {
        assert!(
            store
                .store_offline(jid, &[b'<', i, 0xff], at, 3)
                .await
                .unwrap()
        );
    }
    assert!(!store.store_offline(jid, b"<over/>", 400, 3).await.unwrap());
    assert!(
        store
            .store_offline("other@example.com", b"<m/>", 1, 3)
            .await
            .unwrap()
    );
    assert_eq!(store.count_offline(jid).await.unwrap(), 3);

    let taken = store.take_offline(jid).await.unwrap();
    let got: Vec<(Vec<u8>, i64)> = taken
        .into_iter()
        .map(|m| (m.stanza, m.stored_at_ms))
        .collect();
    assert_eq!(
        got,
        [
            (vec![b'<', 0, 0xff], 300),
            (vec![b'<', 1, 0xff], 100),
            (vec![b'<', 2, 0xff], 200)
        ]
    );
    assert_eq!(store.count_offline(jid).await.unwrap(), 0);
    assert!(store.take_offline(jid).await.unwrap().is_empty());
    assert_eq!(store.count_offline("other@example.com").await.unwrap(), 1);

    // Taking frees the quota.
    assert!(store.store_offline(jid, b"<again/>", 500, 3).await.unwrap());
    assert!(!store.store_offline(jid, b"<none/>", 500, 0).await.unwrap());
}

async fn last_activity_is_replaced(url: String) {
    let store = Store::connect(&url, POOL).await.unwrap();
    let jid = "juliet@example.com";
    assert!(store.last_activity(jid).await.unwrap().is_none());
    store
        .set_last_activity(jid, 1_700_000_000_000, "Heading home")
        .await
        .unwrap();
    store
        .set_last_activity(jid, 1_700_000_060_000, "")
        .await
        .unwrap();
    let last = store.last_activity(jid).await.unwrap().unwrap();
    assert_eq!((last.at_ms, last.status.as_str()), (1_700_000_060_000, ""));
}

async fn migrations_idempotent_on_reconnect(url: String) {
    let first = Store::connect(&url, POOL).await.unwrap();
    first
        .create_account("juliet@example.com", &[])
        .await
        .unwrap();
    first.close().await;

    let second = Store::connect(&url, POOL).await.unwrap();
    let third = Store::connect(&url, POOL).await.unwrap();
    assert!(second.account_exists("juliet@example.com").await.unwrap());
    assert!(third.account_exists("juliet@example.com").await.unwrap());
}

#[tokio::test]
async fn in_memory_sqlite_keeps_data_across_calls() {
    let store = Store::connect("sqlite::memory:", POOL).await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    store
        .create_account("juliet@example.com", &[])
        .await
        .unwrap();
    let clone = store.clone();
    assert!(clone.account_exists("juliet@example.com").await.unwrap());
    // Parallel users of the single connection queue instead of seeing another database.
    let (a, b) = (item("a@example.com", &[]), item("b@example.com", &[]));
    let (a, b) = tokio::join!(
        store.put_roster_item("juliet@example.com", &a),
        clone.put_roster_item("juliet@example.com", &b)
    );
    let mut versions = [a.unwrap(), b.unwrap()];
    versions.sort_unstable();
    assert_eq!(versions, [1, 2]);
}

#[tokio::test]
async fn unknown_scheme_is_rejected() {
    let err = Store::connect("mysql://localhost/xmppd", POOL)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidUrl(_)), "{err:?}");
}

#[tokio::test]
async fn sqlite_file_is_created_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a/b/xmppd.db");
    let store = Store::connect(&format!("sqlite://{}", path.display()), POOL)
        .await
        .unwrap();
    store
        .create_account("juliet@example.com", &[])
        .await
        .unwrap();
    assert!(path.is_file());
    // The write-ahead log lives beside the database while connections are open.
    assert!(path.with_file_name("xmppd.db-wal").is_file());
}

/// `storage.max_connections`: however many queries wait, the pool opens no more.
#[tokio::test]
async fn the_pool_opens_no_more_connections_than_allowed() {
    with_postgres(|url| async move {
        let limit = NonZeroU32::new(2).unwrap();
        let store = Store::connect(&url, limit).await.unwrap();
        let queries = (0..64).map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.credentials(&format!("u{i}@example.org")).await })
        });
        for query in queries.collect::<Vec<_>>() {
            query.await.unwrap().unwrap();
        }
        let open = connections_to(&url).await;
        assert!(open >= 1 && open <= i64::from(limit.get()), "{open} open");
    })
    .await;
}

/// `storage.min_connections`: that many are open once the store is, before any query.
#[tokio::test]
async fn a_pool_keeps_its_minimum_open_from_the_start() {
    with_postgres(|url| async move {
        let pool = PoolSize {
            max: NonZeroU32::new(4).unwrap(),
            min: 3,
        };
        let _store = Store::connect_pool(&url, pool).await.unwrap();
        assert_eq!(connections_to(&url).await, 3);
    })
    .await;
}

/// Connections to `url`'s database, other than the one asking.
async fn connections_to(url: &str) -> i64 {
    let database = url.rsplit('/').next().unwrap().to_owned();
    let mut watcher = PgConnection::connect(url).await.unwrap();
    let (open,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(&database)
    .fetch_one(&mut watcher)
    .await
    .unwrap();
    open
}

#[tokio::test]
async fn a_connection_postgres_closed_is_replaced_before_use() {
    with_postgres(|url| async move {
        let store = Store::connect(&url, NonZeroU32::MIN).await.unwrap();
        store.credentials("alice@example.org").await.unwrap();
        let database = url.rsplit('/').next().unwrap().to_owned();
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let (terminated,): (i64,) = sqlx::query_as(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(&database)
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(terminated, 1, "the pool's one connection");
        // Longer than the store's PING_AFTER_IDLE, after which a connection is checked.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        store.credentials("alice@example.org").await.unwrap();
    })
    .await;
}

const CACHING: CredentialCaching = CredentialCaching {
    entries: NonZeroUsize::new(100).unwrap(),
    ttl: Duration::from_secs(600),
};

/// Polls `store` for `jid`'s credentials until `done` holds, for at most five seconds (a
/// notification comes back in milliseconds; the ttl, in ten minutes).
async fn credentials_once(
    store: &Store,
    jid: &str,
    done: impl Fn(&[Credential], CacheStatistics) -> bool,
) -> Vec<Credential> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let credentials = store.credentials(jid).await.unwrap();
        let statistics = store.credential_cache_statistics().unwrap();
        if done(&credentials, statistics) {
            return credentials;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {credentials:?} ({statistics:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Reads until a read is served from the cache, which is listening from then on.
async fn warm(store: &Store, jid: &str) -> Vec<Credential> {
    let hits = store.credential_cache_statistics().unwrap().hits;
    credentials_once(store, jid, |_, statistics| statistics.hits > hits).await
}

/// A caching store, and a store of its own for the writes, sharing one account whose
/// credentials the caching one has read and keeps.
async fn cached_account(url: &str, jid: &str) -> (Store, Store) {
    let store = Store::connect(url, POOL)
        .await
        .unwrap()
        .cache_credentials(CACHING);
    let writer = Store::connect(url, POOL).await.unwrap();
    writer
        .create_account(jid, &[credential("SCRAM-SHA-1", 1)])
        .await
        .unwrap();
    assert_eq!(warm(&store, jid).await, [credential("SCRAM-SHA-1", 1)]);
    (store, writer)
}

/// `writer` changes the password; `store` must read the new keys within the poll's bound.
async fn changed_by(writer: &Store, store: &Store, jid: &str) {
    let new = [credential("SCRAM-SHA-1", 2)];
    writer.set_credentials(jid, &new, None).await.unwrap();
    assert_eq!(credentials_once(store, jid, |c, _| c == new).await, new);
}

/// Every change reaches the cache, whichever process writes it: `writer` stands for the
/// admin CLI or another replica, with a store of its own.
#[tokio::test]
async fn cached_credentials_follow_every_change() {
    with_postgres(|url| async move {
        let jid = "alice@example.org";
        let (store, writer) = cached_account(&url, jid).await;

        changed_by(&writer, &store, jid).await;
        warm(&store, jid).await;

        // The store's own change is seen at once, before its notification.
        store
            .set_credentials(jid, &[credential("SCRAM-SHA-256", 3)], None)
            .await
            .unwrap();
        assert_eq!(
            store.credentials(jid).await.unwrap(),
            [credential("SCRAM-SHA-256", 3)]
        );
        warm(&store, jid).await;

        assert!(writer.delete_account(jid).await.unwrap());
        credentials_once(&store, jid, |c, _| c.is_empty()).await;

        // Accounts that do not exist are not kept: registering one must not wait.
        let misses = store.credential_cache_statistics().unwrap().misses;
        store.credentials(jid).await.unwrap();
        assert_eq!(
            store.credential_cache_statistics().unwrap().misses,
            misses + 1
        );
        writer
            .create_account(jid, &[credential("SCRAM-SHA-1", 4)])
            .await
            .unwrap();
        assert_eq!(
            store.credentials(jid).await.unwrap(),
            [credential("SCRAM-SHA-1", 4)]
        );
    })
    .await;
}

/// While the listening connection is down, changes cannot be heard: the cache drops what it
/// holds, and caches again once it listens on a new connection.
#[tokio::test]
async fn a_lost_listener_empties_the_cache_until_it_listens_again() {
    with_postgres(|url| async move {
        let jid = "bob@example.org";
        let (store, writer) = cached_account(&url, jid).await;

        // Counted before the kill: the cache may drop its entry a moment after it, before
        // a count taken then.
        let before = store.credential_cache_statistics().unwrap().invalidations;
        let mut admin = PgConnection::connect(&url).await.unwrap();
        let (terminated,): (i64,) = sqlx::query_as(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND query LIKE 'LISTEN %'",
        )
        .fetch_one(&mut admin)
        .await
        .unwrap();
        assert_eq!(terminated, 1, "the cache's one listening connection");
        credentials_once(&store, jid, |_, statistics| {
            statistics.invalidations > before
        })
        .await;

        warm(&store, jid).await;
        changed_by(&writer, &store, jid).await;
    })
    .await;
}

#[tokio::test]
async fn an_embedded_store_never_caches_credentials() {
    with_sqlite(|url| async move {
        let store = Store::connect(&url, POOL)
            .await
            .unwrap()
            .cache_credentials(CACHING);
        assert_eq!(store.backend(), Backend::Sqlite);
        assert!(store.credential_cache_statistics().is_none());
    })
    .await;
}
