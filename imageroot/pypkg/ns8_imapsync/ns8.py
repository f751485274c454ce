"""The one door to NS8's `agent` library.

Every other module talks to the platform through these functions, so the
rest of the package imports without NS8 (in the container, in unit tests)
and a platform change is made in one place.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import agent  # NS8's agent package; only this module imports it
import agent.tasks

SD_ERR = agent.SD_ERR
SD_WARNING = agent.SD_WARNING
SD_INFO = agent.SD_INFO


def env_get(name: str, default: str | None = None) -> str | None:
    """A value of the module's `environment` file, read now (not os.environ:
    a value set by an earlier step of this action is only in the file)."""
    return agent.read_envfile("environment").get(name, default)


def set_env(values: dict[str, str]) -> None:
    agent.mset_env(values)


def unset_env(names: list[str]) -> None:
    agent.munset_env(names)


def redis(privileged: bool = False):
    return agent.redis_connect(privileged=privileged)


def imap_providers(filters: dict[str, str] | None = None) -> list[dict]:
    """Mail modules publishing an IMAP endpoint (`*/srv/tcp/imap`)."""
    return agent.list_service_providers(redis(), "imap", "tcp", filters or {})


def run_task(agent_id: str, action: str, data: Any = None) -> dict:
    """Run an action of another module (api-server semantics: roles apply)."""
    return agent.tasks.run(agent_id, action, data if data is not None else {},
                           extra={"isNotificationHidden": True})


def set_weight(step: str, weight: int) -> None:
    agent.set_weight(step, weight)


def set_progress(value: int) -> None:
    agent.set_progress(value)


def fail_validation(errors: list[dict], exit_code: int) -> None:
    """NS8's custom validation: status validation-failed, the error list on
    stdout, a non-zero exit. Never returns."""
    agent.set_status("validation-failed")
    json.dump(errors, sys.stdout)
    sys.exit(exit_code)


def log(message: str, level: str = SD_INFO) -> None:
    print(level + message, file=sys.stderr)
