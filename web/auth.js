"use strict";

// Accounts on the page. With auth_mode "token" (from /config.json) the login form comes before anything
// else, the bearer token lives in sessionStorage, and every /api request carries it; a 401 anywhere
// brings the form back. With auth_mode "off" nothing is asked. `window.voiceAuth` is what the other
// scripts use: api() for JSON requests with the server's one error shape, headers() and withToken().

window.voiceAuth = (() => {
  const TOKEN_KEY = "voice-agent.token";
  const USER_KEY = "voice-agent.user";

  const ui = {
    app: document.getElementById("app"),
    view: document.getElementById("login-view"),
    form: document.getElementById("login-form"),
    name: document.getElementById("login-name"),
    password: document.getElementById("login-password"),
    error: document.getElementById("login-error"),
    register: document.getElementById("register"),
    account: document.getElementById("account"),
    accountName: document.getElementById("account-name"),
    logout: document.getElementById("logout"),
  };

  const listeners = [];
  let tokenMode = false;

  // An error the server answered ({"error": ...} with a 4xx/5xx status), or a network failure (status 0).
  class ApiError extends Error {
    constructor(message, status, detail = null) {
      super(message);
      this.name = "ApiError";
      this.status = status;
      this.detail = detail;
    }
  }

  function token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function headers() {
    const current = token();
    return current ? { Authorization: `Bearer ${current}` } : {};
  }

  // For what cannot send headers (an <audio> src, a download link): the API takes ?access_token= on GET.
  function withToken(url) {
    const current = token();
    if (!current) return url;
    return `${url}${url.includes("?") ? "&" : "?"}access_token=${encodeURIComponent(current)}`;
  }

  function signedIn() {
    return !tokenMode || Boolean(token());
  }

  // Listeners hear `true` when the page may be used (auth off, or logged in) and `false` on logging out.
  function onChange(listener) {
    listeners.push(listener);
  }

  function notify() {
    const state = signedIn();
    for (const listener of listeners) listener(state);
  }

  async function api(path, { method = "GET", json, body } = {}) {
    const init = { method, headers: headers(), cache: "no-store" };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (body !== undefined) {
      init.body = body;
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError("Cannot reach the server.", 0);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = data?.error ?? `The server answered HTTP ${response.status}.`;
      if (response.status === 401 && !path.startsWith("/api/auth/login")) expired(message);
      throw new ApiError(message, response.status, data?.detail ?? null);
    }
    return data;
  }

  // The token is gone (expired, revoked, logged out elsewhere): back to the login form.
  function expired(message) {
    if (!tokenMode) return;
    clearSession();
    showLogin(message ?? "Your session has ended. Log in again.");
  }

  function clearSession() {
    sessionStorage.removeItem(TOKEN_KEY);
    sessionStorage.removeItem(USER_KEY);
  }

  function showLogin(message) {
    ui.app.dataset.auth = "login";
    ui.view.hidden = false;
    ui.account.hidden = true;
    setLoginError(message);
    ui.password.value = "";
    ui.name.focus();
    notify();
  }

  function showSignedIn(user) {
    delete ui.app.dataset.auth;
    ui.view.hidden = true;
    ui.account.hidden = !tokenMode;
    ui.accountName.textContent = user?.name ?? "";
    setLoginError("");
    notify();
  }

  function setLoginError(message) {
    ui.error.textContent = message ?? "";
    ui.error.hidden = !message;
  }

  function credentials() {
    return { name: ui.name.value.trim(), password: ui.password.value };
  }

  async function logIn() {
    const reply = await api("/api/auth/login", { method: "POST", json: credentials() });
    sessionStorage.setItem(TOKEN_KEY, reply.token);
    sessionStorage.setItem(USER_KEY, JSON.stringify(reply.user));
    showSignedIn(reply.user);
  }

  async function withForm(action) {
    if (!ui.form.reportValidity()) return;
    setLoginError("");
    ui.form.setAttribute("aria-busy", "true");
    try {
      await action();
    } catch (err) {
      setLoginError(err.message);
    } finally {
      ui.form.removeAttribute("aria-busy");
    }
  }

  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    withForm(logIn);
  });

  ui.register.addEventListener("click", () =>
    withForm(async () => {
      await api("/api/auth/register", { method: "POST", json: credentials() });
      await logIn();
    }),
  );

  ui.logout.addEventListener("click", async () => {
    try {
      await api("/api/auth/logout", { method: "POST" });
    } catch {
      // The token may already be invalid: logging out locally is what matters.
    }
    clearSession();
    showLogin("");
  });

  function storedUser() {
    try {
      return JSON.parse(sessionStorage.getItem(USER_KEY) ?? "null");
    } catch {
      return null;
    }
  }

  async function loadConfig() {
    try {
      const response = await fetch("/config.json", { cache: "no-store" });
      return response.ok ? await response.json() : {};
    } catch {
      return {};
    }
  }

  // Resolves with /config.json once the page knows whether it must ask for a login.
  const config = loadConfig().then(async (loaded) => {
    tokenMode = loaded.auth_mode === "token";
    ui.register.hidden = !loaded.allow_registration;
    if (!tokenMode) {
      showSignedIn(null);
    } else if (!token()) {
      showLogin("");
    } else {
      // A token kept from earlier in this tab may have expired since: a 401 here shows the form.
      showSignedIn(storedUser());
      api("/api/auth/me").then(
        (reply) => {
          ui.accountName.textContent = reply.user.name;
        },
        () => {},
      );
    }
    return loaded;
  });

  return { ApiError, api, config, expired, headers, onChange, signedIn, token, withToken };
})();
