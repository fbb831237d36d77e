//! `login`: a connect storm. Each attempt connects, negotiates TLS and SASL, binds a resource
//! and logs out; the login time is connect to bound resource. Open loop starts attempts at a
//! fixed rate whatever the server does; closed loop keeps a fixed number in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use crate::metrics::{Counters, inc};
use crate::recorder::{Goal, Recorder};
use crate::scenario::{Env, for_each_concurrent};

/// How attempts are paced.
#[derive(Clone, Copy, Debug)]
pub enum Pace {
    /// Attempts started per second.
    Rate(f64),
    /// Attempts in flight.
    Concurrency(usize),
}

pub async fn run(env: Arc<Env>, recorder: &mut Recorder, count: u64, pace: Pace) {
    let users = env.slice(1);
    let population = users.end - users.start;
    if population == 0 {
        return;
    }
    recorder.begin(
        "login",
        Goal::Count {
            total: count,
            done: |c: &Counters| c.logins + c.login_failures,
        },
    );
    // Attempt k logs in user k modulo this worker's slice, so a count larger than the
    // population logs the same accounts in again.
    let attempt = move |env: Arc<Env>, k: u64| async move {
        let i = users.start + k % population;
        if let Ok(conn) = env.login(i).await {
            conn.close().await;
            inc(&env.metrics.logouts);
        }
    };
    match pace {
        Pace::Concurrency(n) => {
            for_each_concurrent(0..count, n, |k| attempt(env.clone(), k)).await;
        }
        Pace::Rate(rate) => {
            let mut running = JoinSet::new();
            let mut timer = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            for k in 0..count {
                timer.tick().await;
                running.spawn(attempt(env.clone(), k));
                // Reap finished attempts so the set does not grow with the run.
                while running.try_join_next().is_some() {}
            }
            while running.join_next().await.is_some() {}
        }
    }
    recorder.end();
}
