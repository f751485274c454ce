//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The Create/Edit task form: its model, the create-task request it sends, the
// checks made before sending, and where the action's errors are shown.

export const DEFAULT_PORT = { "": 143, tls: 143, ssl: 993 };
const HOSTNAME_RE = /^([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]{0,61}[a-zA-Z0-9])(\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]{0,61}[a-zA-Z0-9]))*$/;
const ID_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789";

// a new task's id: 6 characters of [a-z0-9], as the reference module's UI makes
export function newTaskId() {
  const bytes = new Uint8Array(6);
  window.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => ID_CHARS[b % ID_CHARS.length]).join("");
}

// Walks a folder regex list as the action does (task.split_patterns) and
// calls onComma(i) for each comma that separates patterns: outside (), {}
// and [...], not escaped.
function separatingCommas(text, onComma) {
  let depth = 0;
  let classFirst = -1; // inside [...]: where a `]` is still literal
  for (let i = 0; i < text.length; i++) {
    const ch = text[i];
    if (ch === "\\") {
      i++;
    } else if (classFirst >= 0) {
      if (ch === "]" && i !== classFirst) classFirst = -1;
    } else if (ch === "[") {
      classFirst = text[i + 1] === "^" ? i + 2 : i + 1;
    } else if (ch === "(" || ch === "{") {
      depth++;
    } else if ((ch === ")" || ch === "}") && depth) {
      depth--;
    } else if (ch === "," && depth === 0) {
      onComma(i);
    }
  }
}

// create-task's `exclude` -> its patterns, one per line in the form
export function splitPatterns(text) {
  const items = [];
  let start = 0;
  separatingCommas(text, (i) => {
    items.push(text.slice(start, i));
    start = i + 1;
  });
  items.push(text.slice(start));
  return items.map((s) => s.trim()).filter(Boolean);
}

// one pattern per line -> `exclude`: a comma that would split a line's
// pattern is written `\,` (a literal comma in the regex, kept whole)
export function joinPatterns(lines) {
  return lines
    .map((line) => line.trim())
    .filter(Boolean)
    .map((line) => {
      const cuts = [];
      separatingCommas(line, (i) => cuts.push(i));
      let out = line;
      for (const i of cuts.reverse()) {
        out = out.slice(0, i) + "\\," + out.slice(i + 1);
      }
      return out;
    })
    .join(",");
}

export function emptyForm() {
  return {
    task_id: "",
    localuser: "",
    remoteusername: "",
    remotepassword: "",
    remotehostname: "",
    remoteport: "143",
    security: "tls",
    foldersynchronization: "all",
    sieve_enabled: false,
    exclude_lines: "",
    deletion: "none", // none | remote | remote_older | local
    delete_remote_older: "15",
    schedule: "off", // off | minutes | hours
    schedule_minutes: "5",
    schedule_hours: "1",
  };
}

function deletionOf(task) {
  if (task.delete_local) return "local";
  if (task.delete_remote && task.delete_remote_older > 0) return "remote_older";
  if (task.delete_remote) return "remote";
  return "none";
}

// the form for editing a list-tasks entry (the password stays empty: unchanged)
export function formFromTask(task) {
  const m = /^(\d+)([mh])$/.exec(task.cron || "");
  return {
    ...emptyForm(),
    task_id: task.task_id,
    localuser: task.localuser,
    remoteusername: task.remoteusername,
    remotehostname: task.remotehostname,
    remoteport: String(task.remoteport),
    security: task.security,
    foldersynchronization: task.foldersynchronization,
    sieve_enabled: Boolean(task.sieve_enabled),
    exclude_lines: splitPatterns(task.exclude || "").join("\n"),
    deletion: deletionOf(task),
    delete_remote_older: task.delete_remote_older > 0 ? String(task.delete_remote_older) : "15",
    schedule: m ? (m[2] === "m" ? "minutes" : "hours") : "off",
    schedule_minutes: m && m[2] === "m" ? m[1] : "5",
    schedule_hours: m && m[2] === "h" ? m[1] : "1",
  };
}

function cronOf(form) {
  if (form.schedule === "minutes") return `${Number(form.schedule_minutes)}m`;
  if (form.schedule === "hours") return `${Number(form.schedule_hours)}h`;
  return "";
}

// the create-task request of a checked form
export function requestFromForm(form) {
  const exclusion = form.foldersynchronization === "exclusion";
  return {
    task_id: form.task_id,
    localuser: form.localuser,
    remoteusername: form.remoteusername.trim(),
    remotepassword: form.remotepassword,
    remotehostname: form.remotehostname.trim(),
    remoteport: Number(form.remoteport),
    security: form.security,
    foldersynchronization: form.foldersynchronization,
    sieve_enabled: form.foldersynchronization === "inbox" && form.sieve_enabled,
    exclude: exclusion ? joinPatterns(form.exclude_lines.split("\n")) : "",
    delete_local: form.deletion === "local",
    delete_remote: form.deletion === "remote" || form.deletion === "remote_older",
    delete_remote_older: form.deletion === "remote_older" ? Number(form.delete_remote_older) : 0,
    cron: cronOf(form),
  };
}

function intIn(value, low, high) {
  const text = String(value).trim();
  return /^\d+$/.test(text) && Number(text) >= low && Number(text) <= high;
}

// the checks made before sending: {field: i18n key} of each problem found
export function checkForm(form, isEdit) {
  const errors = {};
  if (!isEdit && !form.localuser) errors.localuser = "task_form.localuser_required";
  if (!form.remoteusername.trim()) errors.remoteusername = "task_form.remoteusername_required";
  if (!isEdit && !form.remotepassword) errors.remotepassword = "task_form.remotepassword_required";
  const host = form.remotehostname.trim();
  if (!host) errors.remotehostname = "task_form.remotehostname_required";
  else if (!HOSTNAME_RE.test(host)) errors.remotehostname = "task_form.remotehostname_invalid";
  if (!intIn(form.remoteport, 1, 65535)) errors.remoteport = "task_form.remoteport_invalid";
  if (form.foldersynchronization === "exclusion" && !splitPatterns(joinPatterns(form.exclude_lines.split("\n"))).length) {
    errors.exclude = "task_form.exclude_required";
  }
  if (form.deletion === "remote_older" && !intIn(form.delete_remote_older, 1, 99999)) {
    errors.delete_remote_older = "task_form.delete_remote_older_invalid";
  }
  if (form.schedule === "minutes" && !intIn(form.schedule_minutes, 1, 59)) {
    errors.schedule_minutes = "task_form.schedule_minutes_invalid";
  }
  if (form.schedule === "hours" && !intIn(form.schedule_hours, 1, 23)) {
    errors.schedule_hours = "task_form.schedule_hours_invalid";
  }
  return errors;
}

// create-task's refusals: the form field each belongs to (null: the whole form)
const FIELD_OF_ERROR = {
  bad_user_credentials: "remotepassword",
  Check_hostname_or_tcp_port: "remotehostname",
  SSL_encryption_error: "security",
  STARTTLS_not_allowed_use_IMAPS: "security",
  remotepassword_is_required: "remotepassword",
  delete_local_and_delete_remote_are_exclusive: "deletion",
  delete_remote_older_is_not_valid: "delete_remote_older",
  cron_is_not_valid: "schedule",
};
const FORM_FIELDS = ["localuser", "remoteusername", "remotepassword", "remotehostname", "remoteport",
  "security", "exclude", "foldersynchronization"];

export function fieldOfError(item) {
  if (FIELD_OF_ERROR[item.error]) return FIELD_OF_ERROR[item.error];
  if (item.parameter === "delete_remote_older") return "delete_remote_older";
  if (item.parameter === "cron") return "schedule";
  return FORM_FIELDS.includes(item.parameter) ? item.parameter : null;
}
