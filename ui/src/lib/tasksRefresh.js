//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
// The Tasks page's data: list-tasks, refreshed by itself. One request at a
// time (a refresh asked while one runs comes right after it, once), the next
// one timed from the end of the last, so a slow node never piles requests up;
// every 2 s while a task runs or waits (the progress bars move), every 10 s
// otherwise, and not while the page is hidden. Rows are replaced in place (the
// table keys them by task), and the skeleton shows only before the first answer.
import { isActive } from "./taskview";

export const ACTIVE_REFRESH_MS = 2000;
export const IDLE_REFRESH_MS = 10000;

export default {
  data() {
    return {
      tasks: [],
      mailboxes: [],
      reason: "",
      loaded: false,
      loading: false,
      refreshAgain: false,
      refreshTimer: null,
      refreshStopped: false,
      error: { list: "" },
    };
  },
  computed: {
    configured() {
      return this.mailboxes.length > 0;
    },
  },
  created() {
    this.refresh(false);
  },
  beforeDestroy() {
    this.refreshStopped = true;
    clearTimeout(this.refreshTimer);
  },
  methods: {
    async refresh() {
      if (this.loading) {
        this.refreshAgain = true;
        return;
      }
      clearTimeout(this.refreshTimer);
      this.loading = true;
      try {
        const out = await this.runModuleTask("list-tasks");
        this.tasks = out.user_properties;
        this.mailboxes = out.enabled_mailboxes;
        this.reason = out.reason || "";
        this.error.list = "";
      } catch (failure) {
        this.error.list = this.failureMessage(failure);
      }
      this.loading = false;
      this.loaded = true;
      if (this.refreshAgain) {
        this.refreshAgain = false;
        this.refresh();
        return;
      }
      this.scheduleRefresh();
    },
    scheduleRefresh() {
      if (this.refreshStopped) return;
      const delay = this.tasks.some(isActive) ? ACTIVE_REFRESH_MS : IDLE_REFRESH_MS;
      this.refreshTimer = setTimeout(() => {
        if (document.hidden || window.parent.document.hidden) {
          this.scheduleRefresh();
        } else {
          this.refresh();
        }
      }, delay);
    },
  },
};
