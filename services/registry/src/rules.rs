//! What bind, unbind and presence updates do to one resource entry, decided
//! from its current value. The memory registry applies a decision under its
//! lock, the Redis registry with a compare-and-swap, so both keep one set of
//! rules.

use bytes::Bytes;
use xmppd_grpc::{BoundResource, ResourceFlags};

/// The write to make to a resource entry, and what to answer the caller.
pub(crate) enum Change<T> {
    Keep(T),
    Put(BoundResource, T),
    Delete(T),
}

/// A new binding always wins; the one it replaced goes back to be kicked.
pub(crate) fn bind(
    session: &BoundResource,
    current: Option<&BoundResource>,
) -> Change<Option<BoundResource>> {
    // The Redis registry tells "no node" by an empty id.
    debug_assert!(!session.node_id.is_empty(), "session bound on no node");
    Change::Put(session.clone(), current.cloned())
}

pub(crate) fn unbind(
    node_id: &str,
    conn_id: u64,
    current: Option<&BoundResource>,
) -> Change<Option<BoundResource>> {
    match current {
        Some(held) if held.node_id == node_id && held.conn_id == conn_id => {
            Change::Delete(Some(held.clone()))
        }
        _ => Change::Keep(None),
    }
}

pub(crate) fn set_presence(
    conn_id: u64,
    available: bool,
    priority: i32,
    presence: &Bytes,
    current: Option<&BoundResource>,
) -> Change<bool> {
    match current {
        Some(held) if held.conn_id == conn_id => {
            let updated = BoundResource {
                available,
                priority,
                presence: presence.clone(),
                ..held.clone()
            };
            Change::Put(updated, true)
        }
        _ => Change::Keep(false),
    }
}

pub(crate) fn set_flags(
    conn_id: u64,
    flags: ResourceFlags,
    current: Option<&BoundResource>,
) -> Change<bool> {
    match current {
        Some(held) if held.conn_id == conn_id => {
            let updated = BoundResource {
                flags: Some(flags),
                ..held.clone()
            };
            Change::Put(updated, true)
        }
        _ => Change::Keep(false),
    }
}

/// Whether a resource that sent directed presence to `count` others (`to`
/// among them when `known`) may not add `to`: at `max` (0: no limit) it keeps
/// those it has. The Redis registry's `ADD_DIRECTED_LUA` applies the same rule.
pub(crate) fn directed_is_full(count: usize, known: bool, max: u32) -> bool {
    max != 0 && !known && count >= max as usize
}
