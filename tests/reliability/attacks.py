"""The fixed list of hostile values of section 3, shared by every target.

Every value an attacker (or a careless spreadsheet) may put in a field: path
traversal, shell substitutions, separators, line breaks, NUL, 10 kB values,
Unicode look-alikes and bidi controls, wrong JSON types, missing and extra
fields. The shell attacks and the traversals aim at a *canary* directory of
the run: if any of them is ever executed or followed, a file appears there,
which no assertion on an exit code could tell.

Lone surrogates are left out on purpose: NS8's Go agent decodes the request
with encoding/json, which turns them into U+FFFD before any step sees them.
"""

from __future__ import annotations

import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

TEN_KB = 10 * 1024


@dataclass(frozen=True)
class Attack:
    """One hostile value: `kind` groups them in the results table."""

    kind: str
    name: str
    value: object


def new_canary_dir() -> Path:
    """An empty directory that only an executed or followed attack can write into."""
    path = Path(tempfile.mkdtemp(prefix=f"hostile-canary-{secrets.token_hex(3)}-"))
    path.chmod(0o777)  # a step running as another user must be able to leave its trace
    return path


def canary_hits(canary: Path) -> list[str]:
    """What the attacks left in the canary directory (nothing, unless one worked)."""
    return sorted(str(p.relative_to(canary)) for p in canary.rglob("*"))


def _traversals(canary: Path) -> list[Attack]:
    up = "../" * 12 + str(canary).lstrip("/")
    return [
        Attack("traversal", "up-to-canary", f"{up}/traversal"),
        Attack("traversal", "dotdot", ".."),
        Attack("traversal", "dotdot-slash", "../"),
        Attack("traversal", "nested", "u1/../../../environment"),
        Attack("traversal", "absolute", "/etc/passwd"),
        Attack("traversal", "backslashes", "..\\..\\..\\environment"),
        Attack("traversal", "percent-encoded", "%2e%2e%2f%2e%2e%2fenvironment"),
        Attack("traversal", "doubled", "....//....//environment"),
    ]


def _shell(canary: Path) -> list[Attack]:
    return [
        Attack("substitution", "dollar-paren", f"$(touch {canary}/dollar)"),
        Attack("substitution", "dollar-ifs", f"x$(touch${{IFS}}{canary}/ifs)"),
        Attack("substitution", "dollar-brace", "${HOME}${PATH}"),
        Attack("backtick", "backticks", f"`touch {canary}/backtick`"),
        Attack("separator", "semicolon", f"a;touch {canary}/semicolon"),
        Attack("separator", "and", f"a && touch {canary}/and"),
        Attack("separator", "pipe", f"a|touch {canary}/pipe"),
        Attack("separator", "option-like", "--delete2"),
        Attack("separator", "glob", "*"),
    ]


def _lines_and_nul(canary: Path) -> list[Attack]:
    return [
        Attack("newline", "lf-assignment", "a\nINJECTED=1"),
        Attack("newline", "crlf-header", "a\r\nX-Injected: 1"),
        Attack("newline", "lf-command", f"a\ntouch {canary}/newline"),
        Attack("newline", "unicode-line-separator", "a\u2028b\u2029c\x85d"),
        Attack("nul", "embedded", "a\x00b"),
        Attack("nul", "alone", "\x00"),
        Attack("control", "escape-sequences", "a\x1b[2J\x07\x08b"),
    ]


def _long() -> list[Attack]:
    return [
        Attack("long", "10kB-ascii", "x" * TEN_KB),
        Attack("long", "10kB-name-chars", "u" * TEN_KB),
        Attack("long", "10kB-multibyte", "\u00e9" * (TEN_KB // 2)),
    ]


def _unicode() -> list[Attack]:
    return [
        Attack("confusable", "cyrillic-a", "\u0430lice"),  # а
        Attack("confusable", "fullwidth", "\uff55\uff11"),  # ｕ１
        Attack("confusable", "kelvin-sign", "\u212a1"),  # lower() gives "k1"
        Attack("confusable", "dotted-capital-i", "\u0130nbox"),  # lower() gives two code points
        Attack("confusable", "ligature", "\ufb01le"),  # NFKC gives "file"
        Attack("confusable", "zero-width", "u\u200b1"),
        Attack("rtl", "right-to-left-override", "u1\u202e"),
        Attack("rtl", "rlo-extension", "\u202egpj.exe"),
        Attack("rtl", "right-to-left-mark", "\u200fu1"),
        Attack("rtl", "isolates", "\u2067u1\u2069"),
    ]


def _misc() -> list[Attack]:
    return [
        Attack("format", "printf", "%s%s%n%x"),
        Attack("format", "python-format", "{0}{0.__class__}"),
        Attack("quote", "quotes", "'\"\\"),
        Attack("quote", "json-break", "\"}\n{\"x\": 1"),
        Attack("formula", "csv-formula", "=HYPERLINK(\"http://x\")"),
        Attack("empty", "blank", " "),
    ]


def string_attacks(canary: Path) -> list[Attack]:
    """Every hostile string, in a fixed order (the results file counts by kind)."""
    return [*_traversals(canary), *_shell(canary), *_lines_and_nul(canary), *_long(), *_unicode(), *_misc()]


# values of the wrong JSON type, per type the schema asks for
WRONG_TYPES: dict[str, list[object]] = {
    "string": [5, 1.5, True, None, [], {}, ["u1"]],
    "integer": ["143", 1.5, True, None, -1, 2**64, [], {"n": 1}],
    "boolean": ["true", 1, 0, None, "yes", []],
}
# whole inputs that are not an object at all
NOT_OBJECTS: list[object] = [None, [], "u1", 5, True, [{}]]
# extra top-level members
EXTRA_FIELDS: list[dict] = [
    {"surprise": 1},
    {"__proto__": {"admin": True}},
    {"LOCALUSER": "u1"},
    {"localuser\u200b": "u1"},
]


def wrong_type_attacks(json_type: str) -> list[Attack]:
    return [Attack("type", f"{json_type}-as-{type(v).__name__}", v) for v in WRONG_TYPES.get(json_type, [])]
