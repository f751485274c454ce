//
// Copyright (C) 2025 Nethesis S.r.l.
// SPDX-License-Identifier: GPL-3.0-or-later
//
// A page's half of the URL binding every NS8 module UI has (QueryParamService):
// its `q` data is written into cluster-admin's URL (?page=<page>&...), and the
// parent URL is watched, so links, reloads and the back button land on the
// right page. The view supplies `q` (with `page`) and the QueryParamService mixin.
export default {
  data() {
    return { urlCheckInterval: null, currentUrl: "" };
  },
  beforeRouteEnter(to, from, next) {
    next((vm) => {
      vm.watchQueryData(vm);
      vm.urlCheckInterval = vm.initUrlBindingForApp(vm, vm.q.page);
    });
  },
  beforeRouteLeave(to, from, next) {
    clearInterval(this.urlCheckInterval);
    next();
  },
  beforeDestroy() {
    clearInterval(this.urlCheckInterval);
  },
};
