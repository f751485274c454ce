#!/bin/bash
#
# Run the Robot Framework suites against a real NS8 leader node, as NS8 modules
# do in CI:  ./test-module.sh <NODE_ADDR> [IMAGE_URL] [robot args...]
# (the suites live in tests/*.robot; they drive the node with api-cli and
# runagent over SSH).
#
set -euo pipefail
LEADER_NODE="${1:?usage: test-module.sh NODE_ADDR [IMAGE_URL]}"
IMAGE_URL="${2:-ghcr.io/nethserver/imapsync:latest}"
shift $(( $# > 1 ? 2 : 1 ))
SSH_KEYFILE=${SSH_KEYFILE:-$HOME/.ssh/id_rsa}
cd "$(dirname "$0")"
python3 -m venv .venv-robot
.venv-robot/bin/pip install -q robotframework robotframework-sshlibrary
exec .venv-robot/bin/robot -v "NODE_ADDR:${LEADER_NODE}" -v "IMAGE_URL:${IMAGE_URL}" \
    -v "SSH_KEYFILE:${SSH_KEYFILE}" --skiponfailure unstable -d tests/outputs "$@" tests/
