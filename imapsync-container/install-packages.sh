#!/bin/sh
# Install the sync image's system packages, on Alpine (production) or Debian
# (the local base), and check that the image has what its labels will say:
#   install-packages.sh ENGINES CRON
# ENGINES: "imapsync native" (imapsync must be installed) or "native" (it must
# not be: an empty engine setting would pick it). CRON: "cronie" (the
# distribution's) or "builtin" (imapsync-container/crond, for a base without
# cronie). Run by the Containerfile; POSIX sh, Alpine has no bash.
set -eu
engines=$1
cron=$2
here=/usr/local/lib/ns8-imapsync

if command -v apk >/dev/null 2>&1; then
    pkgs="python3 py3-pip tzdata ca-certificates"
    case " $engines " in *" imapsync "*) pkgs="$pkgs imapsync" ;; esac
    [ "$cron" = cronie ] && pkgs="$pkgs cronie"
    # shellcheck disable=SC2086 # a word list
    apk add --no-cache $pkgs
elif command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3 python3-pip tzdata ca-certificates
    apt-get clean
    rm -rf /var/lib/apt/lists/*
else
    echo "install-packages: neither apk nor apt-get in this base" >&2
    exit 1
fi

case "$cron" in
    cronie) command -v crond >/dev/null 2>&1 || { echo "install-packages: CRON=cronie but no crond" >&2; exit 1; } ;;
    builtin) ln -sf "$here/crond" /usr/local/bin/crond ;;
    *) echo "install-packages: CRON must be cronie or builtin, not $cron" >&2; exit 1 ;;
esac
chmod 0755 "$here/crond"

case " $engines " in
    *" imapsync "*) command -v imapsync >/dev/null 2>&1 || { echo "install-packages: ENGINES has imapsync but the base has none" >&2; exit 1; } ;;
    *) if command -v imapsync >/dev/null 2>&1; then echo "install-packages: ENGINES lacks imapsync but the base has one" >&2; exit 1; fi ;;
esac
rm -f "$here/install-packages.sh"
