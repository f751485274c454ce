#!/bin/bash
#
# Run the Robot Framework suites of tests/robot, as NS8 modules do:
#
#   ./test-module.sh NODE_ADDR [IMAGE_URL] [robot args...]
#       against a real NS8 leader, over SSH as root (key: $SSH_KEYFILE, default ~/.ssh/id_rsa);
#       IMAGE_URL defaults to ghcr.io/nethserver/imapsync:latest. Robot and SSHLibrary are
#       installed in .venv-robot.
#   ./test-module.sh local [robot args...]
#       against the local node of tests/localnode, started for the run in a directory of its
#       own ($ROBOT_NODE_DIR, default a new /tmp/ns8-robot-node.*) on port base
#       $ROBOT_PORT_BASE (default 30400), and stopped and removed afterwards.
#
# Either way the report (log.html, report.html, output.xml) is written to tests/outputs/.
#
set -euo pipefail
cd "$(dirname "$0")"

OUTPUT_DIR=tests/outputs
node_dir=""

local_node() {
    PYTHONPATH="$PWD/tests" LOCALNODE_PORT_BASE=${ROBOT_PORT_BASE:-30400} \
        .venv/bin/python -m localnode --state-dir "$node_dir" "$@"
}

stop_local_node() {
    [ -n "$node_dir" ] || return 0
    local_node down >/dev/null || true
    [ -n "${ROBOT_NODE_DIR:-}" ] || rm -rf "$node_dir"
}

run_local() {
    [ -x .venv/bin/robot ] || bash scripts/install-deps.sh
    node_dir=${ROBOT_NODE_DIR:-$(mktemp -d /tmp/ns8-robot-node.XXXXXX)}
    chmod 0755 "$node_dir"  # the Dovecot mail user traverses it
    trap stop_local_node EXIT
    local_node up --no-imapsync >/dev/null
    env -u PYTHONPATH .venv/bin/robot --name imapsync -v NODE_ADDR:local -v "LOCALNODE_DIR:$node_dir" \
        -v IMAGE_URL:ghcr.io/nethserver/imapsync:localnode -d "$OUTPUT_DIR" "$@" tests/robot
}

run_remote() {
    local node=$1 image=ghcr.io/nethserver/imapsync:latest
    shift
    if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then image=$1; shift; fi
    python3 -m venv .venv-robot
    .venv-robot/bin/pip install -q robotframework robotframework-sshlibrary
    exec .venv-robot/bin/robot --name imapsync -v "NODE_ADDR:${node}" -v "IMAGE_URL:${image}" \
        -v "SSH_KEYFILE:${SSH_KEYFILE:-$HOME/.ssh/id_rsa}" --skiponfailure unstable -d "$OUTPUT_DIR" "$@" tests/robot
}

case "${1:-}" in
    "") echo "usage: $0 NODE_ADDR [IMAGE_URL] [robot args...] | $0 local [robot args...]" >&2; exit 2 ;;
    local) shift; run_local "$@" ;;
    *) run_remote "$@" ;;
esac
