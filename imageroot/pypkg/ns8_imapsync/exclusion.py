r"""Exclusion patterns: the `exclude` list of a task, split, joined and checked.

`exclude` is one string in the API, the CSV and the task file: a comma list of
folder regexes. A comma inside `()`, `[]` or `{}`, or written `\,`, belongs to
its pattern (`^Archive/[0-9]{4,}$` is one pattern): `split_patterns` is the
only place that splits the list. A pattern whose nested unbounded repeats can
backtrack for ever on a long folder name is refused when it is entered
(`check_backtracking`); the container also bounds every match in time
(`imap.folders.is_excluded`).

Standard library only: the actions use it on the host.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from re import _constants as sre_constants  # the stdlib parser's node names
from re import _parser as sre_parser

from ns8_imapsync.errors import TaskError

CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


def split_patterns(text: str) -> list[str]:
    r"""The folder regexes of an `exclude` string, split at the commas that
    separate patterns: not inside `(...)`, `{...}` or a character class
    `[...]` (where `]` first, or after `^`, is a literal), not escaped (`\,`
    stays in its pattern: a literal comma in Python and Perl). Empty items
    are dropped. A bracket never closed keeps the rest of the text in its
    pattern, so only the last pattern can end "open" and joining with `,`
    gives the same list back."""
    items: list[str] = []
    start = depth = 0
    class_first = -1  # inside a class: the index where a `]` is still literal; -1 outside
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if class_first >= 0:
            if ch == "]" and i != class_first:
                class_first = -1
        elif ch == "[":
            class_first = i + 2 if text[i + 1:i + 2] == "^" else i + 1
        elif ch in "({":
            depth += 1
        elif ch in ")}" and depth:
            depth -= 1
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
        i += 1
    items.append(text[start:])
    return [p for p in items if p]


def join_patterns(patterns: Iterable[str]) -> str:
    """The `exclude` string of a list of patterns (`split_patterns` undoes it)."""
    return ",".join(patterns)


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT)  # repeats that backtrack
# constructs whose content is never re-entered by backtracking (atomic group, `a*+`)
_NO_BACKTRACK = (sre_constants.ATOMIC_GROUP, sre_constants.POSSESSIVE_REPEAT)


def _subpatterns(value: object) -> Iterable[sre_parser.SubPattern]:
    """The subpatterns held in a parsed node's argument (a group, a branch's
    alternatives, an assertion's body), at any tuple/list depth."""
    if isinstance(value, sre_parser.SubPattern):
        yield value
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _subpatterns(item)


def _nested_unbounded(pattern: sre_parser.SubPattern, in_repeat: bool) -> bool:
    """True when an unbounded repeat (`*`, `+`, `{n,}`) sits inside a repeat
    that can match more than once (`in_repeat`)."""
    for op, av in pattern:
        if op in _REPEATS:
            _low, high, body = av
            if in_repeat and high == sre_constants.MAXREPEAT:
                return True
            if _nested_unbounded(body, in_repeat or high > 1):
                return True
        elif op in _NO_BACKTRACK:
            if any(_nested_unbounded(sub, False) for sub in _subpatterns(av)):
                return True
        elif any(_nested_unbounded(sub, in_repeat) for sub in _subpatterns(av)):
            return True
    return False


def check_backtracking(pattern: str) -> None:
    """Refuse (TaskError `exclude_backtracks_catastrophically`) a pattern with
    an unbounded repeat inside a repeated group: `(a+)+`, `(a*)*`, `(.*)*`,
    `(x+y)*`, `(a+){2,}`. Matched against a long folder name the remote server
    chose, such a pattern can try exponentially many ways before failing.
    Bounded or single repeats (`[0-9]{4,}`, `(/.*)?`, `(a|b)+`) are accepted;
    whatever slips through is cut off by the container's time limit per match.
    The pattern must already compile (Task checks that)."""
    if _nested_unbounded(sre_parser.parse(pattern), False):
        raise TaskError("exclude", "exclude_backtracks_catastrophically", pattern)


def check_pattern(pattern: str) -> None:
    """A stored pattern must compile (a file may hold anything: read, never run)."""
    if CONTROL_RE.search(pattern):
        raise TaskError("exclude", "exclude_has_control_characters", pattern)
    try:
        re.compile(pattern)
    except (re.error, RecursionError, OverflowError):
        raise TaskError("exclude", "exclude_is_not_a_valid_regex", pattern) from None
