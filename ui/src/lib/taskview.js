//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
// What the Tasks page shows of a list-tasks entry, as plain functions: the
// table's columns sort and search on these values, and the templates stay free
// of logic.

// a task's file name, `<localuser>_<task_id>`: unique, so a row's key
export function taskKey(task) {
  return `${task.localuser}_${task.task_id}`;
}

// the state an administrator reads: running, queued, idle, failed, stalled, crashed
export function displayState(task) {
  switch (task.state) {
    case "running":
    case "queued":
    case "failed":
    case "stalled":
    case "crashed":
      return task.state;
    default:
      return "idle"; // never run, succeeded, stopped: nothing going on
  }
}

export function isActive(task) {
  return task.state === "running" || task.state === "queued" || task.service_running;
}

// Carbon tag colours of each state
export const STATE_TAG = {
  running: "blue",
  queued: "purple",
  idle: "gray",
  failed: "red",
  stalled: "magenta",
  crashed: "red",
};

// the task's schedule as {key, count} for $tc: every N minutes / hours, or none
export function schedule(cron) {
  const m = /^(\d+)([mh])$/.exec(cron || "");
  if (!m) {
    return { key: "tasks.schedule_off", count: 0 };
  }
  const n = Number(m[1]);
  return { key: m[2] === "m" ? "tasks.schedule_minutes" : "tasks.schedule_hours", count: n };
}

// the share of the run done, 0..100, by messages (bytes when no count is known yet)
export function progressPercent(progress) {
  if (!progress) {
    return 0;
  }
  const { messages_done: md, messages_total: mt, bytes_done: bd, bytes_total: bt } = progress;
  if (mt > 0) {
    return Math.min(100, Math.floor((100 * md) / mt));
  }
  if (bt > 0) {
    return Math.min(100, Math.floor((100 * bd) / bt));
  }
  return 0;
}

// a duration in seconds as {key, count} for $tc: seconds, minutes or hours
export function durationParts(seconds) {
  if (seconds === null || seconds === undefined || isNaN(seconds)) {
    return null;
  }
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) {
    return { key: "common.seconds", count: s };
  }
  if (s < 3600) {
    return { key: "common.minutes", count: Math.round(s / 60) };
  }
  return { key: "common.hours", count: Math.round(s / 360) / 10 };
}

// the last finished run's result: {key, params} for $t, or null before the first run
export function lastRunResult(task) {
  if (!task.last_sync_state) {
    return null;
  }
  const params = {
    found: task.last_sync_found,
    listed: task.last_sync_listed,
    reason: task.last_sync_reason || "",
  };
  if (task.last_sync_state === "succeeded") {
    return {
      key: task.last_sync_listed === null ? "tasks.last_succeeded" : "tasks.last_succeeded_counts",
      params,
      kind: "green",
    };
  }
  return { key: `tasks.last_${task.last_sync_state}`, params, kind: "red" };
}

// the share of the remote mail already on the local server, from list-informations
export function copiedShare(info) {
  if (!info || !info.host1Messages) {
    return null;
  }
  return Math.min(100, Math.round((100 * info.host2Messages) / info.host1Messages));
}

// date and time in the browser's locale
export function dateTime(epochSeconds, locale) {
  if (!epochSeconds) {
    return "";
  }
  return new Date(epochSeconds * 1000).toLocaleString(locale, {
    dateStyle: "short",
    timeStyle: "short",
  });
}

// the table's search: any of these fields containing the text, case-insensitive
export function matches(task, text) {
  const needle = text.trim().toLowerCase();
  if (!needle) {
    return true;
  }
  return [task.localuser, task.remoteusername, task.remotehostname, task.task_id]
    .filter(Boolean)
    .some((value) => String(value).toLowerCase().includes(needle));
}

// sort values of each column (null sorts first)
export const SORT_VALUE = {
  localuser: (t) => t.localuser,
  remoteusername: (t) => t.remoteusername.toLowerCase(),
  remotehostname: (t) => t.remotehostname.toLowerCase(),
  schedule: (t) => {
    const m = /^(\d+)([mh])$/.exec(t.cron || "");
    return m ? Number(m[1]) * (m[2] === "h" ? 60 : 1) : Infinity;
  },
  state: (t) => displayState(t),
  last_sync: (t) => t.last_sync_timestamp || 0,
};

export function sortTasks(tasks, column, order) {
  const value = SORT_VALUE[column];
  if (!value || order === "none") {
    return tasks;
  }
  const sign = order === "descending" ? -1 : 1;
  return tasks.slice().sort((a, b) => {
    const va = value(a);
    const vb = value(b);
    if (va < vb) return -sign;
    if (va > vb) return sign;
    return taskKey(a) < taskKey(b) ? -1 : 1; // stable between refreshes
  });
}

// text for a component that renders its prop as HTML (NsDangerDeleteModal's
// description): a remote user name is anyone's text and must stay text
export function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
