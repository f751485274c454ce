#!/usr/bin/env bash
# What the admin UI and its browser tests need, on a Debian 12 machine:
# Debian's Chromium (the browser tests drive it with Playwright from the
# development venv), the UI's npm packages (`npm ci` from the committed
# package-lock.json) and the built UI in ui/dist.
#
# Idempotent and quick when nothing changed: apt runs only for a missing
# package, `npm ci` only when package-lock.json changed, the build only when
# a UI source changed (stamps in ui/node_modules and ui/dist).
#
# Lifecycle scripts stay off (ui/.npmrc): the build needs none, and Carbon's
# postinstall starts @ibm/telemetry-js processes that outlive the install and
# try the network; the telemetry opt-out variables are set as well.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARBON_TELEMETRY_DISABLED=1 IBM_TELEMETRY_DISABLED=true
export npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false

missing=()
for p in chromium fonts-liberation; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-ui-deps: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Node.js: the machine's (20 here); a bare Debian 12 gets its own nodejs and npm (18, 9), which build it too
if ! command -v npm >/dev/null; then
    echo "install-ui-deps: installing Debian packages: nodejs npm"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm
fi

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# npm packages: exactly the lock file's
want=$(stamp_of ui/package.json ui/package-lock.json ui/.npmrc)
if [ "$(cat ui/node_modules/.ci-stamp 2>/dev/null)" != "$want" ]; then
    echo "install-ui-deps: npm ci (ui/)"
    (cd ui && npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > ui/node_modules/.ci-stamp
fi

# the build: every file it is made of
sources=$(find ui/src ui/public ui/package-lock.json ui/vue.config.js ui/babel.config.js ui/.browserslistrc -type f | LC_ALL=C sort)
# shellcheck disable=SC2086 # one path per word: no path here has a space
want=$(stamp_of $sources)
if [ ! -f ui/dist/index.html ] || [ "$(cat ui/dist/.build-stamp 2>/dev/null)" != "$want" ]; then
    echo "install-ui-deps: building the UI (ui/dist)"
    log=$(mktemp)
    if ! (cd ui && npm run --silent build) >"$log" 2>&1; then
        cat "$log" >&2; rm -f "$log"
        exit 1
    fi
    rm -f "$log"
    echo "$want" > ui/dist/.build-stamp
fi
