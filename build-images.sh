#!/bin/bash
#
# Build the module's two images with buildah, as NS8 modules do:
#   - the sync image  ${REPOBASE}/imapsync-binary:${IMAGETAG}  (imapsync-container/Containerfile)
#   - the module image ${REPOBASE}/imapsync:${IMAGETAG}  FROM scratch: imageroot/ at /imageroot
#     (with the pure-Python extras of requirements-pypkg.txt in /imageroot/pypkg), the built UI
#     at /ui, and the labels add-module reads.
#
#   ./build-images.sh               production: Alpine base from the registry, UI built in a node image
#   LOCAL_BASE=1 ./build-images.sh  nothing pulled from a registry: a Debian base made with debootstrap
#                                   (kept as ${LOCAL_BASE_IMAGE}), the UI built with the host's npm
#
# SKIP_UI=1 leaves the UI out (a module image without /ui, for tests of the sync runtime).
# REPOBASE (default ghcr.io/nethserver) and IMAGETAG (default latest) name the images; with
# LOCAL_BASE, LOCAL_BASE_REFRESH=1 rebuilds the Debian base, DEBIAN_MIRROR picks the mirror, and
# the host's /usr/local/share/ca-certificates/*.crt are trusted in the base (a TLS-inspecting proxy).
# The repository itself is never written to (the extras go to a temporary copy of imageroot/).
#
set -euo pipefail
cd "$(dirname "$0")"

repobase=${REPOBASE:-ghcr.io/nethserver}
tag=${IMAGETAG:-latest}
local_base=${LOCAL_BASE:-0}
debian_base=${LOCAL_BASE_IMAGE:-localhost/ns8-imapsync-debian:bookworm}
debian_mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
sync_image="${repobase}/imapsync-binary:${tag}"
module_image="${repobase}/imapsync:${tag}"

ui_built=0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

log() { echo "build-images: $*"; }
die() { echo "build-images: $*" >&2; exit 1; }

# The Debian base for LOCAL_BASE: debootstrap minbase, committed FROM scratch.
make_debian_base() {
    if [ "${LOCAL_BASE_REFRESH:-0}" != 1 ] && buildah inspect --type image "$debian_base" >/dev/null 2>&1; then
        log "reusing the base $debian_base"
        return 0
    fi
    command -v debootstrap >/dev/null || die "LOCAL_BASE needs debootstrap (apt-get install debootstrap)"
    log "debootstrap bookworm -> $debian_base"
    debootstrap --variant=minbase bookworm "$work/rootfs" "$debian_mirror" >"$work/debootstrap.log" 2>&1 ||
        { tail -n 20 "$work/debootstrap.log" >&2; die "debootstrap failed"; }
    rm -rf "$work"/rootfs/var/cache/apt/archives/*.deb "$work"/rootfs/var/lib/apt/lists/*
    # this machine's own CAs (a TLS-inspecting proxy in front of PyPI): the image's
    # ca-certificates package adds them to its bundle, so pip in the build trusts them
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        mkdir -p "$work/rootfs/usr/local/share/ca-certificates"
        cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
    fi
    local ctr
    ctr=$(buildah from scratch)
    buildah copy --quiet "$ctr" "$work/rootfs" / >/dev/null
    buildah config --cmd /bin/bash --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "$ctr"
    buildah commit --quiet --rm "$ctr" "$debian_base" >/dev/null
    rm -rf "$work/rootfs"
}

build_sync_image() {
    local args=(--layers --force-rm -f imapsync-container/Containerfile --ignorefile imapsync-container/containerignore
        -t "$sync_image")
    if [ "$local_base" = 1 ]; then
        make_debian_base
        # Debian has neither imapsync nor cronie: the native engine and the image's own crond
        args+=(--pull=never --build-arg "BASE=$debian_base" --build-arg ENGINES=native --build-arg CRON=builtin)
    fi
    log "sync image $sync_image"
    buildah bud --quiet "${args[@]}" . >/dev/null
}

# imageroot/ as shipped: no byte-code, no egg-info of a development install, plus the extras.
stage_imageroot() {
    mkdir -p "$work/imageroot"
    tar -C imageroot --exclude=__pycache__ --exclude='*.pyc' --exclude='*.egg-info' -cf - . |
        tar -C "$work/imageroot" -xf -
    # a venv of our own: the host's python may have no pip, or refuse to install (PEP 668)
    env -u PYTHONPATH python3 -m venv "$work/pip-venv"
    env -u PYTHONPATH "$work/pip-venv/bin/pip" install --quiet --disable-pip-version-check --no-compile \
        --target "$work/imageroot/pypkg" -r requirements-pypkg.txt
    rm -rf "$work/imageroot/pypkg/bin"
}

npm_build() {
    command -v npm >/dev/null || die "LOCAL_BASE builds the UI with the host's npm: none found"
    if [ ! -d ui/node_modules ]; then
        if [ -f ui/package-lock.json ]; then npm --prefix ui ci; else npm --prefix ui install; fi
    fi
    npm --prefix ui run build
}

build_ui() {
    if [ "${SKIP_UI:-0}" = 1 ]; then
        log "SKIP_UI=1: the module image gets no /ui"
        return 0
    fi
    if [ ! -f ui/package.json ]; then
        log "no ui/package.json: the module image gets no /ui"
        return 0
    fi
    if [ "$local_base" = 1 ]; then
        npm_build
    else
        local script="npm ci && npm run build"
        [ -f ui/yarn.lock ] && script="corepack enable && yarn install && yarn build"
        buildah run --volume "$PWD/ui:/usr/src/ui:Z" --workingdir /usr/src/ui \
            "$(buildah from docker.io/library/node:lts)" sh -c "$script"
    fi
    ui_built=1
}

build_module_image() {
    local ctr
    ctr=$(buildah from scratch)
    buildah add --quiet "$ctr" "$work/imageroot" /imageroot >/dev/null
    # only a UI built now: a ui/dist left from an older build may not match the sources
    if [ "$ui_built" = 1 ]; then buildah add --quiet "$ctr" ui/dist /ui >/dev/null; fi
    buildah config --entrypoint=/ \
        --label="org.nethserver.rootfull=0" \
        --label="org.nethserver.authorizations=mail@any:mailadm" \
        --label="org.nethserver.min-core=3.20.1" \
        --label="org.nethserver.images=${sync_image}" \
        "$ctr"
    log "module image $module_image"
    buildah commit --quiet --rm "$ctr" "$module_image" >/dev/null
}

stage_imageroot
build_sync_image
build_ui
build_module_image
printf 'Built: %s\n' "$sync_image" "$module_image"
