//! Account features every simulated user turns on right after its login, as a client
//! configured for them would: message carbons (XEP-0280) and a blocklist (XEP-0191). They
//! make the server keep and consult a per-account policy on every message, so a chat run
//! with them measures what that costs; the scenarios themselves do not change.
//!
//! A server without a feature answers its request with an error: the error is counted by its
//! step and condition (`carbons:service-unavailable`, `block:feature-not-implemented`, ...)
//! and the session goes on without the feature. Only a broken stream ends the login.

use std::time::Duration;

use xmppd_protocol::xml::escape_attr;

use crate::connection::{Connection, XmppError, stanza_error_condition};
use crate::metrics::Metrics;
use crate::scenario::answer_iq;

pub const NS_BLOCKING: &str = "urn:xmpp:blocking";
pub const NS_CARBONS: &str = "urn:xmpp:carbons:2";

/// What each user turns on after binding (`--carbons`, `--blocklist N`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountFeatures {
    /// Enable message carbons (`<enable xmlns='urn:xmpp:carbons:2'/>`).
    pub carbons: bool,
    /// Retrieve the blocklist, then block this many JIDs, none of them a user of the run.
    pub blocklist: u32,
}

impl AccountFeatures {
    pub fn any(&self) -> bool {
        self.carbons || self.blocklist > 0
    }

    /// The JIDs user `i` blocks: `blocked-<i>-<k>@<domain>`, strangers to every pair, room
    /// and roster of the run, so that no scenario's traffic is refused.
    pub fn blocked_jids(&self, i: u64, domain: &str) -> impl Iterator<Item = String> + '_ {
        let domain = domain.to_owned();
        (0..self.blocklist).map(move |k| format!("blocked-{i}-{k}@{domain}"))
    }

    /// The requests user `i` makes, in order: the blocklist first (which also subscribes this
    /// resource to blocklist pushes, as XEP-0191 §3.1 has it), the block, then carbons.
    pub fn requests(&self, i: u64, domain: &str) -> Vec<(&'static str, String)> {
        let mut requests = Vec::new();
        if self.blocklist > 0 {
            requests.push((
                "blocklist",
                format!("<iq type='get' id='blocklist'><blocklist xmlns='{NS_BLOCKING}'/></iq>"),
            ));
            let items: String = self
                .blocked_jids(i, domain)
                .map(|jid| format!("<item jid='{}'/>", escape_attr(&jid)))
                .collect();
            requests.push((
                "block",
                format!(
                    "<iq type='set' id='block'><block xmlns='{NS_BLOCKING}'>{items}</block></iq>"
                ),
            ));
        }
        if self.carbons {
            requests.push((
                "carbons",
                format!("<iq type='set' id='carbons'><enable xmlns='{NS_CARBONS}'/></iq>"),
            ));
        }
        requests
    }

    /// Makes user `i`'s requests on its fresh session. An error answer or a request left
    /// unanswered for `step_timeout` is counted and skipped; a stream that breaks is returned.
    pub async fn enable(
        &self,
        conn: &mut Connection,
        i: u64,
        domain: &str,
        step_timeout: Duration,
        metrics: &Metrics,
    ) -> Result<(), XmppError> {
        for (step, request) in self.requests(i, domain) {
            match request_reply(conn, step, &request, step_timeout).await {
                Ok(()) => {}
                Err(e @ (XmppError::Iq { .. } | XmppError::Timeout(_))) => metrics.error(e.kind()),
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Sends `request` and waits for the answer with its id, answering the server's own requests
/// meanwhile (a blocklist push may come before the block's result).
async fn request_reply(
    conn: &mut Connection,
    step: &'static str,
    request: &str,
    step_timeout: Duration,
) -> Result<(), XmppError> {
    conn.send(request.as_bytes()).await?;
    let deadline = tokio::time::Instant::now() + step_timeout;
    loop {
        let stanza = tokio::time::timeout_at(deadline, conn.next_stanza())
            .await
            .map_err(|_| XmppError::Timeout(step))??;
        if stanza.name() != "iq" {
            continue;
        }
        match stanza.stanza_type() {
            Some("get" | "set") => answer_iq(conn, &stanza).await?,
            Some("result") if stanza.id() == Some(step) => return Ok(()),
            Some("error") if stanza.id() == Some(step) => {
                return Err(XmppError::Iq {
                    step,
                    condition: stanza_error_condition(&stanza),
                });
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_feature_makes_no_request() {
        assert!(
            AccountFeatures::default()
                .requests(3, "localhost")
                .is_empty()
        );
        assert!(!AccountFeatures::default().any());
    }

    #[test]
    fn each_user_blocks_strangers_of_its_own() {
        let features = AccountFeatures {
            carbons: true,
            blocklist: 2,
        };
        let requests = features.requests(7, "localhost");
        let steps: Vec<_> = requests.iter().map(|(step, _)| *step).collect();
        assert_eq!(steps, ["blocklist", "block", "carbons"]);
        assert_eq!(
            requests[1].1,
            "<iq type='set' id='block'><block xmlns='urn:xmpp:blocking'>\
             <item jid='blocked-7-0@localhost'/><item jid='blocked-7-1@localhost'/></block></iq>"
        );
        assert_eq!(
            requests[2].1,
            "<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>"
        );
    }
}
