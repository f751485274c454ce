//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
import Vue from "vue";
import Vuex from "vuex";

Vue.use(Vuex);

export default new Vuex.Store({
  state: {
    appName: "",
    instanceName: "",
    instanceLabel: "",
    core: null,
  },
  mutations: {
    setInstanceName(state, value) {
      state.instanceName = value;
    },
    setInstanceLabel(state, value) {
      state.instanceLabel = value;
    },
    setCore(state, value) {
      state.core = value;
    },
    setAppName(state, value) {
      state.appName = value;
    },
  },
});
