#!/bin/bash
#
# Build the module image (imageroot + UI) and the sync image, NS8 style (buildah).
# Needs buildah and network access to the registries; not used by the local node.
#
set -euo pipefail
cd "$(dirname "$0")"

repobase="${REPOBASE:-ghcr.io/nethserver}"
tag="${IMAGETAG:-latest}"
images=()

# Pure-Python extras for host-side code, installed into the shipped pypkg.
extras=$(mktemp -d)
trap 'rm -rf "$extras"' EXIT
python3 -m pip install --quiet --no-compile --target "$extras" -r requirements-pypkg.txt

# 1. The sync image: imapsync, cronie, Python and the ns8_imapsync package.
buildah bud --layers -f imapsync-container/Containerfile -t "${repobase}/imapsync-binary:${tag}" .
images+=("${repobase}/imapsync-binary:${tag}")

# 2. The UI, when it exists.
if [ -f ui/package.json ]; then
    buildah run --volume "$PWD/ui:/usr/src/ui:Z" --workingdir /usr/src/ui \
        "$(buildah from docker.io/library/node:lts)" sh -c "corepack enable && yarn install && yarn build"
fi

# 3. The module image: imageroot at /imageroot, UI at /ui, labels for add-module.
container=$(buildah from scratch)
buildah add "${container}" imageroot /imageroot
buildah add "${container}" "$extras" /imageroot/pypkg
[ -d ui/dist ] && buildah add "${container}" ui/dist /ui
buildah config --entrypoint=/ \
    --label="org.nethserver.rootfull=0" \
    --label="org.nethserver.authorizations=mail@any:mailadm" \
    --label="org.nethserver.min-core=3.20.1" \
    --label="org.nethserver.images=${repobase}/imapsync-binary:${tag}" \
    "${container}"
buildah commit "${container}" "${repobase}/imapsync:${tag}"
images+=("${repobase}/imapsync:${tag}")

printf 'Built: %s\n' "${images[@]}"
