//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//

// imapsync_<localuser>_<task_id>_<YYYYMMDD_HHMM>.log, as the reference module names it
export function logFileName(task, when) {
  const pad = (n) => String(n).padStart(2, "0");
  const stamp = `${when.getFullYear()}${pad(when.getMonth() + 1)}${pad(when.getDate())}_${pad(when.getHours())}${pad(when.getMinutes())}`;
  return `imapsync_${task.localuser}_${task.task_id}_${stamp}.log`;
}

// save a text as a file through the browser (no server round trip: the text is here)
export function downloadText(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "text/plain;charset=utf-8" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}
