//! `provision`: creates this worker's accounts by in-band registration (XEP-0077). An account
//! that exists already (`conflict`) counts as done, so an interrupted run can simply be
//! started again.

use std::sync::Arc;

use crate::connection::{Connection, Registered};
use crate::metrics::{Counters, inc};
use crate::recorder::{Goal, Recorder};
use crate::scenario::{Env, for_each_concurrent};

pub async fn run(env: Arc<Env>, recorder: &mut Recorder, concurrency: usize) {
    let users = env.slice(1);
    recorder.begin(
        "provision",
        Goal::Count {
            total: users.end - users.start,
            done: |c: &Counters| c.accounts_created + c.accounts_existed,
        },
    );
    for_each_concurrent(users, concurrency, |i| {
        let env = env.clone();
        async move {
            let (user, password) = (env.accounts.username(i), env.accounts.password(i));
            match Connection::register(&env.opts, &user, &password).await {
                Ok(Registered::Created) => inc(&env.metrics.accounts_created),
                Ok(Registered::Existed) => inc(&env.metrics.accounts_existed),
                Err(e) => env.metrics.error(e.kind()),
            }
        }
    })
    .await;
    recorder.end();
}
