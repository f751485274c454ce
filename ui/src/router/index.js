//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
import Vue from "vue";
import VueRouter from "vue-router";
import Status from "../views/Status.vue";
import Settings from "../views/Settings.vue";
import Tasks from "../views/Tasks.vue";
import About from "../views/About.vue";

Vue.use(VueRouter);

// cluster-admin names the page in its own URL (?page=...); App.vue and the
// views' QueryParamService keep this router in step with it
export default new VueRouter({
  routes: [
    { path: "/", name: "Status", component: Status, alias: "/status" },
    { path: "/settings", name: "Settings", component: Settings },
    { path: "/tasks", name: "Tasks", component: Tasks },
    { path: "/about", name: "About", component: About },
  ],
});
