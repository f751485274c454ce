//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
// Running an action as every NS8 module UI does (spec section 6, UI): the task
// is POSTed through cluster-admin's api URL, and its outcome comes back as an
// event on core.$root named after the action and a fresh eventId. This mixin
// turns that into a promise, so a view can `await` an action and handle its
// three endings (completed, aborted, validation failed) in one place.
import { mapState } from "vuex";
import { TaskService, UtilService } from "@nethserver/ns8-ui-lib";

export class TaskFailure extends Error {
  // kind: "validation" (errors: the action's [{field, parameter, value, error}]),
  // "aborted" (result: {output, error, exit_code}) or "request" (cause: the HTTP error)
  constructor(kind, action, details = {}) {
    super(`${action}: ${kind}`);
    this.kind = kind;
    this.action = action;
    this.errors = details.errors || [];
    this.result = details.result || null;
    this.cause = details.cause || null;
  }
}

export default {
  mixins: [TaskService, UtilService],
  computed: {
    ...mapState(["instanceName", "core"]),
  },
  methods: {
    runModuleTask(action, data) {
      return this.runTask(action, data, (body) =>
        this.createModuleTaskForApp(this.instanceName, body)
      );
    },
    runClusterTask(action, data) {
      return this.runTask(action, data, (body) => this.createClusterTaskForApp(body));
    },
    runTask(action, data, submit) {
      const bus = this.core.$root;
      const eventId = this.getUuid();
      return new Promise((resolve, reject) => {
        const handlers = {};
        const settle = (fn) => (...args) => {
          for (const [event, handler] of Object.entries(handlers)) {
            bus.$off(event, handler);
          }
          fn(...args);
        };
        handlers[`${action}-completed-${eventId}`] = settle((context, result) =>
          resolve(result.output)
        );
        handlers[`${action}-aborted-${eventId}`] = settle((result) =>
          reject(new TaskFailure("aborted", action, { result }))
        );
        handlers[`${action}-validation-failed-${eventId}`] = settle((errors) =>
          reject(new TaskFailure("validation", action, { errors: Array.isArray(errors) ? errors : [] }))
        );
        for (const [event, handler] of Object.entries(handlers)) {
          bus.$on(event, handler);
        }
        const body = {
          action,
          extra: { title: this.$t(`action.${action}`), isNotificationHidden: true, eventId },
        };
        if (data !== undefined) {
          body.data = data;
        }
        submit(body).catch(
          settle((cause) => reject(new TaskFailure("request", action, { cause })))
        );
      });
    },
    // words for a failure that is not a field's: the HTTP error, or the action's end
    failureMessage(failure) {
      if (failure.kind === "request" && failure.cause) {
        return this.getErrorMessage(failure.cause);
      }
      if (failure.kind === "validation" && failure.errors.length) {
        return this.errorText(failure.errors[0].error);
      }
      return this.$t("error.action_failed", { action: failure.action });
    },
    // an error code of an action's validation, in words (the code itself when unknown)
    errorText(code) {
      const key = `error.${code}`;
      return this.$te(key) ? this.$t(key) : this.$t("error.invalid_value", { code });
    },
  },
};
