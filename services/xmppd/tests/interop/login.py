"""Logs in once with slixmpp's own choice of SASL mechanism and reports
every SASL failure it met on the way, one line each, then the mechanism
that succeeded.

Usage: login.py HOST STARTTLS_PORT JID PASSWORD

Prints "failure CONDITION TEXT" per failure and "success MECHANISM";
exits 0 on success, 1 when the login did not succeed in time.
"""

import asyncio
import ssl
import sys

import slixmpp

TIMEOUT = 60


class Login(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        # The server's certificate is self-signed, and this is loopback.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.done = asyncio.Event()
        self.add_event_handler("failed_auth", self.on_failure)
        self.add_event_handler("failed_all_auth", lambda _: self.done.set())
        self.add_event_handler("session_start", self.on_start)

    def on_failure(self, failure):
        print(f"failure {failure['condition']} {failure['text']}", flush=True)

    def on_start(self, _):
        print(f"success {self['feature_mechanisms'].mech.name}", flush=True)
        self.done.set()


async def main(host, port, jid, password):
    client = Login(jid, password)
    client.connect((host, int(port)))
    try:
        await asyncio.wait_for(client.done.wait(), TIMEOUT)
    finally:
        client.disconnect()
    return 0 if client.authenticated else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main(*sys.argv[1:5])))
