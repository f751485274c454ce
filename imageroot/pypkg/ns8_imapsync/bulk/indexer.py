"""`directadmin-indexer`: build the bulk migrator's `export.pass.config.json`
from a DirectAdmin panel instead of typing thousands of addresses.

Read-only on the panel: it lists the user's domains, lets the operator pick
some (a numbered menu on a terminal, `--domains` otherwise), lists their
mailboxes and writes one account per mailbox. DirectAdmin never gives mailbox
passwords back, so every account gets the same `--default-password` or an empty
one for the operator to fill in. The file holds passwords: mode 0600, written
atomically, never over an existing file unless asked.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from ns8_imapsync import files
from ns8_imapsync.bulk import exitcodes
from ns8_imapsync.bulk.directadmin import DirectAdminClient, DirectAdminError
from ns8_imapsync.bulk.secret import SecretError, read_secret

DEFAULT_OUT = "export.pass.config.json"

EPILOG = """\
example:
    directadmin-indexer --url https://panel.example.com:2222 --username admin \\
        --password-file ~/.da-pass --imap-host mail.example.com --out export.pass.config.json
  then fill in the passwords in export.pass.config.json (or give one to all
  accounts with --default-password-file) and run:
    imapsync-bulk-migrator --mode test

passwords:
  panel password: --password-file FILE, else $DA_PASSWORD, else --password (warns:
  visible to other users), else a prompt on a terminal.
  default mailbox password: --default-password-file FILE, else $DA_DEFAULT_PASSWORD,
  else --default-password (warns), else empty.

exit codes: 0 written, 2 usage/config/file problem, 3 panel unreachable or refused, 130 interrupted.
"""


class UsageError(Exception):
    """Something the operator must fix in the command or the files (exit 2)."""


@dataclass(frozen=True)
class Server:
    host: str
    port: int
    ssl: bool
    starttls: bool


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="directadmin-indexer",
        description="List the mailboxes of a DirectAdmin user's domains and write an "
                    "export.pass.config.json for imapsync-bulk-migrator. Read-only on the panel.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    panel = ap.add_argument_group("panel")
    panel.add_argument("--url", required=True, help="panel URL, e.g. https://panel.example.com:2222")
    panel.add_argument("--username", required=True, help="DirectAdmin user owning the domains")
    panel.add_argument("--password", help="panel password or login key (prefer --password-file or $DA_PASSWORD)")
    panel.add_argument("--password-file", help="file holding the panel password or login key")
    panel.add_argument("--no-verify-ssl", action="store_true",
                       help="accept a self-signed or otherwise unverifiable panel certificate")
    panel.add_argument("--timeout", type=float, default=30, help="seconds to wait for the panel (default 30)")
    panel.add_argument("--domains", help="comma-separated domains to take, without the menu (default: "
                                         "the menu on a terminal, all domains otherwise)")
    imap = ap.add_argument_group("IMAP server written into the config (the source of the export)")
    imap.add_argument("--imap-host", required=True, help="IMAP host name of the mailboxes")
    imap.add_argument("--imap-port", type=int,
                      help="IMAP port (default 993 with TLS, 143 with --no-imap-ssl or --imap-starttls)")
    imap.add_argument("--imap-ssl", dest="imap_ssl", action="store_true", default=True,
                      help="IMAPS, TLS from the first byte (the default)")
    imap.add_argument("--no-imap-ssl", dest="imap_ssl", action="store_false", help="no implicit TLS")
    imap.add_argument("--imap-starttls", action="store_true", help="plain port upgraded with STARTTLS")
    out = ap.add_argument_group("output")
    out.add_argument("--out", default=DEFAULT_OUT, help=f"file to write (default {DEFAULT_OUT})")
    out.add_argument("--overwrite", action="store_true", help="replace the file if it exists")
    out.add_argument("--default-password",
                     help="password written for every account (prefer --default-password-file "
                          "or $DA_DEFAULT_PASSWORD); default empty")
    out.add_argument("--default-password-file", help="file holding the password written for every account")
    return ap


def imap_server(args: argparse.Namespace) -> Server:
    """STARTTLS and implicit TLS exclude each other; the port follows the choice."""
    use_ssl = bool(args.imap_ssl) and not args.imap_starttls
    port = args.imap_port if args.imap_port is not None else (993 if use_ssl else 143)
    if not 0 < port < 65536:
        raise UsageError(f"--imap-port {port} is not a port number")
    return Server(args.imap_host, port, use_ssl, bool(args.imap_starttls))


# ---------------------------------------------------------------------------
# domain choice
# ---------------------------------------------------------------------------


def parse_selection(text: str, count: int) -> list[int]:
    """0-based indexes from what the operator typed: numbers and ranges
    (`1-3,5`, spaces allowed), empty or `all` for everything. Raises ValueError
    with a reason."""
    text = text.strip()
    if not text or text.lower() in ("all", "*"):
        return list(range(count))
    chosen: set[int] = set()
    for token in text.replace(",", " ").split():
        first, dash, last = token.partition("-")
        try:
            lo = int(first)
            hi = int(last) if dash else lo
        except ValueError:
            raise ValueError(f"{token!r} is not a number or a range like 2-4") from None
        if lo > hi:
            raise ValueError(f"the range {token!r} goes backwards")
        if lo < 1 or hi > count:
            raise ValueError(f"{token!r} is outside 1-{count}")
        chosen.update(range(lo - 1, hi))
    return sorted(chosen)


def choose_in_menu(domains: list[str]) -> list[str]:
    """A numbered menu on the terminal, asked again until the answer is valid."""
    print(f"{len(domains)} domain(s):")
    width = len(str(len(domains)))
    for i, domain in enumerate(domains, 1):
        print(f"  {i:>{width}}) {domain}")
    while True:
        answer = input("Domains to index (numbers and ranges like 1-3,5; Enter for all): ")
        try:
            picked = parse_selection(answer, len(domains))
        except ValueError as exc:
            print(f"invalid selection: {exc}; try again")
            continue
        return [domains[i] for i in picked]


def choose_by_flag(flag: str, domains: list[str]) -> list[str]:
    wanted = [d.strip().lower() for d in flag.split(",") if d.strip()]
    if not wanted:
        raise UsageError("--domains is empty")
    unknown = [d for d in wanted if d not in domains]
    if unknown:
        raise UsageError(f"not domains of this panel user: {', '.join(unknown)} "
                         f"(its domains: {', '.join(domains)})")
    return [d for d in domains if d in wanted]


# ---------------------------------------------------------------------------
# output
# ---------------------------------------------------------------------------


def refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise UsageError(f"{out} exists; add --overwrite to replace it")
    if not out.parent.is_dir():
        raise UsageError(f"the directory of {out} does not exist")


def write_config(out: Path, config: dict, overwrite: bool) -> None:
    """Mode 0600 from the first byte, complete or absent; without `overwrite`
    the final link fails if the file appeared meanwhile."""
    data = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    try:
        files.write_atomic(out, data, 0o600, overwrite=overwrite)
    except FileExistsError:
        raise UsageError(f"{out} exists; add --overwrite to replace it") from None


# ---------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    server = imap_server(args)
    out = Path(args.out)
    refuse_existing(out, args.overwrite)
    try:
        panel_password = read_secret(flag_value=args.password, file=args.password_file,
                                     env_name="DA_PASSWORD", what="DirectAdmin password")
        default_password = read_secret(flag_value=args.default_password, file=args.default_password_file,
                                       env_name="DA_DEFAULT_PASSWORD", what="default mailbox password",
                                       prompt=False)
    except SecretError as exc:
        raise UsageError(str(exc)) from None
    if not panel_password:
        raise UsageError("no panel password: give --password-file FILE or $DA_PASSWORD")
    if args.no_verify_ssl:
        print("warning: the panel's TLS certificate is not verified (--no-verify-ssl)", file=sys.stderr)

    with DirectAdminClient(args.url, args.username, panel_password, verify_ssl=not args.no_verify_ssl,
                           timeout=args.timeout) as client:
        domains = client.list_domains()
        if not domains:
            raise UsageError(f"the panel user {args.username!r} has no domains; nothing to write")
        if args.domains:
            chosen = choose_by_flag(args.domains, domains)
        elif sys.stdin.isatty():
            chosen = choose_in_menu(domains)
        else:
            print(f"stdin is not a terminal: taking all {len(domains)} domain(s) "
                  "(use --domains to choose)")
            chosen = domains
        print(f"indexing {len(chosen)} domain(s): {', '.join(chosen)}")
        accounts: list[dict[str, str]] = []
        for domain in chosen:
            users = sorted(client.list_mailboxes(domain))
            print(f"  {domain}: {len(users)} mailbox(es)")
            accounts.extend({"email": f"{user}@{domain}", "password": default_password or ""}
                            for user in users)
    if not accounts:
        raise UsageError("the chosen domains have no mailboxes; nothing written")

    config = {
        "server": {"host": server.host, "port": server.port, "ssl": server.ssl, "starttls": server.starttls},
        "accounts": accounts,
    }
    write_config(out, config, args.overwrite)
    print(f"wrote {len(accounts)} account(s) to {out} (mode 0600)")
    if default_password:
        print("every account has the default password; change those that differ before the export")
    else:
        print(f"the passwords in {out} are empty (DirectAdmin never reveals them): "
              "fill them in before the export")
    return exitcodes.OK


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return run(args)
    except UsageError as exc:
        print(f"directadmin-indexer: {exc}", file=sys.stderr)
        return exitcodes.ENVIRONMENT
    except DirectAdminError as exc:
        print(f"directadmin-indexer: {exc}", file=sys.stderr)
        return exitcodes.CONNECTIVITY
    except EOFError:
        print("\ndirectadmin-indexer: no answer on the terminal; nothing written", file=sys.stderr)
        return exitcodes.ENVIRONMENT
    except KeyboardInterrupt:
        print("\ndirectadmin-indexer: interrupted; nothing written", file=sys.stderr)
        return exitcodes.INTERRUPTED
    except OSError as exc:
        print(f"directadmin-indexer: {exc.strerror or exc}: {exc.filename or args.out}", file=sys.stderr)
        return exitcodes.ENVIRONMENT


if __name__ == "__main__":
    sys.exit(main())
