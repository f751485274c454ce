//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
import Vue from "vue";
import App from "./App.vue";
import router from "./router";
import store from "./store";

import CarbonComponentsVue from "@carbon/vue";
import axios from "axios";
import VueAxios from "vue-axios";
import ns8Lib, { Filters } from "@nethserver/ns8-ui-lib";
import VueDateFns from "vue-date-fns";
import LottieAnimation from "lottie-web-vue";
import vueDebounce from "vue-debounce";
import VueI18n from "vue-i18n";
import { loadMessages } from "./i18n";

Vue.use(CarbonComponentsVue);
axios.defaults.timeout = 10000;
Vue.use(VueAxios, axios);
Vue.use(ns8Lib);
Vue.use(VueDateFns);
Vue.use(LottieAnimation);
Vue.use(vueDebounce);
for (const name in Filters) {
  Vue.filter(name, Filters[name]);
}
Vue.config.productionTip = false;
Vue.use(VueI18n);

// the UI speaks the browser's language when it has its strings, else English
async function start() {
  const lang = navigator.language.substring(0, 2);
  const i18n = new VueI18n({ locale: lang, fallbackLocale: "en", silentFallbackWarn: true });
  const [own, english] = await Promise.all([loadMessages(lang), loadMessages("en")]);
  i18n.setLocaleMessage("en", english);
  if (own) {
    i18n.setLocaleMessage(lang, own);
  } else {
    i18n.locale = "en";
  }
  new Vue({ router, store, i18n, render: (h) => h(App) }).$mount("#ns8-app");
}

start();
