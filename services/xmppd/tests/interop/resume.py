"""Interop check of xmppd's XEP-0198 stream management with slixmpp's own
xep_0198 plugin.

Alice enables stream management with resumption; her connection is then
cut without a stream close, as a network would; a message Bob sends her
meanwhile waits for her; slixmpp reconnects and resumes the session, as
the same full JID, and receives the message, once.

Usage: resume.py HOST STARTTLS_PORT JID1 PASSWORD1 JID2 PASSWORD2

Prints "interop ok: resumed" and exits 0 when everything held; exits 1
with a one-line reason on stderr otherwise.
"""

import asyncio
import ssl
import sys

import slixmpp

# Generous: a slow shared machine must not make the check flaky.
TIMEOUT = 60


class Failure(Exception):
    pass


class Bot(slixmpp.ClientXMPP):
    def __init__(self, jid, password, stream_management):
        super().__init__(jid, password)
        # The server's certificate is self-signed, and this is loopback.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        if stream_management:
            self.register_plugin("xep_0198")
        self.received = []
        self.got_message = asyncio.Event()
        self.add_event_handler("message", self.on_message)

    def on_message(self, message):
        if message["body"]:
            self.received.append(message["body"])
            self.got_message.set()

    async def until(self, event, action=None):
        """Waits for `event`, listening from before `action` runs."""
        waiting = asyncio.ensure_future(self.wait_until(event, TIMEOUT))
        if action is not None:
            action()
        try:
            await waiting
        except asyncio.TimeoutError:
            raise Failure(f"{self.boundjid.bare}: no {event} within {TIMEOUT}s")


async def run(host, port, alice_jid, alice_password, bob_jid, bob_password):
    address = (host, int(port))
    alice = Bot(alice_jid, alice_password, True)
    bob = Bot(bob_jid, bob_password, False)
    await alice.until("sm_enabled", lambda: alice.connect(address))
    stream_management = alice.plugin["xep_0198"]
    if not stream_management.sm_id:
        raise Failure("the server offered no resumption")
    full_jid = alice.boundjid.full
    await bob.until("session_start", lambda: bob.connect(address))

    await alice.until("disconnected", alice.abort)
    bob.send_message(mto=full_jid, mbody="while you were away", mtype="chat")
    # Let the message reach the server while nobody is connected for Alice.
    await asyncio.sleep(1)
    await alice.until("session_resumed", lambda: alice.connect(address))
    if alice.boundjid.full != full_jid:
        raise Failure(f"resumed as {alice.boundjid.full}, not {full_jid}")
    try:
        await asyncio.wait_for(alice.got_message.wait(), TIMEOUT)
    except asyncio.TimeoutError:
        raise Failure("the message sent while away never arrived")
    # Anything sent twice would have arrived by now.
    await asyncio.sleep(1)
    if alice.received != ["while you were away"]:
        raise Failure(f"received {alice.received}")
    alice.disconnect()
    bob.disconnect()
    print("interop ok: resumed", flush=True)


def main(argv):
    try:
        asyncio.run(run(*argv[1:7]))
    except Failure as failure:
        print(f"resume.py: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
