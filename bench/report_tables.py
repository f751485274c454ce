"""The Markdown tables of bench/README.md, one function per benchmark, from a results file."""

from __future__ import annotations

from stats import ratio
from targets import _fmt, med, own_busy

ENGINE_LABELS = {"native": "native engine", "imapsync": "imapsync", "doveadm": "doveadm backup -R (imapc)",
                 "raw": "raw ceiling (our IMAP layer, no sync logic)"}
RUN_LABELS = {"first": "first copy (empty local)", "rerun": "re-run, nothing changed",
              "changed": "re-run after 1 % changed"}


def _range(m: dict) -> str:
    """min–max of the repetitions: how noisy the median is."""
    if "wall_min_s" not in m:
        return "—"
    return f"{m['wall_min_s']:.2f}–{m['wall_max_s']:.2f}"


def _rate(count: float, m: dict) -> str:
    """messages per second, or — when the run has no time."""
    wall = m.get("wall_s")
    return f"{count / wall:,.0f}" if wall else "—"


def _corpus_title(res: dict, count: str) -> str:
    """The corpus' size and shape, since times mean nothing without them; and when a corpus was
    measured with fewer repetitions or engines than the others (the 100,000 one), that too."""
    c = res["corpora"].get(count, {})
    runs = res.get("single", {}).get(count, {})
    reps = max((len(v) for e in runs.values() for v in e.values()), default=0)
    note = "" if reps == res.get("reps") else f"; {reps} repetition{'s' if reps != 1 else ''}, no medians"
    if set(runs) != set(res.get("single", {}).get("2000", runs)):
        note += f"; engines: {', '.join(runs)} only"
    return (f"### {int(count):,} messages ({c.get('bytes', 0) / 1e6:.1f} MB, {c.get('folders', '?')} folders "
            f"with mail, {c.get('duplicates', '?')} exact duplicates{note})")


def _single_rows(res: dict, count: str) -> list[str]:
    """One row per engine and run for one corpus."""
    c = res["corpora"].get(count, {})
    n, mb = int(count), c.get("bytes", 0) / 1e6
    rows = []
    for engine, runs in med(res, "single", count).items():
        for run, m in runs.items():
            mbs = f"{mb / m['wall_s']:.1f}" if run == "first" and m.get("wall_s") else "—"
            fail = "" if m.get("all_ok", True) else " (a run failed)"
            rows.append(f"| {ENGINE_LABELS.get(engine, engine)} | {RUN_LABELS[run]}{fail} | {_fmt(m.get('wall_s'))} "
                        f"| {_range(m)} | {_rate(n, m)} | {mbs} | {_fmt(m.get('client_cpu_s'))} "
                        f"| {_fmt(m.get('peak_rss_mb'), '', 0)} | {_fmt(m.get('remote_server_cpu_s'))} "
                        f"| {_fmt(m.get('local_server_cpu_s'))} | {_fmt(own_busy(res, m), '', 0)} "
                        f"| {_fmt(m.get('machine_busy_pct'), '', 0)} "
                        f"| {m.get('dest_messages', 0):,.0f} |")
    return rows + _absent(res, 11)


def _absent(res: dict, cells: int) -> list[str]:
    """The imapsync row of a machine without one: the table says why it is missing."""
    if res["machine"].get("imapsync"):
        return []
    return ["| imapsync | not on PATH |" + " — |" * cells]


def _single_ratios(res: dict, count: str) -> list[str]:
    """native over each other engine, from medians of this run."""
    m = med(res, "single", count)
    lines = ["", "| run | native / imapsync | native / doveadm | native / raw ceiling |", "|---|---:|---:|---:|"]
    for run in ("first", "rerun", "changed"):
        n = m.get("native", {}).get(run, {}).get("wall_s")
        others = [m.get(e, {}).get(run, {}).get("wall_s") for e in ("imapsync", "doveadm", "raw")]
        lines.append(f"| {RUN_LABELS[run]} | " + " | ".join(_fmt(ratio(n, o)) for o in others) + " |")
    return lines


def _command_counts(res: dict) -> list[str]:
    """The native engine's IMAP commands per run (first repetition): what the speed rests on."""
    lines = ["", "Native engine, IMAP commands sent (remote / local), first repetition:", "",
             "| corpus | first copy | re-run, nothing changed | re-run after 1 % changed |", "|---|---|---|---|"]
    for count, engines in res.get("single", {}).items():
        cells = []
        for run in ("first", "rerun", "changed"):
            runs = engines.get("native", {}).get(run) or [{}]
            s = runs[0].get("stats", {})
            cells.append(f"{s.get('h1.commands', '—')} / {s.get('h2.commands', '—')}")
        lines.append(f"| {int(count):,} | " + " | ".join(cells) + " |")
    return lines


def single_section(res: dict) -> list[str]:
    """One mailbox: every corpus, every engine, every run."""
    if not res.get("single"):
        return []
    lines = ["## One mailbox", "",
             "Each engine copies the remote mailbox into an empty local one (wiped, not timed), runs again "
             "at once, then again after 1 % of the remote messages changed (flags on 0.5 %, 0.25 % "
             "expunged, 0.25 % new mail; undone afterwards, not timed). messages/s counts the corpus "
             "(examined, for re-runs); MB/s the corpus bytes over the first copy's time.", ""]
    for count in res["single"]:
        lines += [_corpus_title(res, count), "",
                  "| engine | run | wall s | min–max | messages/s | MB/s | client CPU s | peak RSS MB "
                  "| remote server CPU s | local server CPU s | busy % by the run | machine busy % "
                  "| messages on local |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        ratios = _single_ratios(res, count) if len(res["single"][count]) > 1 else []
        lines += _single_rows(res, count) + ratios + [""]
    return lines + _command_counts(res) + [""]


def _parallel_rows(res: dict, n: str) -> list[str]:
    """One row per engine and run for n mailboxes at once."""
    total = int(n) * res["corpora"].get("parallel", {}).get("messages_each", 2000)
    rows = []
    for engine, runs in med(res, "parallel", n).items():
        for run, m in runs.items():
            fail = "" if m.get("all_ok", True) else " (a run failed)"
            rows.append(f"| {n} | {engine} | {RUN_LABELS[run]}{fail} | {_fmt(m.get('wall_s'))} | {_range(m)} "
                        f"| {_fmt(m.get('returned_s'))} | {_rate(total, m)} | {_fmt(m.get('client_cpu_s'))} "
                        f"| {_fmt(m.get('peak_process_rss_mb'), '', 0)} | {_fmt(m.get('peak_total_rss_mb'), '', 0)} "
                        f"| {_fmt(m.get('remote_server_cpu_s'))} | {_fmt(m.get('local_server_cpu_s'))} "
                        f"| {_fmt(own_busy(res, m), '', 0)} | {_fmt(m.get('machine_busy_pct'), '', 0)} "
                        f"| {m.get('dest_messages', 0):,.0f} |")
    return rows + [f"| {n} " + r for r in _absent(res, 12)]


def parallel_section(res: dict) -> list[str]:
    """n mailboxes at once through the task path, with the ratios."""
    if not res.get("parallel"):
        return []
    lines = ["## Mailboxes in parallel, through the task path", "",
             "A throw-away local node; each mailbox is a task of its own (own remote account, own local "
             "mailbox), all started by one `start-all-tasks` with the caps at 8 node-wide and 8 per host; "
             "timed until every task's status says its run ended. The engine is the module setting "
             "(`configure-module` `engine`); the imapsync engine includes the module's steps around "
             "imapsync. Client CPU is the runs' processes (and their imapsync) sampled every 0.1 s.", "",
             "| mailboxes | engine | run | wall s | min–max | start-all-tasks returned s | messages/s "
             "| client CPU s (sum) | peak RSS of one run MB | peak RSS all runs MB | remote server CPU s "
             "| local server CPU s | busy % by the runs | machine busy % | messages on local |",
             "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n in res["parallel"]:
        lines += _parallel_rows(res, n)
    lines += ["", "| mailboxes | run | native / imapsync |", "|---:|---|---:|"]
    for n in res["parallel"]:
        m = med(res, "parallel", n)
        for run in ("first", "rerun"):
            nat = m.get("native", {}).get(run, {}).get("wall_s")
            imp = m.get("imapsync", {}).get(run, {}).get("wall_s")
            lines.append(f"| {n} | {RUN_LABELS[run]} | {_fmt(ratio(nat, imp))} |")
    return lines + [""]


def latency_section(res: dict) -> list[str]:
    """Action latency with the agent's fixed cost apart."""
    lat = res.get("latency")
    if not lat:
        return []
    fixed = med(res, "latency", "get-name").get("wall_s")
    lines = [f"## Action latency, {lat.get('tasks', 0):,} tasks", "",
             "`api-cli run module/imapsync1/<action>` as an administrator waits for it. `get-name` (a core "
             "action reading one Redis key) is the agent's fixed cost: api-cli, Redis, the agent, process "
             "start-up; \"inside the action\" is the median of (action − a `get-name` timed just before it), or the difference of medians in older results. create-task includes its remote login "
             "check; start-all-tasks queues every task (the runs are stopped afterwards, not timed).", "",
             "| action | wall s (median) | min–max | inside the action s |", "|---|---:|---:|---:|"]
    for action in ("get-name", "list-tasks", "get-facts", "create-task", "start-all-tasks"):
        m = med(res, "latency", action)
        inside = "(fixed cost)" if action == "get-name" else _fmt(m.get("inside_s", ratio_sub(m.get("wall_s"), fixed)))
        lines.append(f"| `{action}` | {_fmt(m.get('wall_s'))} | {_range(m)} | {inside} |")
    return lines + [""]


def profile_section(res: dict) -> list[str]:
    """Where list-tasks' time goes (bench/profile_actions.py), when the results file has it."""
    prof = res.get("profile", {}).get("list-tasks")
    if not prof:
        return []
    n = prof["tasks"]
    lines = [f"### Where `list-tasks` spends its time, {n:,} tasks", "",
             "`bench/profile_actions.py`, run after the bench on the same machine: each part of one call "
             f"timed in-process (medians of {prof['reps']}), on a state directory of {n:,} tasks that each "
             "ran once. The nested `list-user-mailboxes` call to the mail module is one more agent round "
             "trip (about `get-name`'s fixed cost above) and is not in these parts.", "",
             "| part | seconds |", "|---|---:|",
             f"| step start-up: a bare interpreter | {prof['interpreter_s']:.2f} |",
             f"| step start-up: interpreter + the action's imports (`ns8_imapsync.actions.tasks`) "
             f"| {prof['step_startup_s']:.2f} |",
             *[f"| … of which importing `{name}` (cumulative, `-X importtime`) | {sec:.2f} |"
               for name, sec in prof.get("imports", {}).items()],
             f"| reading {n:,} tasks' env and status files (`tasks.list_tasks`, mail server stubbed) "
             f"| {prof['task_files_s']:.2f} |",
             f"| JSON output | {prof['json_output_s']:.2f} |",
             f"| output validation by the local node's agent (Python; NS8's agent validates in Go) "
             f"| {prof['output_validation_s']:.2f} |", "",
             "Top functions of `tasks.list_tasks` by cumulative time (cProfile, one call):", "",
             "| cumulative s | calls | function |", "|---:|---:|---|"]
    lines += [f"| {r['cumulative_s']:.3f} | {r['calls']:,} | `{r['function']}` |" for r in prof["top"]]
    return lines + [""]


def ratio_sub(a: float | None, b: float | None) -> float | None:
    """a − b, or None when either is missing."""
    return None if a is None or b is None else round(a - b, 3)


def csv_section(res: dict) -> list[str]:
    """import-csv-tasks' modes, to tell the logins' cost from the writing's."""
    runs = res.get("csv_import")
    if not runs:
        return []
    lines = ["## import-csv-tasks, 1,000 rows", "",
             "1,000 local users and 1,000 remote accounts, each with its own password, so every row is a "
             "real STARTTLS login; run as `runagent -m imapsync1 import-csv-tasks < users.csv`. Each round "
             "starts from a module without tasks (the re-run from the round's import). Peak RSS is the "
             "largest process of the command.", "",
             "| mode | wall s (median) | min–max | rows/s | peak RSS MB | exit codes |", "|---|---:|---:|---:|---:|---|"]
    for mode, raw in runs.items():
        m = med(res, "csv_import", mode)
        lines.append(f"| {mode} | {_fmt(m.get('wall_s'))} | {_range(m)} | {_rate(1000, m)} "
                     f"| {_fmt(m.get('peak_rss_mb'), '', 0)} | {','.join(str(r.get('exit')) for r in raw)} |")
    return lines + [""]


def bulk_section(res: dict) -> list[str]:
    """The bulk migrator's steps, 1 and 8 accounts."""
    bulk = res.get("bulk_migrator")
    if not bulk:
        return []
    lines = ["## Bulk migrator, 1 and 8 accounts", "",
             "`imapsync-bulk-migrator` on a Dovecot pair of its own, 500 messages of the bench corpus per "
             "account: export to local files, import into empty accounts, the same import again (nothing "
             "to do), validate. `--max-workers` = accounts (at most 8). Peak RSS is the CLI process's.", "",
             "| run | accounts | messages | MB | wall s (median) | min–max | messages/s | MB/s | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for n, steps in bulk.items():
        export = (steps.get("export") or [{}])[0]
        msgs, mb = export.get("messages", 0), export.get("bytes", 0) / 1e6
        for step in steps:
            m = med(res, "bulk_migrator", n, step)
            mbs = f"{mb / m['wall_s']:.1f}" if m.get("wall_s") else "—"
            lines.append(f"| {step} | {n} | {msgs:,} | {mb:.1f} | {_fmt(m.get('wall_s'))} | {_range(m)} "
                         f"| {_rate(msgs, m)} | {mbs} | {_fmt(m.get('peak_rss_mb'), '', 0)} |")
    return lines + [""]


METHOD = """## How it is measured

- **Servers.** Two Dovecot instances of the local node (`tests/localnode/dovecot.py`) on loopback:
  "remote" (Maildir++, `.` separator) and "local" (`mail1`: Maildir `LAYOUT=fs`, `/`, master user
  `vmail`, so every engine logs in as `u1*vmail`). STARTTLS on both sides for every engine.
- **Corpus** (`bench/benchcorpus.py`, filled by `bench/fill.py`, not timed): about 90 % 2–20 KB,
  8 % 20–200 KB, 2 % 200 KB–2 MB; 12 folders with mail among 17 (non-ASCII names, three levels of
  hierarchy, empty folders), flags and keywords, dates over six years, 2.5 % without Message-ID, 1 %
  reusing one, one without Message-ID or Received, and one exact duplicate per 500 messages.
- **Engines**, each a child process of the bench: the native engine
  (`bench/engine_child.py`: `NativeEngine` on a `SyncPlan` with a task's default options, its state in
  a fresh directory for each first copy); `imapsync` with its defaults (`--passfile1/2`, `--nolog`);
  `doveadm -c <local dovecot.conf> backup -R -u u1 imapc:` with `imapc_features=rfc822.size fetch-headers`
  and `mail_prefetch_count=20`, the options measured earlier (it writes the
  local Maildir itself, so its "local server CPU" is in its client CPU, and as a mirror it also
  deletes what was expunged); the raw ceiling (`bench/raw_copy.py`: batched `BODY.PEEK[]` reads,
  one MULTIAPPEND per batch into the SELECTed folder, the next batch read while this one is
  appended; no identity, state or flags logic).
- **Figures.** Wall time around the child; client CPU (user+sys) and peak RSS from `wait4`; server CPU
  as the growth of each Dovecot's master utime+stime+cutime+cstime plus its live children's;
  machine busy % from `/proc/stat` (client and both servers share the cores; it counts every process, so
  other work on this shared machine shows in it too: see the load average); "busy % by the run" is
  (client + both servers' CPU) / (wall × cores), the run's own share; messages on local from
  `doveadm mailbox status` afterwards (imapsync leaves exact duplicates and messages without any
  header it can identify out).
- **Secrets.** Passwords are in 0600 files, never in argv, except doveadm's remote password: doveadm
  takes it only as `-o imapc_password=…` (loopback test credentials).
"""


def method_section(_res: dict) -> list[str]:
    """How each figure is measured, so the tables can be judged."""
    return [METHOD]
