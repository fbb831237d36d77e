"""Interop check of xmppd with a third-party client library, slixmpp.

Two users log in over real TLS (one with STARTTLS, one with direct TLS,
XEP-0368) with SCRAM, add each other to their rosters, subscribe to each
other, check that each sees the other's presence, exchange messages both
ways checking that none is lost and all arrive in order, then run a
disco#info and a ping against the server.

Usage: chat.py HOST STARTTLS_PORT DIRECT_TLS_PORT JID1 PASSWORD1 JID2 PASSWORD2

Exits 0 when everything held, 1 with a one-line reason on stderr otherwise.
"""

import asyncio
import logging
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

MESSAGES = 100
# Generous: a slow shared machine must not make the check flaky.
TIMEOUT = 60


class Failure(Exception):
    pass


class Bot(slixmpp.ClientXMPP):
    def __init__(self, jid, password, mechanism):
        super().__init__(jid, password, sasl_mech=mechanism)
        # The server's certificate is self-signed, and this is loopback.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.mechanism = mechanism
        self.received = []
        self.all_received = asyncio.Event()
        self.online = {}
        self.auth_failed = asyncio.Event()
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence_available", self.on_available)
        self.add_event_handler("failed_all_auth", lambda _: self.auth_failed.set())

    def on_message(self, message):
        if message["type"] in ("chat", "normal") and message["body"]:
            self.received.append(message["body"])
            if len(self.received) >= MESSAGES:
                self.all_received.set()

    def on_available(self, presence):
        self.online.setdefault(presence["from"].bare, asyncio.Event()).set()

    async def start(self, address, direct_tls):
        self.connect(address, use_ssl=direct_tls)
        started = asyncio.ensure_future(self.wait_until("session_start", TIMEOUT))
        failed = asyncio.ensure_future(self.auth_failed.wait())
        done, pending = await asyncio.wait(
            [started, failed], timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        for task in pending:
            task.cancel()
        if failed in done:
            raise Failure(f"{self.boundjid.bare}: authentication failed")
        if started not in done:
            raise Failure(f"{self.boundjid.bare}: no session within {TIMEOUT}s")
        mechanism = self["feature_mechanisms"].mech.name
        if mechanism != self.mechanism:
            raise Failure(f"{self.boundjid.bare}: authenticated with {mechanism}, not {self.mechanism}")
        if not self.is_secure():
            raise Failure(f"{self.boundjid.bare}: the stream is not encrypted")
        self.send_presence()
        await self.get_roster(timeout=TIMEOUT)

    def is_secure(self):
        return isinstance(self.socket, (ssl.SSLSocket, ssl.SSLObject))

    async def sees_online(self, contact):
        event = self.online.setdefault(contact, asyncio.Event())
        try:
            await asyncio.wait_for(event.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            raise Failure(f"{self.boundjid.bare} never saw {contact} available")


async def until(what, condition):
    for _ in range(TIMEOUT * 10):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise Failure(f"timed out waiting for {what}")


async def run(host, starttls_port, tls_port, jid1, password1, jid2, password2):
    alice = Bot(jid1, password1, "SCRAM-SHA-256")
    bob = Bot(jid2, password2, "SCRAM-SHA-1")
    await alice.start((host, starttls_port), direct_tls=False)
    await bob.start((host, tls_port), direct_tls=True)
    a, b = alice.boundjid.bare, bob.boundjid.bare

    # Roster add, then a subscription request; slixmpp's defaults approve
    # and subscribe back, so the result is mutual.
    await alice.update_roster(b, name="Bob", groups=["Friends"], timeout=TIMEOUT)
    await until(f"{b} in {a}'s roster", lambda: b in alice.client_roster)
    alice.send_presence(pto=b, ptype="subscribe")
    for bot, contact in ((alice, b), (bob, a)):
        await until(
            f"{contact} subscription both in {bot.boundjid.bare}'s roster",
            lambda: contact in bot.client_roster
            and bot.client_roster[contact]["subscription"] == "both",
        )
    await alice.sees_online(b)
    await bob.sees_online(a)
    if alice.client_roster[b]["name"] != "Bob":
        raise Failure(f"roster name of {b} lost: {alice.client_roster[b]['name']!r}")

    for i in range(MESSAGES):
        alice.send_message(mto=b, mbody=f"a{i}", mtype="chat")
        bob.send_message(mto=a, mbody=f"b{i}", mtype="chat")
    for bot in (alice, bob):
        try:
            await asyncio.wait_for(bot.all_received.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            pass
    for bot, prefix in ((bob, "a"), (alice, "b")):
        expected = [f"{prefix}{i}" for i in range(MESSAGES)]
        if bot.received != expected:
            missing = sorted(set(expected) - set(bot.received))
            raise Failure(
                f"{bot.boundjid.bare} received {len(bot.received)} of {MESSAGES} messages; "
                f"missing {missing[:10]}, order {bot.received[:10]}..."
            )

    info = await alice["xep_0030"].get_info(jid=alice.boundjid.domain, timeout=TIMEOUT)
    features = set(info["disco_info"]["features"])
    for feature in ("urn:xmpp:ping", "jabber:iq:version", "http://jabber.org/protocol/disco#info"):
        if feature not in features:
            raise Failure(f"disco#info lacks {feature}: {sorted(features)}")
    # send_ping, unlike ping, reports an error answer from the server.
    await bob["xep_0199"].send_ping(slixmpp.JID(bob.boundjid.domain), timeout=TIMEOUT)

    for bot in (alice, bob):
        bot.disconnect()


def main():
    if len(sys.argv) != 8:
        print(__doc__, file=sys.stderr)
        return 2
    host, starttls_port, tls_port, jid1, password1, jid2, password2 = sys.argv[1:]
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(
            run(host, int(starttls_port), int(tls_port), jid1, password1, jid2, password2)
        )
    except Failure as failure:
        print(f"interop failure: {failure}", file=sys.stderr)
        return 1
    except (IqError, IqTimeout) as error:
        print(f"interop failure: IQ {error.iq['id']} answered {error.iq}", file=sys.stderr)
        return 1
    print(f"interop ok: {MESSAGES} messages each way, in order")
    return 0


if __name__ == "__main__":
    sys.exit(main())
