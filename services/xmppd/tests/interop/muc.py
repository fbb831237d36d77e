"""Group chat interop of xmppd with slixmpp's XEP-0045 plugin.

Alice creates a reserved room, reads and submits its configuration form,
and Bob joins it; they exchange groupchat messages (each reflected to its
sender too) and check that none is lost and all arrive in order; Alice sets
the subject; Bob leaves and joins again asking for the last messages of
history; the service lists the room.

Usage: muc.py HOST PORT ROOM JID1 PASSWORD1 JID2 PASSWORD2

Exits 0 when everything held, 1 with a one-line reason on stderr otherwise.
"""

import asyncio
import logging
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout, PresenceError

MESSAGES = 50
HISTORY = 5
# Generous: a slow shared machine must not make the check flaky.
TIMEOUT = 60


class Failure(Exception):
    pass


class Bot(slixmpp.ClientXMPP):
    def __init__(self, jid, password, room):
        super().__init__(jid, password)
        # The server's certificate is self-signed, and this is loopback.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0045")
        self.room = room
        self.received = []
        self.subjects = []
        self.add_event_handler("groupchat_message", self.on_groupchat)
        self.add_event_handler("groupchat_subject", self.on_subject)

    def on_groupchat(self, message):
        if message["body"] and message.get_plugin("delay", check=True) is None:
            self.received.append((message["from"].resource, message["body"]))

    def on_subject(self, message):
        self.subjects.append(message["subject"])

    async def start(self, address):
        self.connect(address)
        await self.wait_until("session_start", TIMEOUT)
        self.send_presence()

    async def join(self, nick, **history):
        return await self["xep_0045"].join_muc_wait(
            slixmpp.JID(self.room), nick, timeout=TIMEOUT, **history
        )


def status_codes(presence):
    return sorted(int(code) for code in presence["muc"]["status_codes"])


async def until(what, condition):
    for _ in range(TIMEOUT * 10):
        if condition():
            return
        await asyncio.sleep(0.1)
    raise Failure(f"timed out waiting for {what}")


async def run(host, port, room, jid1, password1, jid2, password2):
    alice = Bot(jid1, password1, room)
    bob = Bot(jid2, password2, room)
    await alice.start((host, port))
    await bob.start((host, port))
    muc = alice["xep_0045"]

    own, _, _, _ = await alice.join("Alice")
    if status_codes(own) != [110, 201]:
        raise Failure(f"a new room's self-presence has codes {status_codes(own)}")
    form = await muc.get_room_config(slixmpp.JID(room), timeout=TIMEOUT)
    fields = form.get_fields()
    if "muc#roomconfig_roomname" not in fields:
        raise Failure(f"no room name in the configuration form: {list(fields)}")
    fields["muc#roomconfig_roomname"]["value"] = "Interop"
    await muc.set_room_config(slixmpp.JID(room), form, timeout=TIMEOUT)

    await bob.join("Bob")
    await until("Bob in Alice's roster of the room", lambda: "Bob" in muc.get_roster(room))

    for i in range(MESSAGES):
        alice.send_message(mto=room, mbody=f"a{i}", mtype="groupchat")
        bob.send_message(mto=room, mbody=f"b{i}", mtype="groupchat")
    for bot in (alice, bob):
        await until(
            f"{bot.boundjid.bare} receiving every message",
            lambda: len(bot.received) >= 2 * MESSAGES,
        )
        for nick, prefix in (("Alice", "a"), ("Bob", "b")):
            got = [body for sender, body in bot.received if sender == nick]
            expected = [f"{prefix}{i}" for i in range(MESSAGES)]
            if got != expected:
                raise Failure(f"{bot.boundjid.bare} got {nick}'s {got[:10]}...")

    muc.set_subject(slixmpp.JID(room), "Interop subject")
    await until("the subject reaching Bob", lambda: "Interop subject" in bob.subjects)

    bob["xep_0045"].leave_muc(slixmpp.JID(room), "Bob")
    await until("Bob gone", lambda: "Bob" not in muc.get_roster(room))
    _, subject, occupants, history = await bob.join("Bob", maxstanzas=HISTORY)
    bodies = [message["body"] for message in history]
    # The room's own order, in which every occupant got the messages: the two
    # senders' messages interleave however they reached the room.
    last = [body for _, body in alice.received][-HISTORY:]
    if bodies != last:
        raise Failure(f"history on join: {bodies}, the room's last: {last}")
    if subject["subject"] != "Interop subject":
        raise Failure(f"subject on join: {subject['subject']!r}")

    items = await alice["xep_0030"].get_items(
        jid=slixmpp.JID(room).domain, timeout=TIMEOUT
    )
    rooms = {item[0]: item[2] for item in items["disco_items"]["items"]}
    if rooms.get(room) != "Interop":
        raise Failure(f"the service lists {rooms}")

    for bot in (alice, bob):
        bot.disconnect()


def main():
    if len(sys.argv) != 8:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, room, jid1, password1, jid2, password2 = sys.argv[1:]
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(message)s")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        loop.run_until_complete(run(host, int(port), room, jid1, password1, jid2, password2))
    except Failure as failure:
        print(f"interop failure: {failure}", file=sys.stderr)
        return 1
    except (IqError, IqTimeout) as error:
        print(f"interop failure: IQ {error.iq['id']} answered {error.iq}", file=sys.stderr)
        return 1
    except PresenceError as error:
        print(f"interop failure: presence error {error.presence}", file=sys.stderr)
        return 1
    except asyncio.TimeoutError:
        print("interop failure: a join timed out", file=sys.stderr)
        return 1
    print(f"interop ok: muc, {MESSAGES} messages each, history {HISTORY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
