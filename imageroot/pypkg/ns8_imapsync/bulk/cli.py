"""``imapsync-bulk-migrator``: staged migration of many mailboxes through local files.

    export    source accounts -> ./exported/<email>/<folder>/u<uid>.eml + .json
    audit     prove the export is complete and intact (files, hashes, RFC 822, source counts)
    import    exported messages -> target accounts, never a duplicate (re-runnable at any time)
    validate  prove the target holds exactly the export (identities per folder); --resync-missing
    test      Python, disk, a login per account (and imapsync --justconnect), as a table

Exit codes: 0 ok, 2 environment or config, 3 connectivity / panel / account failure,
4 audit failed, 5 validation mismatch, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from ns8_imapsync.imap.reads import LARGE_MESSAGE, Limits

from . import exitcodes
from .config import (
    DEFAULT_EXPORT_CONFIG,
    DEFAULT_IMPORT_CONFIG,
    ConfigError,
    MigrationConfig,
    TlsOptions,
    load_config,
    write_import_template,
)
from .pool import AccountResult, overall_exit, run_accounts
from .progress import ProgressDisplay, human_bytes
from .runlog import RunLog
from .secret import SecretError, read_secret

MODES = ("export", "import", "test", "validate", "audit")
EPILOG = """modes:
  export    Read every folder of every account of the config (default export.pass.config.json)
            without changing anything on the source (EXAMINE, BODY.PEEK) and write
            <output-dir>/<email>/<folder>/u<UID>.eml with a .json sidecar (flags, internal
            date, UID, UIDVALIDITY, size, Message-ID, SHA-256, header signature). Folder
            names are kept exactly (.folder.json holds the IMAP name). A re-run fetches only
            new messages and removes the files of messages gone from the source. Writes an
            import.pass.config.json template (mode 0600) next to the config when none
            exists, then runs the audit unless --no-audit-after-export.
  audit     Check the export: one .eml per message with a matching sidecar, size and
            SHA-256 as recorded, parses as RFC 822, no IMAP protocol text inside, and the
            local count of every folder equals the source's (skip that with --audit-offline).
  import    Append the exported messages to the accounts of import.pass.config.json,
            creating folders with the target's delimiter, keeping flags and internal dates.
            Messages already on the target (same Message-Id/Received signature, or same
            content for messages without them) are never appended again, so import can be
            re-run after a crash. --auto-provision-da creates missing mailboxes on a
            DirectAdmin panel first (and again if a login fails for authentication reasons).
  validate  Compare, per folder, the identities (signature or content hash, and size) of
            the exported messages with the target's; list missing and extra messages;
            exit 5 on any mismatch. --resync-missing appends exactly the missing ones.
  test      Check the Python version, the free disk space, a login per account (and
            imapsync --justconnect when imapsync is installed) and print a table.

certificates: IMAP server certificates are verified. Use --ca-file for a private CA, or
  --insecure to accept any certificate (self-signed test servers).
secrets: passwords live in the config files (keep them mode 0600). The DirectAdmin
  password is read from --da-password-file, then $DA_PASSWORD, then --da-password
  (visible to other users: warned), then a terminal prompt.
exit codes: 0 ok, 2 environment/config, 3 connectivity/panel/account failure,
  4 audit failed, 5 validation mismatch, 130 interrupted.
"""


def default_workers() -> int:
    return min(32, max(4, os.cpu_count() or 4))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="imapsync-bulk-migrator", description="Export, audit, import and validate many IMAP mailboxes.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", required=True, choices=MODES, help="what to do (see below)")
    p.add_argument("--config", help=f"accounts and server (default: {DEFAULT_EXPORT_CONFIG} for export, test, "
                                    f"audit; {DEFAULT_IMPORT_CONFIG} for import, validate)")
    p.add_argument("--output-dir", help="where export writes (and audit/test look); default ./exported")
    p.add_argument("--input-dir", help="where import/validate read; default ./exported")
    p.add_argument("--max-workers", type=int, default=default_workers(),
                   help="accounts processed in parallel (default: CPU cores, at least 4, at most 32: %(default)s)")
    p.add_argument("--ignore-errors", action="store_true",
                   help="go on with the other accounts when one fails (default: stop at the first failure)")
    p.add_argument("--log-dir", default="./logs", help="one timestamped log file per run (default ./logs)")
    p.add_argument("--min-free-gb", type=float, default=1.0,
                   help="refuse to export (or warn in test) below this free space (default 1.0)")
    p.add_argument("--resync-missing", action="store_true", help="validate: append the missing messages")
    p.add_argument("--no-audit-after-export", action="store_true", help="export: skip the automatic audit")
    p.add_argument("--audit-offline", action="store_true", help="audit: only check the files, no source login")
    p.add_argument("--verify-content", action="store_true",
                   help="validate: also download every target message and compare its SHA-256")
    p.add_argument("--imap-timeout", type=float, default=60, help="seconds per IMAP network operation")
    p.add_argument("--insecure", "--no-verify-ssl", dest="insecure", action="store_true",
                   help="accept any IMAP server certificate (self-signed); not for production")
    p.add_argument("--ca-file", help="PEM CA bundle to verify IMAP server certificates against")
    p.add_argument("--large-message-bytes", type=int, default=LARGE_MESSAGE,
                   help="messages above this size are streamed in chunks, never held in memory")
    da = p.add_argument_group("DirectAdmin provisioning (import)")
    da.add_argument("--auto-provision-da", action="store_true",
                    help="create missing target mailboxes on a DirectAdmin panel (same address and password)")
    da.add_argument("--da-url", help="panel URL, e.g. https://panel.example.com:2222")
    da.add_argument("--da-username", help="panel user owning the domains")
    da.add_argument("--da-password", help="panel password or login key (prefer --da-password-file or $DA_PASSWORD)")
    da.add_argument("--da-password-file", help="file holding the panel password")
    da.add_argument("--da-no-verify-ssl", action="store_true", help="accept the panel's self-signed certificate")
    da.add_argument("--da-dry-run", action="store_true", help="only print which mailboxes would be created")
    da.add_argument("--da-quota-mb", type=int, default=0, help="quota of created mailboxes in MB (0 = unlimited)")
    return p


class EnvironmentProblem(Exception):
    pass


def free_gb(path: Path) -> float:
    probe = path.resolve()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe).free / 1e9


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return exitcodes.INTERRUPTED


def _run(args: argparse.Namespace) -> int:
    mode = args.mode
    if args.max_workers < 1:
        print("error: --max-workers must be at least 1", file=sys.stderr)
        return exitcodes.ENVIRONMENT
    try:
        log = RunLog(Path(args.log_dir), mode)
    except OSError as exc:
        print(f"error: cannot write logs in {args.log_dir}: {exc.strerror}", file=sys.stderr)
        return exitcodes.ENVIRONMENT
    try:
        return _run_logged(args, log)
    except EnvironmentProblem as exc:
        log.error(str(exc))
        return exitcodes.ENVIRONMENT
    finally:
        if log.path:
            print(f"log file: {log.path}", file=sys.stderr)
        log.close()


def _stop_on_signals(log: RunLog) -> tuple[threading.Event, threading.Event]:
    """SIGINT/SIGTERM: finish the current batch and stop (a second one aborts)."""
    stop, interrupted = threading.Event(), threading.Event()

    def on_signal(signum, _frame):
        if stop.is_set() and interrupted.is_set():
            raise KeyboardInterrupt
        interrupted.set()
        stop.set()
        log.warn(f"signal {signal.Signals(signum).name}: stopping after the current batch (again to abort)")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
    return stop, interrupted


def _run_logged(args: argparse.Namespace, log: RunLog) -> int:
    mode = args.mode
    from .probe import python_ok
    ok, pytext = python_ok()
    if not ok:
        raise EnvironmentProblem(pytext)
    data_dir = Path(args.input_dir or args.output_dir or "./exported") if mode in ("import", "validate") \
        else Path(args.output_dir or args.input_dir or "./exported")
    default_cfg = DEFAULT_IMPORT_CONFIG if mode in ("import", "validate") else DEFAULT_EXPORT_CONFIG
    try:
        cfg = load_config(args.config or default_cfg)
    except ConfigError as exc:
        raise EnvironmentProblem(str(exc)) from None
    log.add_secrets(a.password for a in cfg.accounts)
    for w in cfg.warnings:
        log.warn(w)
    if args.ca_file and not Path(args.ca_file).is_file():
        raise EnvironmentProblem(f"--ca-file {args.ca_file} does not exist")
    tls = TlsOptions(verify=not args.insecure, ca_file=args.ca_file, timeout=args.imap_timeout)
    if args.insecure:
        log.warn("--insecure: IMAP server certificates are NOT verified")
    limits = Limits(large_message=max(1024, args.large_message_bytes),
                    chunk_size=min(4 * 1024 * 1024, max(1024, args.large_message_bytes // 2)))
    stop, interrupted = _stop_on_signals(log)
    log.info(f"{mode}: {len(cfg.accounts)} account(s) on {cfg.server.where} "
             f"({'IMAPS' if cfg.server.ssl else 'STARTTLS' if cfg.server.starttls else 'plain/STARTTLS if offered'}), "
             f"data in {data_dir}, {args.max_workers} worker(s)")
    if mode in ("export", "test"):
        free = free_gb(data_dir)
        if free < args.min_free_gb:
            text = f"only {free:.2f} GB free at {data_dir}, --min-free-gb is {args.min_free_gb}"
            if mode == "export":
                raise EnvironmentProblem(text)
            log.warn(text)
    if mode == "test":
        return _test(args, cfg, tls, log, stop, data_dir)
    if mode == "export":
        return _export(args, cfg, tls, log, stop, interrupted, data_dir, limits)
    if mode == "audit":
        return _audit(args, cfg, tls, log, stop, interrupted, data_dir)
    if not data_dir.is_dir():
        raise EnvironmentProblem(f"input directory {data_dir} does not exist (run the export first)")
    provisioner = _provisioner(args, log) if args.auto_provision_da else None
    if provisioner is not None:
        code = _provision_upfront(cfg, provisioner, log, args)
        if code is not None:
            return code
    if mode == "import":
        return _import(args, cfg, tls, log, stop, interrupted, data_dir, limits, provisioner)
    return _validate(args, cfg, tls, log, stop, interrupted, data_dir, limits, provisioner)


# ---- DirectAdmin -------------------------------------------------------------
def _provisioner(args: argparse.Namespace, log: RunLog):
    if args.mode != "import" and not args.resync_missing:
        raise EnvironmentProblem("--auto-provision-da works with --mode import (or validate --resync-missing)")
    if not args.da_url or not args.da_username:
        raise EnvironmentProblem("--auto-provision-da needs --da-url and --da-username")
    if args.da_quota_mb < 0:
        raise EnvironmentProblem("--da-quota-mb must be 0 (unlimited) or more")
    try:
        password = read_secret(flag_value=args.da_password, file=args.da_password_file, env_name="DA_PASSWORD",
                               what="DirectAdmin password")
    except SecretError as exc:
        raise EnvironmentProblem(str(exc)) from None
    if not password:
        raise EnvironmentProblem("no DirectAdmin password: use --da-password-file or $DA_PASSWORD")
    log.add_secrets([password])
    from .directadmin import DirectAdminClient, DirectAdminError, Provisioner
    try:
        client = DirectAdminClient(args.da_url, args.da_username, password, verify_ssl=not args.da_no_verify_ssl)
        return Provisioner(client, args.da_quota_mb, args.da_dry_run, log.info)
    except DirectAdminError as exc:
        raise EnvironmentProblem(f"DirectAdmin: {exc}") from None


def _provision_upfront(cfg: MigrationConfig, provisioner, log: RunLog, args: argparse.Namespace) -> int | None:
    """Create missing mailboxes before the import; with --da-dry-run print and stop."""
    from .directadmin import DirectAdminError
    outcomes: dict[str, int] = {}
    for account in cfg.accounts:
        try:
            outcome = provisioner.ensure(account.email, account.password)
        except DirectAdminError as exc:
            log.error(f"{account.email}: DirectAdmin: {exc}")
            if not args.ignore_errors:
                return exitcodes.CONNECTIVITY
            outcomes["failed"] = outcomes.get("failed", 0) + 1
            continue
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    log.info("DirectAdmin: " + ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items())))
    if args.da_dry_run:
        log.info("--da-dry-run: nothing was created and nothing imported")
        return exitcodes.CONNECTIVITY if outcomes.get("failed") else exitcodes.OK
    return None


# ---- modes -------------------------------------------------------------------
def _summary(results: list[AccountResult], log: RunLog, progress: ProgressDisplay | None, mode: str) -> None:
    if progress is not None:
        progress.close()
    ok = sum(1 for r in results if r.ok)
    log.info(f"{mode} summary: {ok} ok, {len(results) - ok} not ok of {len(results)} account(s)"
             + (f"; {progress.messages} messages, {human_bytes(progress.bytes)}, {progress.rate()}"
                if progress is not None and progress.messages else ""))
    for r in results:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(r.counts.items()))
        line = f"  {r.email}: {r.status}" + (f" ({counts})" if counts else "") + (f": {r.error}" if r.error and not r.ok else "")
        (log.info if r.ok else log.error)(line)


def _pool(args, cfg, log, stop, job, accounts=None) -> list[AccountResult]:
    return run_accounts(accounts or cfg.accounts, job, workers=args.max_workers,
                        ignore_errors=args.ignore_errors, stop=stop, log=log)


def _tracked(progress: ProgressDisplay, job):
    def run(account, result):
        progress.start(account.email)
        try:
            job(account, result)
        finally:
            progress.finish(account.email)
    return run


def _test(args, cfg, tls, log, stop, data_dir) -> int:
    from .probe import imapsync_justconnect, probe_account, python_ok, table
    _, pytext = python_ok()
    log.info(f"{pytext}; {free_gb(data_dir):.1f} GB free at {data_dir}")
    jc = imapsync_justconnect(cfg.server)
    log.info(jc.text)
    results = run_accounts(cfg.accounts, lambda a, r: probe_account(a, r, cfg.server, tls),
                           workers=args.max_workers, ignore_errors=True, stop=stop, log=log)
    log.info(table(results, jc))
    failed = sum(1 for r in results if not r.ok)
    if failed or not jc.ok:
        log.error(f"test: {failed} account(s) cannot log in" + ("" if jc.ok else "; imapsync --justconnect failed"))
        return exitcodes.CONNECTIVITY
    log.info(f"test: all {len(results)} account(s) can log in")
    return exitcodes.OK


def _export(args, cfg, tls, log, stop, interrupted, data_dir, limits) -> int:
    from .context import RunContext
    from .export import export_account
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    template = cfg.path.with_name(DEFAULT_IMPORT_CONFIG)
    if write_import_template(cfg, template):
        log.info(f"wrote {template} (mode 0600): set the target server there before importing")
    progress = ProgressDisplay(log, len(cfg.accounts), "exported")
    ctx = RunContext(cfg.server, tls, data_dir, log, progress, stop, limits)
    results = _pool(args, cfg, log, stop, _tracked(progress, lambda a, r: export_account(a, r, ctx)))
    _summary(results, log, progress, "export")
    code = overall_exit(results, interrupted.is_set())
    if code != exitcodes.OK or args.no_audit_after_export:
        return code
    return _audit(args, cfg, tls, log, stop, interrupted, data_dir)


def _audit(args, cfg, tls, log, stop, interrupted, data_dir) -> int:
    from .audit import AuditContext, audit_account
    if not data_dir.is_dir():
        raise EnvironmentProblem(f"export directory {data_dir} does not exist")
    progress = ProgressDisplay(log, len(cfg.accounts), "audited")
    ctx = AuditContext(None if args.audit_offline else cfg.server, tls, data_dir, log, progress, stop)
    results = _pool(args, cfg, log, stop, _tracked(progress, lambda a, r: audit_account(a, r, ctx)))
    _summary(results, log, progress, "audit")
    return overall_exit(results, interrupted.is_set())


def _import(args, cfg, tls, log, stop, interrupted, data_dir, limits, provisioner) -> int:
    from .importer import ImportContext, import_account
    progress = ProgressDisplay(log, len(cfg.accounts), "imported")
    ctx = ImportContext(cfg.server, tls, data_dir, log, progress, stop, limits, provisioner)
    results = _pool(args, cfg, log, stop, _tracked(progress, lambda a, r: import_account(a, r, ctx)))
    _summary(results, log, progress, "import")
    return overall_exit(results, interrupted.is_set())


def _validate(args, cfg, tls, log, stop, interrupted, data_dir, limits, provisioner) -> int:
    from .validate import ValidateContext, validate_account
    progress = ProgressDisplay(log, len(cfg.accounts), "checked")
    ctx = ValidateContext(cfg.server, tls, data_dir, log, progress, stop, limits, provisioner,
                          resync_missing=args.resync_missing, deep=args.verify_content)
    results = _pool(args, cfg, log, stop, _tracked(progress, lambda a, r: validate_account(a, r, ctx)))
    _summary(results, log, progress, "validate")
    return overall_exit(results, interrupted.is_set())


if __name__ == "__main__":
    sys.exit(main())
