"""The web console in a real browser: Debian's chromium, headless, driven
by selenium, against a running server; slixmpp plays the XMPP clients.

An administrator logs in, creates a user and finds it by searching; the
user's client logs in and its session shows on the sessions page with its
transport and address; the administrator kicks it (accepting the
confirmation) and the client is disconnected; a second client of the user
receives the announcement the administrator sends to everyone online. The
groups and rooms pages open without an error, the audit log shows the kick
and the announcement, and logging out leaves the console on its login form,
also after a reload.

With XMPPD_CONSOLE_SCREENSHOTS set to a folder, it saves dashboard.png,
users.png, sessions.png and announcements.png there.

Usage: console.py CONSOLE_URL ADMIN_JID ADMIN_PASSWORD XMPP_HOST XMPP_PORT

Exits 0 printing "console ok" when every step held, 1 with the reason on
stderr otherwise.
"""

import asyncio
import os
import queue
import shutil
import ssl
import sys
import tempfile
import threading
import time
import traceback

import slixmpp
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import Select, WebDriverWait

# Generous: a slow shared machine must not make the check flaky.
TIMEOUT = 30
USER = "carol"
USER_PASSWORD = "carol console password"
ANNOUNCEMENT = "The server restarts at noon."


class Failure(Exception):
    pass


class Client:
    """An XMPP client (slixmpp) on an event loop of its own thread, so the
    browser can be driven synchronously beside it."""

    def __init__(self, jid, password, host, port):
        self.started = threading.Event()
        self.disconnected = threading.Event()
        self.messages = queue.Queue()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self._run(self._connect(jid, password, host, port))
        if not self.started.wait(TIMEOUT):
            raise Failure(f"{jid}: no XMPP session within {TIMEOUT}s")

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(TIMEOUT)

    async def _connect(self, jid, password, host, port):
        self.xmpp = slixmpp.ClientXMPP(jid, password)
        # The server's certificate is self-signed, and this is loopback.
        self.xmpp.ssl_context.check_hostname = False
        self.xmpp.ssl_context.verify_mode = ssl.CERT_NONE
        self.xmpp.add_event_handler("session_start", self._on_start)
        self.xmpp.add_event_handler("disconnected", lambda _: self.disconnected.set())
        self.xmpp.add_event_handler("message", lambda message: self.messages.put(message))
        self.xmpp.connect((host, port))

    def _on_start(self, _):
        self.xmpp.send_presence()
        self.started.set()

    @property
    def jid(self):
        return str(self.xmpp.boundjid)

    def close(self):
        if not self.disconnected.is_set():
            self.loop.call_soon_threadsafe(self.xmpp.disconnect)
            self.disconnected.wait(TIMEOUT)
        self.loop.call_soon_threadsafe(self.loop.stop)


class Console:
    """The console in a headless chromium that reaches loopback only."""

    def __init__(self, url):
        self.url = url
        self.profile = tempfile.mkdtemp(prefix="xmppd-console-")
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        for argument in [
            "--headless=new",
            # Tests run as root in containers, where the sandbox cannot start.
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            # The server's certificate is self-signed.
            "--ignore-certificate-errors",
            "--window-size=1280,860",
            f"--user-data-dir={self.profile}",
            # Nothing but the server under test: no update checks, no sync,
            # and every host name but loopback unresolvable.
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        ]:
            options.add_argument(argument)
        self.driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        # Pages draw their tables again after each call: an element found a
        # moment ago may be gone.
        self.wait = WebDriverWait(self.driver, TIMEOUT, ignored_exceptions=[StaleElementReferenceException])

    def close(self):
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def find(self, css):
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def visible(self, css, what):
        try:
            return self.wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, css)))
        except TimeoutException:
            raise Failure(f"{what}: {css} not shown within {TIMEOUT}s; page: {self.text()}")

    def text(self):
        return self.driver.find_element(By.TAG_NAME, "body").text

    def open(self, page):
        self.driver.get(f"{self.url}#{page}")

    def outcome(self, expected, what):
        """Waits for the page's notice and checks it says `expected`."""
        notice = self.visible("main .notice", what)
        if "ok" not in notice.get_attribute("class").split() or expected not in notice.text:
            raise Failure(f"{what}: the console said {notice.text!r}, not {expected!r}")

    def confirm(self, what):
        try:
            alert = self.wait.until(EC.alert_is_present())
        except TimeoutException:
            raise Failure(f"{what}: no confirmation asked")
        question = alert.text
        alert.accept()
        return question

    def row(self, text, what):
        """The table row holding `text`, once it is shown."""
        xpath = f"//main//tr[td[contains(normalize-space(.), '{text}')]]"
        try:
            return self.wait.until(EC.visibility_of_element_located((By.XPATH, xpath)))
        except TimeoutException:
            raise Failure(f"{what}: no row with {text!r}; page: {self.text()}")

    def screenshot(self, name):
        folder = os.environ.get("XMPPD_CONSOLE_SCREENSHOTS")
        if folder:
            os.makedirs(folder, exist_ok=True)
            self.driver.save_screenshot(os.path.join(folder, f"{name}.png"))


def log_in(console, jid, password):
    console.driver.get(console.url)
    form = console.visible("#login-form", "login form")
    form.find_element(By.NAME, "jid").send_keys(jid)
    form.find_element(By.NAME, "password").send_keys(password)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    console.visible("#shell", "after logging in")
    console.wait.until(EC.text_to_be_present_in_element((By.ID, "who"), jid))


def dashboard(console):
    console.open("dashboard")
    console.visible("main .card", "dashboard")
    for heading in ["Connection-managers", "Routers", "Session replicas", "sessions", "messages per second"]:
        if heading not in console.text():
            raise Failure(f"dashboard: no {heading!r} in {console.text()!r}")
    console.screenshot("dashboard")


def create_user(console, jid):
    console.open("users")
    form = console.visible("#create-user", "users page")
    form.find_element(By.NAME, "jid").send_keys(jid)
    form.find_element(By.NAME, "password").send_keys(USER_PASSWORD)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    console.outcome(f"Created {jid}", "creating a user")
    console.row(jid, "the new user in the list")
    console.screenshot("users")
    console.find("main input[type=search]").send_keys(USER + Keys.ENTER)

    def only_the_user_listed(_):
        rows = [row.text for row in console.driver.find_elements(By.CSS_SELECTOR, "main tbody tr")]
        return len(rows) == 1 and jid in rows[0]

    try:
        console.wait.until(only_the_user_listed)
    except TimeoutException:
        raise Failure(f"searching for {USER!r}: the list shows {console.find('main tbody').text!r}")


def session_rows(console, jid):
    return console.driver.find_elements(By.XPATH, f"//main//tr[td[normalize-space(.)='{jid}']]")


def refresh_sessions_until(console, done, what):
    """Refreshes the sessions page until `done()`: sessions come and go
    after the page asked for them."""
    for _ in range(TIMEOUT):
        if done():
            return
        console.driver.find_element(By.XPATH, "//main//button[normalize-space(.)='Refresh']").click()
        time.sleep(1)
    raise Failure(f"sessions: {what} within {TIMEOUT}s; page: {console.text()}")


def kick(console, client):
    console.open("sessions")
    console.visible("main table", "sessions page")
    refresh_sessions_until(console, lambda: session_rows(console, client.jid), f"{client.jid} not listed")
    row = session_rows(console, client.jid)[0]
    cells = row.text
    for expected in ["tcp", "127.0.0.1"]:
        if expected not in cells:
            raise Failure(f"sessions: {expected!r} missing from the row {cells!r}")
    console.screenshot("sessions")
    row.find_element(By.XPATH, ".//button[normalize-space(.)='Kick']").click()
    question = console.confirm("kicking")
    if client.jid not in question:
        raise Failure(f"kicking: the confirmation {question!r} does not name {client.jid}")
    console.outcome(f"Ended {client.jid}", "kicking")
    if not client.disconnected.wait(TIMEOUT):
        raise Failure(f"kicking: {client.jid} still connected after {TIMEOUT}s")
    refresh_sessions_until(console, lambda: not session_rows(console, client.jid), f"{client.jid} still listed")


def announce(console, client, domain):
    console.open("announce")
    form = console.visible("#announce", "announcements page")
    Select(form.find_element(By.NAME, "audience")).select_by_value("online")
    form.find_element(By.NAME, "subject").send_keys("Maintenance")
    form.find_element(By.NAME, "body").send_keys(ANNOUNCEMENT)
    console.screenshot("announcements")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    console.confirm("announcing")
    console.outcome("Announcement sent: 1 message", "announcing")
    try:
        while True:
            message = client.messages.get(timeout=TIMEOUT)
            if message["body"] == ANNOUNCEMENT:
                break
    except queue.Empty:
        raise Failure(f"announcing: {client.jid} received nothing within {TIMEOUT}s")
    if message["from"].bare != domain or message["subject"] != "Maintenance":
        raise Failure(f"announcing: unexpected message {message}")


def groups_and_rooms(console):
    """The pages show their list or say the server has no such routes; never an error."""
    for page in ["groups", "rooms"]:
        console.open(page)
        console.wait.until(lambda _: console.driver.find_elements(By.CSS_SELECTOR, "main table, main .notice"))
        errors = console.driver.find_elements(By.CSS_SELECTOR, "main .notice.error")
        if errors:
            raise Failure(f"{page}: {errors[0].text}")


def audit(console, user_jid):
    console.open("audit")
    console.visible("main table", "audit log")
    for action in ["account.create", "session.end", "announce"]:
        console.row(action, "audit log")
    console.row(user_jid, "audit log")


def log_out(console):
    console.find("#logout").click()
    console.visible("#login-form", "after logging out")
    console.driver.refresh()
    console.visible("#login-form", "reloading after logging out")


def main():
    url, admin_jid, admin_password, host, port = sys.argv[1:6]
    domain = admin_jid.split("@", 1)[1]
    user_jid = f"{USER}@{domain}"
    console = Console(url)
    clients = []
    try:
        log_in(console, admin_jid, admin_password)
        dashboard(console)
        create_user(console, user_jid)
        clients.append(Client(f"{user_jid}/first", USER_PASSWORD, host, int(port)))
        kick(console, clients[-1])
        clients.append(Client(f"{user_jid}/second", USER_PASSWORD, host, int(port)))
        announce(console, clients[-1], domain)
        groups_and_rooms(console)
        audit(console, user_jid)
        log_out(console)
    finally:
        for client in clients:
            client.close()
        console.close()
    print("console ok")


if __name__ == "__main__":
    try:
        main()
    except Failure as failure:
        print(f"console check failed: {failure}", file=sys.stderr)
        sys.exit(1)
    except Exception:
        traceback.print_exc()
        sys.exit(1)
