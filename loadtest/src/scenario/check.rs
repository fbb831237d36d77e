//! `check`: a deployment's smoke test, not a load. Users 0 and 1 log in, user 0 sends user 1
//! a chat message, and user 1 must receive it; any step that fails ends the run with an
//! error naming it (the Helm chart's `helm test` runs it).

use std::time::Duration;

use anyhow::Context as _;

use crate::connection::Connection;
use crate::scenario::Env;

pub async fn run(env: &Env, timeout: Duration) -> anyhow::Result<()> {
    let accounts = &env.accounts;
    let login = |i| async move {
        Connection::login(&env.opts, &accounts.username(i), &accounts.password(i))
            .await
            .with_context(|| format!("{} cannot log in", accounts.bare_jid(i)))
    };
    let mut sender = login(0).await?;
    let mut recipient = login(1).await?;
    let id = format!("check-{}", std::process::id());
    let message = format!(
        "<message to='{}' id='{id}' type='chat'><body>xmppd-loadtest check</body></message>",
        recipient.jid
    );
    sender
        .send(message.as_bytes())
        .await
        .context("sending the message")?;
    let received = async {
        loop {
            let stanza = recipient.next_stanza().await?;
            if stanza.name() == "message" && stanza.id() == Some(id.as_str()) {
                return anyhow::Ok(stanza.stanza_type() != Some("error"));
            }
        }
    };
    let delivered = tokio::time::timeout(timeout, received)
        .await
        .with_context(|| {
            format!(
                "{} did not receive the message in {timeout:?}",
                recipient.jid
            )
        })?
        .context("waiting for the message")?;
    anyhow::ensure!(delivered, "the message came back as an error");
    println!(
        "ok: {} and {} logged in, and a message went from one to the other",
        sender.jid, recipient.jid
    );
    sender.close().await;
    recipient.close().await;
    Ok(())
}
