// The console's entry point: the login form, the navigation between pages
// (by the URL's fragment, #users), and logging out.

import * as api from "./api.js";
import { describe, fields } from "./ui.js";
import * as dashboard from "./dashboard.js";
import * as users from "./users.js";
import * as sessions from "./sessions.js";
import * as announce from "./announce.js";
import * as groups from "./groups.js";
import * as rooms from "./rooms.js";
import * as audit from "./audit.js";

const PAGES = { dashboard, users, sessions, announce, groups, rooms, audit };

const loginSection = document.getElementById("login");
const loginForm = document.getElementById("login-form");
const loginError = document.getElementById("login-error");
const shell = document.getElementById("shell");
const main = document.getElementById("page");

// What the shown page asks to run when it is left (a refresh timer).
let leavePage = null;

function showLogin(message) {
  leaveCurrentPage();
  shell.hidden = true;
  loginSection.hidden = false;
  loginError.textContent = message || "";
  loginForm.elements.password.value = "";
}

function showShell(jid) {
  document.getElementById("who").textContent = jid;
  loginSection.hidden = true;
  shell.hidden = false;
  route();
}

function leaveCurrentPage() {
  if (leavePage) leavePage();
  leavePage = null;
}

function route() {
  if (shell.hidden) return;
  const name = location.hash.slice(1) in PAGES ? location.hash.slice(1) : "dashboard";
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("current", link.getAttribute("href") === "#" + name);
  }
  leaveCurrentPage();
  leavePage = PAGES[name].render(main) || null;
}

loginForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const { jid, password } = fields(loginForm);
  loginError.textContent = "";
  try {
    const login = await api.login(jid, password);
    showShell(login.jid);
  } catch (error) {
    showLogin(describe(error));
  }
});

document.getElementById("logout").addEventListener("click", async () => {
  try {
    await api.logout();
    showLogin("Logged out.");
  } catch (error) {
    showLogin(describe(error));
  }
});

api.onLoginLost((error) => showLogin(`Please log in again: ${describe(error)}`));
window.addEventListener("hashchange", route);

async function start() {
  try {
    const me = await api.currentLogin();
    if (me) showShell(me.jid);
    else showLogin();
  } catch (error) {
    showLogin(describe(error));
  }
}

start();
