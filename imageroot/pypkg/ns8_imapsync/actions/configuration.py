"""configure-module, get-configuration: which mail module the tasks sync into.

The binding is the mail module's UUID (stable across renames and moves);
MAIL_HOST and MAIL_PORT are the endpoint it publishes in its `srv` key, kept
in the environment so the service and the container need no Redis access.
"""

from __future__ import annotations

import json
import subprocess
import sys

from ns8_imapsync import ns8
from ns8_imapsync.statedir import StateDir
from ns8_imapsync.upgrade import upgrade_task_files

SERVICE = "imapsync.service"


def provider_for(mail_server: str) -> dict | None:
    found = ns8.imap_providers({"module_uuid": mail_server})
    return found[0] if found else None


def validate_configure(request: dict) -> None:
    """configure-module/02validate: the mail server must publish IMAP."""
    if provider_for(request["mail_server"]) is None:
        ns8.fail_validation(
            [{"field": "mail_server", "parameter": "mail_server", "value": request["mail_server"],
              "error": "mail_server_is_not_valid"}],
            3,
        )


def configure(request: dict) -> None:
    """configure-module/20configure."""
    provider = provider_for(request["mail_server"])
    assert provider is not None  # validated by the previous step
    to_set, to_unset = _settings_env(request)
    ns8.set_env({
        "MAIL_SERVER": request["mail_server"],
        "MAIL_HOST": request["mail_host"],
        "MAIL_PORT": str(provider.get("port") or "143"),
        "MAIL_MODULE": provider["module_id"],
        **to_set,
    })
    if to_unset:
        ns8.unset_env(to_unset)


# configure-module field -> environment variable (read by the sync container)
SETTINGS = {
    "engine": "SYNC_ENGINE",
    "max_concurrent_syncs": "SYNC_MAX_CONCURRENT",
    "max_syncs_per_host": "SYNC_MAX_PER_HOST",
    "stall_minutes": "SYNC_STALL_SECONDS",
}


def _settings_env(request: dict) -> tuple[dict[str, str], list[str]]:
    """Values to set and variables to unset (0 or "" means: the default)."""
    to_set, to_unset = {}, []
    for field, var in SETTINGS.items():
        if field not in request:
            continue
        value = request[field]
        if value in ("", 0):
            to_unset.append(var)
        else:
            to_set[var] = str(value * 60 if field == "stall_minutes" else value)
    return to_set, to_unset


def _settings_out() -> dict:
    out: dict = {}
    for field, var in SETTINGS.items():
        raw = ns8.env_get(var, "") or ""
        if field == "engine":
            out[field] = raw
        else:
            n = int(raw) if raw.isdigit() else 0
            out[field] = n // 60 if field == "stall_minutes" else n
    return out


def get_configuration() -> dict:
    providers = ns8.imap_providers()
    return {
        **_settings_out(),
        "mail_server": ns8.env_get("MAIL_SERVER", "") or "",
        "mail_host": ns8.env_get("MAIL_HOST", "") or "",
        "mail_server_URL": [
            {
                "name": p["module_id"],
                "label": f"{p['module_id']} ({p.get('mail_hostname', '')})",
                "value": f"{p['module_uuid']},{p['host']}",
            }
            for p in providers
            if p.get("module_uuid")
        ],
    }


def main_get_configuration() -> None:
    json.dump(get_configuration(), sys.stdout)


def on_mail_settings_changed(payload: dict) -> None:
    """events/mail-settings-changed: every mail module fires it; act only on
    ours, refreshing the endpoint and restarting the service if it runs."""
    ours = ns8.env_get("MAIL_SERVER")
    if not ours or payload.get("module_uuid") != ours:
        return
    provider = provider_for(ours)
    if provider is None:
        ns8.log(f"mail server {ours} no longer publishes IMAP", ns8.SD_WARNING)
        return
    ns8.set_env({"MAIL_HOST": provider["host"], "MAIL_PORT": str(provider.get("port") or "143"),
                 "MAIL_MODULE": provider["module_id"]})
    subprocess.run(["systemctl", "--user", "try-restart", SERVICE], check=False)


def restore_environment(request: dict) -> None:
    """restore-module/06copyenv: bind to the backup's mail server when it
    exists here; on another cluster its UUID does not, so bind to the only
    mail server if there is exactly one, else leave Settings to the admin."""
    wanted = (request.get("environment") or {}).get("MAIL_SERVER", "")
    provider = provider_for(wanted) if wanted else None
    if provider is None:
        providers = [p for p in ns8.imap_providers() if p.get("module_uuid")]
        if len(providers) == 1:
            provider = providers[0]
            ns8.log(f"mail server {wanted or '(none)'} of the backup is not here: bound to {provider['module_id']}",
                    ns8.SD_WARNING)
        else:
            ns8.log("the backup's mail server is not here: choose one in Settings", ns8.SD_WARNING)
            return
    ns8.set_env({"MAIL_SERVER": provider["module_uuid"], "MAIL_HOST": provider["host"],
                 "MAIL_PORT": str(provider.get("port") or "143"), "MAIL_MODULE": provider["module_id"]})


def upgrade_tasks_and_restart() -> None:
    """restore-module/60systemd and update-module.d: old task files upgraded,
    then the service (re)started when a mail server is bound."""
    upgraded, unreadable = upgrade_task_files(StateDir())
    if upgraded:
        ns8.log(f"upgraded {len(upgraded)} task file(s) from the previous format")
    for name in unreadable:
        ns8.log(f"task file {name} could not be read and was left as it is", ns8.SD_WARNING)
    if ns8.env_get("MAIL_SERVER"):
        subprocess.run(["systemctl", "--user", "enable", SERVICE], check=True)
        subprocess.run(["systemctl", "--user", "restart", SERVICE], check=True)
