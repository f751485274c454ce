const path = require("path");

// Built into ui/dist, which the module image ships at /ui; cluster-admin
// serves it at apps/<module_id>/ and loads index.html in an iframe, so every
// URL is relative.
module.exports = {
  publicPath: "./",
  productionSourceMap: false,
  // no <link rel="prefetch"> of every language chunk: a UI loads one language
  chainWebpack: (config) => config.plugins.delete("prefetch"),
  configureWebpack: {
    resolve: {
      alias: {
        // @nethserver/ns8-ui-lib 0.1.32 imports this icon by its old name; the
        // @carbon/icons-vue that works with Vue 2.7 (10.63, the one @carbon/vue
        // 2.45 pins) calls it "switcher"
        "@carbon/icons-vue/es/app-switcher/20$": path.resolve(__dirname, "node_modules/@carbon/icons-vue/es/switcher/20.js"),
      },
    },
    performance: { hints: false },
    optimization: {
      splitChunks: { maxSize: 500000 },
    },
  },
};
