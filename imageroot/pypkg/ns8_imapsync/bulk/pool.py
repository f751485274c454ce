"""Running one job per account in parallel, with the seed tool's error policy:
stop at the first failing account unless ``--ignore-errors``.

Each account's outcome is an :class:`AccountResult`; nothing is ever reported as
"completed" when part of it failed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from . import exitcodes
from .config import Account
from .runlog import RunLog


class AccountFailed(Exception):
    """The account's job cannot go on; ``exit_code`` says which kind of failure it is."""

    def __init__(self, text: str, exit_code: int = exitcodes.CONNECTIVITY) -> None:
        super().__init__(text)
        self.exit_code = exit_code


class Stopped(Exception):
    """A stop was requested (Ctrl-C, TERM, or another account failed)."""


@dataclass
class AccountResult:
    email: str
    status: str = "ok"  # ok | failed | stopped | not-started
    exit_code: int = exitcodes.OK
    error: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # message-level errors, mismatches

    def add(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    @property
    def ok(self) -> bool:
        return self.status == "ok"


Job = Callable[[Account, AccountResult], None]


def run_accounts(accounts: Sequence[Account], job: Job, *, workers: int, ignore_errors: bool,
                 stop: threading.Event, log: RunLog) -> list[AccountResult]:
    """Run ``job`` for every account on ``workers`` threads; results in config order."""
    results = {a.email: AccountResult(a.email, status="not-started") for a in accounts}
    pending = list(accounts)
    running: dict[Future, Account] = {}

    def one(account: Account) -> None:
        result = results[account.email]
        result.status = "ok"
        try:
            job(account, result)
        except Stopped:
            result.status, result.exit_code = "stopped", exitcodes.INTERRUPTED
            result.error = "stopped before the end"
        except AccountFailed as exc:
            result.status, result.exit_code, result.error = "failed", exc.exit_code, str(exc)
        except Exception as exc:  # a bug or an unexpected server reply: this account only
            result.status, result.exit_code = "failed", exitcodes.CONNECTIVITY
            result.error = f"unexpected error: {type(exc).__name__}: {exc}"
        if result.status == "failed":
            log.error(f"{account.email}: FAILED: {result.error}")

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="account") as pool:
        while pending or running:
            while pending and len(running) < workers and not stop.is_set():
                account = pending.pop(0)
                running[pool.submit(one, account)] = account
            if not running:
                break
            done, _ = wait(list(running), timeout=0.5, return_when=FIRST_COMPLETED)
            for fut in done:
                account = running.pop(fut)
                res = results[account.email]
                # findings (audit problems, validation mismatches) are reported, not errors to stop on
                if res.status == "failed" and res.exit_code in (exitcodes.CONNECTIVITY, exitcodes.ENVIRONMENT) \
                        and not ignore_errors and not stop.is_set():
                    log.error("stopping at the first failed account (use --ignore-errors to go on)")
                    stop.set()
    return [results[a.email] for a in accounts]


def overall_exit(results: Sequence[AccountResult], interrupted: bool) -> int:
    """The run's exit code: interruption first, then the most severe account failure."""
    if interrupted:
        return exitcodes.INTERRUPTED
    codes = [r.exit_code for r in results if r.exit_code != exitcodes.OK]
    if not codes:
        return exitcodes.OK
    for code in (exitcodes.ENVIRONMENT, exitcodes.CONNECTIVITY, exitcodes.AUDIT_FAILED,
                 exitcodes.VALIDATION_MISMATCH):
        if code in codes:
            return code
    return codes[0]
