/*
 * The stand-in of NS8 cluster-admin's `core` (window.core), which module UIs
 * reach as window.parent.core (spec section 6, UI):
 *
 * - core.$root.apiUrl, the api-server base URL; the login token in
 *   localStorage "loginInfo" (the module's TaskService reads it there);
 * - core.$root: an event bus with Vue 2's $on/$once/$off/$emit, on which a
 *   task's outcome is emitted as <action>-completed-<eventId> (taskContext,
 *   taskResult), -aborted- (taskResult, taskContext), -validation-failed-
 *   (validationErrors, taskContext), -validation-ok- (task) and, with
 *   extra.isProgressNotified, -progress- (progress, taskContext);
 * - the feed: the api-server websocket's task messages; the task's context is
 *   fetched once, its status on a terminal state; a task silent for 8.1 s
 *   while pending or running is polled (the polling fallback);
 * - core.$route / core.$router over this page's hash (#/apps/<id>?page=...),
 *   core.$t / core.$te, window.CONFIG.PRODUCT_NAME.
 */
(function () {
  "use strict";

  const API_URL = window.location.origin + "/cluster-admin/api";
  const WS_URL = window.location.origin.replace(/^http/, "ws") + "/cluster-admin/ws";
  const SILENCE_MS = 8100;
  const TERMINAL = ["completed", "aborted", "validation-failed"];

  window.CONFIG = { PRODUCT_NAME: "NethServer 8", API_SCHEME: window.location.protocol };

  // ---- an event bus with Vue 2 semantics --------------------------------
  function EventBus() {
    this._events = {};
  }
  EventBus.prototype.$on = function (event, fn) {
    (this._events[event] = this._events[event] || []).push(fn);
    return this;
  };
  EventBus.prototype.$once = function (event, fn) {
    const bus = this;
    function once() {
      bus.$off(event, once);
      fn.apply(bus, arguments);
    }
    once.fn = fn;
    return this.$on(event, once);
  };
  EventBus.prototype.$off = function (event, fn) {
    if (event === undefined) {
      this._events = {};
    } else if (fn === undefined) {
      delete this._events[event];
    } else if (this._events[event]) {
      this._events[event] = this._events[event].filter((cb) => cb !== fn && cb.fn !== fn);
    }
    return this;
  };
  EventBus.prototype.$emit = function (event) {
    const args = Array.prototype.slice.call(arguments, 1);
    for (const cb of (this._events[event] || []).slice()) {
      cb.apply(this, args);
    }
    return this;
  };

  // ---- the few core strings a module may borrow -----------------------------
  const MESSAGES = {
    en: { "common.node": "Node", "error.generic_error": "Something went wrong",
      "common.use_landscape_mode": "Rotate your device",
      "common.use_landscape_mode_description": "This page is easier to read in landscape mode" },
    it: { "common.node": "Nodo", "error.generic_error": "Qualcosa è andato storto",
      "common.use_landscape_mode": "Ruota il dispositivo",
      "common.use_landscape_mode_description": "Questa pagina si legge meglio in orizzontale" },
  };
  const LOCALE = (navigator.language || "en").substring(0, 2);

  function translate(key, params) {
    const table = MESSAGES[LOCALE] || MESSAGES.en;
    let text = table[key] || MESSAGES.en[key] || key;
    for (const [name, value] of Object.entries(params || {})) {
      text = text.split("{" + name + "}").join(String(value));
    }
    return text;
  }

  // ---- routes over the hash: #/apps/<id>?page=<page> --------------------------
  function currentRoute() {
    const full = window.location.hash.replace(/^#/, "") || "/";
    const [path, search] = full.split("?");
    const query = {};
    new URLSearchParams(search || "").forEach((v, k) => (query[k] = v));
    return { path, fullPath: full, query };
  }

  function locationString(loc) {
    if (typeof loc === "string") return loc;
    const query = new URLSearchParams(loc.query || {}).toString();
    return loc.path + (query ? "?" + query : "");
  }

  function replaceHash(fullPath) {
    window.location.replace(window.location.href.split("#")[0] + "#" + fullPath);
  }

  const root = new EventBus();
  root.apiUrl = API_URL;
  root.$i18n = { locale: LOCALE };
  const core = {
    $root: root,
    $t: translate,
    $te: (key) => Boolean((MESSAGES[LOCALE] || MESSAGES.en)[key]),
    $tc: translate,
    get $route() {
      return currentRoute();
    },
    $router: {
      push(loc) {
        window.location.hash = "#" + locationString(loc);
      },
      replace(loc) {
        // absolute: location.replace() resolves a relative URL against the
        // calling script's document, which is the module's iframe
        replaceHash(locationString(loc));
      },
    },
  };
  root.$root = root;
  window.core = core;

  // ---- login ------------------------------------------------------------------
  function token() {
    try {
      return JSON.parse(localStorage.getItem("loginInfo") || "null").token || "";
    } catch (e) {
      return "";
    }
  }

  async function api(method, path, body) {
    const res = await fetch(API_URL + path, {
      method,
      headers: { "Content-Type": "application/json", Authorization: "Bearer " + token() },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try {
      data = await res.json();
    } catch (e) {
      data = null;
    }
    return { status: res.status, data };
  }

  // ---- tasks: context once, status at the end, events on $root ---------------
  const tasks = new Map(); // channel name -> state

  function taskPath(name) {
    // progress/<agent>/task/<id> -> <agent>/task/<id>
    return name.replace(/^progress\//, "");
  }

  function emit(task, outcome, result) {
    const ctx = task.context;
    const eventId = ctx.extra && ctx.extra.eventId;
    if (outcome === "completed") {
      root.$emit(`${ctx.action}-completed-${eventId}`, ctx, result);
    } else if (outcome === "validation-failed") {
      root.$emit(`${ctx.action}-validation-failed-${eventId}`, result.output, ctx);
    } else {
      root.$emit(`${ctx.action}-aborted-${eventId}`, result, ctx);
      if (!eventId || !(ctx.extra && ctx.extra.isNotificationHidden)) {
        notify(`${ctx.extra && ctx.extra.title ? ctx.extra.title : ctx.action}: task failed`);
      }
    }
  }

  async function finish(task, status) {
    if (task.done) return;
    task.done = true;
    const res = await api("GET", "/" + taskPath(task.name) + "/status");
    if (res.status !== 200 || res.data.data.exit_code === null) {
      task.done = false; // not written yet: the fallback polls again
      task.last = Date.now();
      return;
    }
    const result = res.data.data;
    // from a status alone (the fallback), validation-failed looks like aborted
    const outcome = status || (result.exit_code === 0 ? "completed" : "aborted");
    emit(task, outcome, result);
  }

  function progressed(task, payload) {
    const ctx = task.context;
    const eventId = ctx.extra && ctx.extra.eventId;
    if (payload.status === "running" && payload.progress > 0 && !task.validationOk) {
      task.validationOk = true;
      root.$emit(`${ctx.action}-validation-ok-${eventId}`, { context: ctx, status: payload.status });
    }
    if (ctx.extra && ctx.extra.isProgressNotified && payload.status === "running") {
      root.$emit(`${ctx.action}-progress-${eventId}`, payload.progress, ctx);
    }
    if (TERMINAL.includes(payload.status)) {
      finish(task, payload.status);
    }
  }

  async function loadContext(task) {
    const res = await api("GET", "/" + taskPath(task.name) + "/context");
    if (res.status !== 200) {
      task.contextPending = false;
      return;
    }
    task.context = res.data.data.context;
    for (const payload of task.queued.splice(0)) {
      progressed(task, payload);
    }
  }

  function onTaskMessage(name, payload) {
    let task = tasks.get(name);
    if (!task) {
      task = { name, context: null, contextPending: false, queued: [], done: false, last: 0 };
      tasks.set(name, task);
    }
    task.last = Date.now();
    task.status = payload.status;
    if (task.context) {
      progressed(task, payload);
      return;
    }
    task.queued.push(payload);
    if (!task.contextPending) {
      task.contextPending = true;
      loadContext(task);
    }
  }

  function pollSilentTasks() {
    const now = Date.now();
    for (const task of tasks.values()) {
      if (task.done) {
        if (now - task.last > 10 * 60 * 1000) tasks.delete(task.name);
        continue;
      }
      if (task.context && now - task.last > SILENCE_MS) {
        task.last = now;
        finish(task, null);
      }
    }
  }

  // ---- the websocket feed --------------------------------------------------------
  let socket = null;

  // onReady once the server has subscribed us (the stand-in's server says so;
  // cluster-admin's says nothing, hence the timeout); onRejected when the
  // server closes before accepting the token
  function connectFeed(onReady, onRejected) {
    const ws = new WebSocket(WS_URL);
    let ready = false;
    const markReady = () => {
      if (!ready) {
        ready = true;
        onReady();
      }
    };
    ws.onopen = () => {
      ws.send(JSON.stringify({ action: "authorize", payload: { jwt: token() } }));
      setTimeout(markReady, 3000);
    };
    ws.onmessage = (ev) => {
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch (e) {
        return;
      }
      if (msg.type === "authorized") {
        markReady();
      } else if (msg.type === "task" && msg.payload) {
        onTaskMessage(msg.name, msg.payload);
      }
    };
    ws.onclose = () => {
      if (!ready) {
        onRejected();
        return;
      }
      setTimeout(() => connectFeed(() => {}, () => showLogin("")), 2000);
    };
    socket = ws;
  }

  // ---- page ------------------------------------------------------------------------
  function notify(text) {
    const box = document.getElementById("shell-notifications");
    const item = document.createElement("div");
    item.className = "shell-notification";
    item.textContent = text;
    box.appendChild(item);
    setTimeout(() => item.remove(), 8000);
  }

  root.$on("createErrorNotification", (err, message) => notify(message || String(err)));
  root.$on("createNotificationForApp", (n) => notify((n && (n.title || n.description)) || ""));

  function appId() {
    const m = /^#\/apps\/([a-zA-Z0-9_-]+)/.exec(window.location.hash);
    return m ? m[1] : null;
  }

  function showApp() {
    if (!appId()) {
      replaceHash("/apps/imapsync1");
    }
    const box = document.getElementById("shell-app");
    const id = appId();
    const frame = box.querySelector("iframe");
    if (!frame || frame.dataset.app !== id) {
      box.innerHTML = "";
      const iframe = document.createElement("iframe");
      iframe.dataset.app = id;
      iframe.title = id;
      iframe.src = `apps/${id}/index.html`;
      box.appendChild(iframe);
    }
    box.hidden = false;
    document.getElementById("shell-logout").hidden = false;
  }

  function showLogin(message) {
    document.getElementById("shell-app").hidden = true;
    const form = document.getElementById("shell-login");
    form.hidden = false;
    const error = document.getElementById("shell-login-error");
    error.hidden = !message;
    error.textContent = message || "";
  }

  function start() {
    if (!token()) {
      showLogin("");
      return;
    }
    connectFeed(showApp, () => {
      localStorage.removeItem("loginInfo");
      showLogin("");
    });
  }

  document.getElementById("shell-login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = ev.target;
    const res = await api("POST", "/login", { username: form.username.value, password: form.password.value });
    if (res.status !== 200) {
      showLogin("Wrong username or password");
      return;
    }
    localStorage.setItem("loginInfo", JSON.stringify({ username: form.username.value, token: res.data.token }));
    form.password.value = "";
    form.hidden = true;
    start();
  });

  document.getElementById("shell-logout").addEventListener("click", () => {
    localStorage.removeItem("loginInfo");
    if (socket) {
      socket.onclose = null;
      socket.close();
    }
    window.location.reload();
  });

  window.addEventListener("hashchange", () => {
    if (!document.getElementById("shell-app").hidden) showApp();
  });
  setInterval(pollSilentTasks, 1000);
  start();
})();
