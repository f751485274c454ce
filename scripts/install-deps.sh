#!/usr/bin/env bash
# Install everything `make demo` and `make test` need on a Debian 12 machine.
# Idempotent: apt runs only when a package is missing, each venv is rebuilt only
# when its requirements change. Run as root (or with sudo available) for apt.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
APT_PACKAGES=(
    redis-server
    dovecot-core dovecot-imapd dovecot-sieve dovecot-lmtpd dovecot-managesieved
    openssl procps iproute2 python3-venv
)
# shipping checks (tests/test_shipping.py: shellcheck on every shell script)
APT_PACKAGES+=(shellcheck)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install-deps: installing Debian packages: ${missing[*]}"
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    # Debian's maintainer scripts would start system-wide redis/dovecot; the local
    # node runs its own instances, so keep the packaged services from starting.
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# Packaged services are not used: stop them if the package started them.
for svc in redis-server dovecot; do
    if command -v systemctl >/dev/null && systemctl is-active --quiet "$svc" 2>/dev/null; then
        systemctl stop "$svc" || true
    fi
done

stamp_of() { cat "$@" | sha256sum | cut -c1-16; }

# pip must not see the Makefile's PYTHONPATH: imageroot/pypkg holds the egg-info of
# the editable install, and pip would report ns8-imapsync's dependencies missing
# from .venv-host with an ERROR line.
unset PYTHONPATH

# .venv: development and container-side environment (the package with all its deps).
want=$(stamp_of pyproject.toml)
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$want" ]; then
    echo "install-deps: building .venv"
    "$PYTHON" -m venv .venv
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[dev]'
    echo "$want" > .venv/.stamp
fi

# .venv-host: what NS8's agent environment offers actions and bin/ helpers
# (stdlib + requirements-agent-env.txt + requirements-pypkg.txt, nothing else). The local node runs actions with it.
want=$(stamp_of requirements-agent-env.txt requirements-pypkg.txt)
if [ ! -x .venv-host/bin/python ] || [ "$(cat .venv-host/.stamp 2>/dev/null)" != "$want" ]; then
    echo "install-deps: building .venv-host"
    "$PYTHON" -m venv .venv-host
    .venv-host/bin/pip install -q --upgrade pip
    .venv-host/bin/pip install -q -r requirements-agent-env.txt -r requirements-pypkg.txt
    echo "$want" > .venv-host/.stamp
fi

bash scripts/install-ui-deps.sh  # the admin UI (ui/dist) and Chromium for its browser tests
