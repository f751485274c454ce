#!/usr/bin/env bash
# Prepare this machine for real rootless podman under `systemd --user`, as
# ../shared/spec/containers-here.md measured it on Debian 12 (root, cgroup v1
# with a cgroup2 mount at /sys/fs/cgroup/unified, systemd not PID 1).
# Run by `make test-containers`; idempotent: a second run changes nothing.
#
# System changes (see README, "Container suite"):
#   - Debian packages for podman, buildah and debootstrap;
#   - each controller of the cgroup2 mount also mounted as a v1 hierarchy
#     (crun refuses hybrid mode otherwise; not persistent, cannot be undone
#     before a reboot);
#   - default_ulimits in /etc/containers/containers.conf (root lacks
#     CAP_SYS_RESOURCE, podman's defaults cannot be set);
#   - /dev/net/tun and /dev/fuse mode 0666 (rootless networking and overlay);
#   - $SYSTEM_VENV: a venv of the system's /usr/bin/python3 with what NS8's agent
#     environment has (requirements-agent-env.txt, requirements-pypkg.txt), for the
#     module's Unix user, who cannot run the development venvs' interpreter if it
#     lives under /root (pyenv).
set -euo pipefail
cd "$(dirname "$0")/../.."

PACKAGES=(podman buildah crun runc conmon slirp4netns uidmap fuse-overlayfs catatonit debootstrap)
CONF=/etc/containers/containers.conf
SYSTEM_VENV=${LOCALNODE_SYSTEM_VENV:-/var/cache/ns8-imapsync/agent-venv}

log() { echo "prepare-host: $*"; }

install_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

mount_hybrid_controllers() {
    local controllers=/sys/fs/cgroup/unified/cgroup.controllers c list
    [ -r "$controllers" ] || return 0
    read -r -a list < "$controllers" || true
    for c in "${list[@]}"; do
        if ! mountpoint -q "/sys/fs/cgroup/$c"; then
            log "mounting cgroup v1 controller $c"
            mkdir -p "/sys/fs/cgroup/$c"
            mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
        fi
    done
}

set_ulimits() {
    local hard nofile line
    hard=$(ulimit -Hn)
    nofile=20000
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$nofile" ]; then nofile=$hard; fi
    line="default_ulimits = [\"nofile=${nofile}:${nofile}\", \"nproc=32768:32768\"]"
    mkdir -p "$(dirname "$CONF")"
    touch "$CONF"
    grep -q '^default_ulimits' "$CONF" && return 0
    log "setting default_ulimits in $CONF"
    if grep -q '^\[containers\]' "$CONF"; then
        sed -i "/^\[containers\]/a $line" "$CONF"
    else
        printf '[containers]\n%s\n' "$line" >> "$CONF"
    fi
}

open_devices() {
    local dev
    for dev in /dev/net/tun /dev/fuse; do
        [ -e "$dev" ] && chmod 0666 "$dev"
    done
}

system_venv() {
    local want
    want=$(cat /usr/bin/python3 requirements-agent-env.txt requirements-pypkg.txt | sha256sum | cut -c1-16)
    [ -x "$SYSTEM_VENV/bin/python" ] && [ "$(cat "$SYSTEM_VENV/.stamp" 2>/dev/null)" = "$want" ] && return 0
    log "building $SYSTEM_VENV"
    rm -rf "$SYSTEM_VENV"
    mkdir -p "$(dirname "$SYSTEM_VENV")"
    env -u PYTHONPATH /usr/bin/python3 -m venv "$SYSTEM_VENV"
    env -u PYTHONPATH "$SYSTEM_VENV/bin/pip" install -q --disable-pip-version-check \
        -r requirements-agent-env.txt -r requirements-pypkg.txt
    chmod -R a+rX "$SYSTEM_VENV"
    echo "$want" > "$SYSTEM_VENV/.stamp"
}

[ "$(id -u)" = 0 ] || { echo "prepare-host: run as root" >&2; exit 1; }
install_packages
mount_hybrid_controllers
set_ulimits
open_devices
system_venv
log "ok (podman $(podman --version | awk '{print $3}'), buildah $(buildah --version | awk '{print $3}'))"
