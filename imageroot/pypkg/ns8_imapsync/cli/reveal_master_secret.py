"""bin/reveal-master-secret: fetch the mail module's master credentials.

Run by the service's ExecStartPre. The password is written to
`imapsync/vmail.pwd` (0600, ``layout.Layout.master_password``), the only place the sync container reads it from.
The mail module may still be starting, so a failure is retried.
"""

from __future__ import annotations

import sys
import time

from ns8_imapsync import files, ns8
from ns8_imapsync.layout import Layout

ATTEMPTS = 6
DELAY = 10


def mail_agent_id() -> str | None:
    module = ns8.env_get("MAIL_MODULE")
    if module:
        return f"module/{module}"
    uuid = ns8.env_get("MAIL_SERVER")
    if not uuid:
        return None
    found = ns8.imap_providers({"module_uuid": uuid})
    return f"module/{found[0]['module_id']}" if found else None


def main() -> int:
    state = Layout()
    files.ensure_dir(state.tasks_dir)
    for attempt in range(1, ATTEMPTS + 1):
        agent_id = mail_agent_id()
        if agent_id is None:
            ns8.log("the module is not configured: no mail server bound", ns8.SD_ERR)
            return 1
        try:
            result = ns8.run_task(agent_id, "reveal-master-credentials")
            if result["exit_code"] == 0 and isinstance(result["output"], dict):
                files.write_atomic(state.master_password, result["output"]["password"] + "\n", 0o600)
                return 0
            reason = f"exit code {result['exit_code']}"
        except Exception as exc:  # transport errors: retry like the reference module
            reason = f"{type(exc).__name__}: {exc}"
        ns8.log(f"reveal-master-credentials on {agent_id} failed ({reason}), attempt {attempt}/{ATTEMPTS}",
                ns8.SD_WARNING)
        if attempt < ATTEMPTS:
            time.sleep(DELAY)
    return 1


if __name__ == "__main__":
    sys.exit(main())
