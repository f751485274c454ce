"""`make demo`: a migration between the two local Dovecot servers, end to end.

Starts the local node, binds imapsync1 to mail1 with `configure-module`,
fills a remote mailbox with a deterministic corpus, creates a task through
`api-cli` exactly as an administrator would, waits for the sync and prints
the remote and local folder/message/byte counts side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from localnode import adminapi, corpus, dovecot, node
from localnode.config import LOCALNODE_SRC, ImapServer, load

REMOTE_USER = "alice@remote.test"
LOCAL_USER = "u1"
TASK_ID = "demo01"


def api_cli(action: str, data: object, check: bool = True) -> tuple[int, object, str]:
    env = dict(os.environ)
    env["PATH"] = f"{LOCALNODE_SRC / 'bin'}:{env['PATH']}"
    proc = subprocess.run(["api-cli", "run", action, "--data", json.dumps(data)],
                          capture_output=True, text=True, env=env)
    out = json.loads(proc.stdout) if proc.stdout.strip() else None
    if check and proc.returncode != 0:
        raise SystemExit(f"api-cli run {action} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc.returncode, out, proc.stderr


def counts(server: ImapServer, user: str) -> dict[str, tuple[int, int]]:
    """Messages and bytes per folder, as the server itself reports them."""
    proc = dovecot.doveadm(server, "-f", "flow", "mailbox", "status", "-u", user, "messages vsize", "*",
                           check=False)
    result: dict[str, tuple[int, int]] = {}
    for line in proc.stdout.decode(errors="replace").splitlines():
        fields = dict(part.split("=", 1) for part in line.split(" ") if "=" in part)
        name = line.split(" messages=", 1)[0].removeprefix("mailbox=")
        if "messages" in fields:
            result[name] = (int(fields["messages"]), int(fields.get("vsize", 0)))
    return result


def side_by_side(remote: dict[str, tuple[int, int]], local: dict[str, tuple[int, int]], sep: str) -> str:
    rows = [f"{'folder':32} {'remote msgs':>11} {'local msgs':>10} {'remote bytes':>13} {'local bytes':>12}"]
    for name in sorted(remote):
        lname = name.replace(sep, "/")
        lm, lb = local.get(lname, (0, 0))
        rm, rb = remote[name]
        rows.append(f"{lname:32} {rm:>11} {lm:>10} {rb:>13} {lb:>12}")
    rt = [sum(v[i] for v in remote.values()) for i in (0, 1)]
    lt = [sum(v[i] for v in local.values()) for i in (0, 1)]
    rows.append(f"{'TOTAL (' + str(len(remote)) + ' remote, ' + str(len(local)) + ' local folders)':32} "
                f"{rt[0]:>11} {lt[0]:>10} {rt[1]:>13} {lt[1]:>12}")
    return "\n".join(rows)


def main() -> int:
    cfg = load()
    print("== starting the local node (Redis, two Dovecots, agents)")
    node.up(cfg)
    _, conf, _ = api_cli("module/imapsync1/get-configuration", None)
    choice = conf["mail_server_URL"][0]
    uuid, host = choice["value"].split(",", 1)
    print(f"== configure-module: binding imapsync1 to {choice['label']}")
    api_cli("module/imapsync1/configure-module", {"mail_server": uuid, "mail_host": host})
    print(json.dumps(api_cli("module/imapsync1/get-configuration", None)[1], indent=2))

    remote = cfg.remote
    print(f"== filling the remote mailbox {REMOTE_USER} with a deterministic corpus")
    dovecot.wipe(remote, REMOTE_USER)
    dovecot.wipe(cfg.mail1, LOCAL_USER)
    corpus.fill(remote, REMOTE_USER, remote.users[REMOTE_USER], seed=1, count=120, large=2, large_size=1_500_000)

    actions = {p.name for p in (cfg.install_dir("imapsync1") / "actions").iterdir()}
    if "create-task" in actions:
        task = {
            "localuser": LOCAL_USER, "task_id": TASK_ID,
            "remotehostname": remote.host, "remoteport": remote.imap_port, "security": "tls",
            "remoteusername": REMOTE_USER, "remotepassword": remote.users[REMOTE_USER],
            "delete_local": False, "delete_remote": False, "delete_remote_older": 0,
            "exclude": "", "cron": "", "foldersynchronization": "all", "sieve_enabled": False,
        }
        api_cli("module/imapsync1/delete-task", {"localuser": LOCAL_USER, "task_id": TASK_ID}, check=False)
        print(f"== create-task {LOCAL_USER}_{TASK_ID}: {REMOTE_USER} on {remote.host}:{remote.imap_port} (STARTTLS)")
        api_cli("module/imapsync1/create-task", task)
        listing = api_cli("module/imapsync1/list-tasks", None)[1]
        print(json.dumps([t for t in listing["user_properties"] if t["task_id"] == TASK_ID], indent=2))
        deadline = time.monotonic() + 600
        if "start-task" not in actions:
            print("== (no sync runtime yet: the task is created and scheduled, nothing copies it)")
            deadline = 0
        while time.monotonic() < deadline:
            _, listing, _ = api_cli("module/imapsync1/list-tasks", None)
            mine = [t for t in listing["user_properties"] if t["task_id"] == TASK_ID]
            if mine and not mine[0]["service_running"] and mine[0].get("last_sync_exit_code") is not None:
                last = mine[0]
                status = json.loads((cfg.module_state_dir("imapsync1") / "imapsync" /
                                     f"{LOCAL_USER}_{TASK_ID}.status.json").read_text())
                print(f"== sync finished with exit code {last['last_sync_exit_code']}: "
                      f"{last['last_sync_state']} with the {status.get('engine') or '?'} engine, "
                      f"{last.get('last_sync_found')} of {last.get('last_sync_listed')} remote messages "
                      f"on the local server ({last['last_sync_reason']})")
                break
            time.sleep(2)
    else:
        print("== (create-task is not available: showing configuration only)")

    print("== remote and local mailboxes side by side")
    print(side_by_side(counts(remote, REMOTE_USER), counts(cfg.mail1, LOCAL_USER), remote.separator))
    print()
    print("The local node keeps running. Click through it in a browser (the cluster-admin stand-in):")
    print(f"  {adminapi.url(cfg)}  (user {adminapi.ADMIN_USER}, password {adminapi.ADMIN_PASSWORD})")
    print("or reach it with:")
    print("  export PATH=$PWD/tests/localnode/bin:$PATH")
    print("  api-cli run module/imapsync1/" + ("list-tasks" if "list-tasks" in actions else "get-configuration"))
    print("  runagent -m imapsync1 ls imapsync")
    print(f"Endpoints and test credentials: {cfg.node_json}")
    print("Stop it with: make down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
