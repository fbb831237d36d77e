// A third-party client over WebSocket: @xmpp/client (xmpp.js) logs in at
// the service URL given, sends one message to a peer, and waits for the
// peer's answer. Prints what it did, one line per step, for the test to read;
// exits non-zero on any error.
//
// Usage: node xmpp_client.mjs SERVICE USERNAME PASSWORD PEER
import { client, xml } from "@xmpp/client";

const [service, username, password, peer] = process.argv.slice(2);
const xmpp = client({ service, domain: "localhost", resource: "web", username, password });

const fail = (error) => {
  console.log(`error ${error?.condition ?? ""} ${error?.message ?? error}`);
  process.exit(1);
};
xmpp.on("error", fail);

xmpp.on("stanza", async (stanza) => {
  const body = stanza.is("message") ? stanza.getChildText("body") : null;
  if (body === null) return;
  console.log(`received from=${stanza.attrs.from} body=${body}`);
  await xmpp.stop();
  process.exit(0);
});

xmpp.on("online", async (address) => {
  console.log(`online ${address}`);
  await xmpp.send(xml("presence"));
  await xmpp.send(
    xml("message", { to: peer, type: "chat", id: "interop-1" }, xml("body", {}, "hello from xmpp.js")),
  );
});

setTimeout(() => fail("timed out"), 30000).unref();
xmpp.start().catch(fail);
