//! Clean-up after connection-managers that died without closing their
//! streams: their heartbeat expired in the registry while it still lists
//! sessions on them. Each replica ends the sessions of the accounts it owns,
//! exactly as if the client had disconnected, so contacts get unavailable
//! presence within a heartbeat TTL plus one interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use xmppd_grpc::{Node, StreamEnded, session_up};
use xmppd_registry::membership;

use crate::service::Core;
use crate::shards::{Job, Shards, Sink, Work};

pub async fn run(
    core: Arc<Core>,
    shards: Arc<Shards>,
    members: watch::Receiver<Vec<Node>>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        if let Err(error) = sweep(&core, &shards, &members).await {
            tracing::warn!(%error, "reaper sweep failed");
        }
    }
}

async fn sweep(
    core: &Core,
    shards: &Shards,
    members: &watch::Receiver<Vec<Node>>,
) -> anyhow::Result<()> {
    for node in core.registry.dead_nodes_with_sessions().await? {
        let sessions = core.registry.resources_on_node(&node).await?;
        let mut reaped = 0;
        for session in sessions {
            let owner = session.jid().bare().to_string();
            let mine = membership::owner(&owner, &members.borrow())
                .is_some_and(|node| node.id == core.settings().node_id);
            if !mine {
                continue;
            }
            reaped += 1;
            let ended = StreamEnded {
                full_jid: session.full_jid,
                node_id: session.node_id,
                conn_id: session.conn_id,
            };
            shards
                .dispatch(Job {
                    owner,
                    work: Some(Work::Frame(session_up::Frame::Ended(ended))),
                    sink: Sink::AnyRouter,
                    tries: 0,
                })
                .await;
        }
        if reaped > 0 {
            tracing::info!(node = %node, sessions = reaped, "ending sessions of a dead connection-manager");
            core.metrics.count("reaped");
        }
    }
    Ok(())
}
