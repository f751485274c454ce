"""JSON-schema validation with the result shape of the NS8 agent.

The real agent validates `validate-input.json` / `validate-output.json` with
xeipuuv/gojsonschema v1.2.0 and turns each `ResultError` into
`{"parameter", "error", "value", "field"}` (core/agent/validation). Modules and
their UIs depend on that exact shape: `(root)_required` with the whole input as
value, one error per additional property reported on the parent object, type
errors that hide every other error of the same node, anyOf/oneOf reporting the
closest branch, unknown formats ignored, the `hostname` regex accepting IPv4.

The python `jsonschema` error model cannot express those rules, so the
validation walk below follows gojsonschema's algorithm (same keyword order,
same scoring of anyOf/oneOf branches, same descriptions), while `$id`/`$ref`
resolution is done by `referencing`, the resolver of the `jsonschema` library,
with its bundled meta-schemas (`jsonschema_specifications`).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import re
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any
from urllib.parse import unquote

import referencing
import referencing.exceptions
from referencing.jsonschema import DRAFT7

try:  # the meta-schemas gojsonschema serves without network access
    from jsonschema_specifications import REGISTRY as _SPECIFICATIONS
except ImportError:  # pragma: no cover - shipped with jsonschema
    _SPECIFICATIONS = referencing.Registry()

__all__ = [
    "ResultError",
    "SchemaError",
    "ValidationFault",
    "error_message",
    "load_definitions",
    "to_json",
    "validate",
    "validate_file",
    "validate_json_string",
]

ROOT = "(root)"

DRAFT4, DRAFT6, DRAFT7_, HYBRID = 4, 6, 7, 1 << 31
_DRAFT_URLS = {
    "http://json-schema.org/draft-04/schema": DRAFT4,
    "http://json-schema.org/draft-06/schema": DRAFT6,
    "http://json-schema.org/draft-07/schema": DRAFT7_,
}
_JSON_TYPES = ("array", "boolean", "integer", "number", "null", "object", "string")


class SchemaError(Exception):
    """The schema does not compile (gojsonschema `Compile` error)."""


class ValidationFault(Exception):
    """Validation could not run at all; str() is the agent's `%v` of the Go error."""


def _field(context: list[str]) -> str:
    """gojsonschema Field(): the context path without the leading "(root)."."""
    ctx = ".".join(context)
    return ctx[len(ROOT) + 1 :] if ctx.startswith(ROOT + ".") else ctx


class ResultError(dict):
    """One validation error.

    The dict holds exactly what the agent serialises (`parameter`, `error`,
    `value`, `field`, in Go struct order); the gojsonschema type, description
    and context are attributes so that `json.dumps` stays identical.
    """

    def __init__(self, etype: str, context: list[str], value: Any, description: str, details: dict):
        field = _field(context)
        parameter = field.split(".", 1)[0]
        super().__init__(parameter=parameter, error=f"{parameter}_{etype}", value=_go_value(value), field=field)
        self.type = etype
        self.context = ".".join(context)
        self.description = description
        self.details = details

    def __str__(self) -> str:
        # gojsonschema DefaultLocale.ErrorFormat(): "{{.field}}: {{.description}}"
        return f"{self['field']}: {self.description}"


# ---------------------------------------------------------------------------
# Go formatting helpers
# ---------------------------------------------------------------------------


def _decimal_of_float(x: float) -> Decimal:
    """Shortest decimal that round-trips x (what Go's strconv 'g'/-1 prints)."""
    return Decimal(repr(float(x))).normalize()


def _go_json_float(x: float) -> str:
    """encoding/json's float64 encoding (task data went through float64)."""
    if math.isnan(x) or math.isinf(x):
        raise ValueError(f"json: unsupported value: {x}")
    if x == 0:
        return "-0" if math.copysign(1.0, x) < 0 else "0"
    d = _decimal_of_float(x)
    if abs(x) < 1e-6 or abs(x) >= 1e21:
        sign, digits, exp = d.as_tuple()
        mant = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        e10 = len(digits) - 1 + exp
        # strconv pads the exponent to 2 digits, encoding/json strips "e-0X" back to "e-X"
        etxt = f"e-{-e10}" if e10 < 0 else f"e+{e10:02d}"
        return ("-" if sign else "") + mant + etxt
    return format(d, "f")


def _go_big_float(d: Decimal) -> str:
    """`%v` of a *big.Float built from a schema number (min/max/multipleOf in descriptions)."""
    if d == 0:
        return "0"
    sign, digits, exp = d.normalize().as_tuple()
    e10 = len(digits) - 1 + exp
    txt = "".join(map(str, digits))
    if e10 < -4 or e10 >= 6:  # shortest 'g' uses eprec = 6
        mant = txt[0] + ("." + txt[1:] if len(txt) > 1 else "")
        out = f"{mant}e{'-' if e10 < 0 else '+'}{abs(e10):02d}"
    else:
        out = format(abs(d).normalize(), "f")
    return ("-" if sign else "") + out


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
                 "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _go_json_string(s: str) -> str:
    out = ['"']
    for ch in s:
        esc = _JSON_ESCAPES.get(ch)
        if esc is not None:
            out.append(esc)
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif 0xD800 <= ord(ch) <= 0xDFFF:  # Go decodes lone surrogates to U+FFFD
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _go_json(value: Any) -> str:
    """Go `json.Marshal` of a decoded JSON value: compact, sorted keys, HTML-safe."""
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int | float):
        return _go_json_float(float(value))
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, dict):
        return "{" + ",".join(_go_json_string(k) + ":" + _go_json(value[k]) for k in sorted(value)) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_go_json(v) for v in value) + "]"
    raise TypeError(f"json: unsupported type: {type(value).__name__}")


def _go_value(value: Any) -> Any:
    """The value as Go holds it after NewGoLoader: float64 numbers, sorted maps."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float):
        f = float(value)
        if f.is_integer() and abs(f) < 1e21:
            return int(f)
        return f
    if isinstance(value, dict):
        return {k: _go_value(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_go_value(v) for v in value]
    return value


def _number(value: Any) -> Fraction:
    """Exact rational of a JSON number as gojsonschema sees it (big.Rat of its text)."""
    return Fraction(_decimal_of_float(float(value)))


def _schema_number(value: Any) -> tuple[Fraction, Decimal] | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    d = Decimal(value) if isinstance(value, int) else _decimal_of_float(value)
    return Fraction(d), d


def _schema_int(value: Any) -> int | None:
    """gojsonschema mustBeInteger: json.Number.Int64() only parses integer literals (not 1.0)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


# ---------------------------------------------------------------------------
# Go regexp (RE2) patterns on top of Python's re
# ---------------------------------------------------------------------------

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z", "alpha": "A-Za-z", "ascii": "\\x00-\\x7f", "blank": "\\t ",
    "cntrl": "\\x00-\\x1f\\x7f", "digit": "0-9", "graph": "!-~", "lower": "a-z", "print": " -~",
    "punct": "!-/:-@\\[-`{-~", "space": "\\t\\n\\v\\f\\r ", "upper": "A-Z", "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_MULTILINE_FLAG = re.compile(r"\(\?[a-zA-Z]*m[a-zA-Z]*[:)]")
_FLAG_GROUP = re.compile(r"\(\?([imsU]*(?:-[imsU]*)?)\)")
_regex_cache: dict[str, re.Pattern] = {}


def _go_regexp(pattern: str) -> re.Pattern:
    """Compile a Go (RE2) regexp with Python's re.

    Go differs where it matters for schemas: `$` only matches at the very end
    (Python also matches before a final newline), `\\z`, POSIX classes in
    brackets, ASCII-only `\\d\\w\\s`, and flag groups `(?i)` anywhere, which
    apply up to the end of the enclosing group.
    """
    cached = _regex_cache.get(pattern)
    if cached is not None:
        return cached
    multiline = bool(_MULTILINE_FLAG.search(pattern))
    out: list[str] = []
    closes = [0]  # per open group: scoped flag groups to close with it
    i, n, in_class = 0, len(pattern), False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            nxt = pattern[i + 1]
            out.append("\\Z" if nxt == "z" and not in_class else c + nxt)
            i += 2
            continue
        if in_class:
            if c == "[" and pattern.startswith("[:", i):
                end = pattern.find(":]", i + 2)
                name = pattern[i + 2 : end] if end > 0 else ""
                if name in _POSIX_CLASSES:
                    out.append(_POSIX_CLASSES[name])
                    i = end + 2
                    continue
            if c == "]":
                in_class = False
            out.append(c)
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            if i < n and pattern[i] == "^":
                out.append("^")
                i += 1
            if i < n and pattern[i] == "]":  # a leading ] is a literal
                out.append("\\]")
                i += 1
            continue
        elif c == "(":
            flags = _FLAG_GROUP.match(pattern, i)
            if flags:
                out.append(f"(?{flags.group(1)}:")
                closes[-1] += 1
                i = flags.end()
                continue
            closes.append(0)
            out.append(c)
        elif c == ")":
            out.append(")" * (closes.pop() if len(closes) > 1 else 0) + ")")
        elif c == "$" and not multiline:
            out.append("\\Z")
        else:
            out.append(c)
        i += 1
    out.append(")" * closes[0])
    compiled = re.compile("".join(out), re.ASCII)
    _regex_cache[pattern] = compiled
    return compiled


# ---------------------------------------------------------------------------
# Formats: gojsonschema v1.2.0 FormatCheckers
# ---------------------------------------------------------------------------

_RX_HOSTNAME = re.compile(
    r"([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9])(\.([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9\-]{0,61}[a-zA-Z0-9]))*"
)
_RX_URI_TEMPLATE = re.compile(r"([^{]*({[^}]*})?)*", re.S)
_RX_UUID = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}")
_RX_JSON_POINTER = re.compile(r"(?:/(?:[^~/]|~0|~1)*)*", re.S)
_RX_REL_JSON_POINTER = re.compile(r"(?:0|[1-9][0-9]*)(?:#|(?:/(?:[^~/]|~0|~1)*)*)", re.S)

_DATE = r"(\d{4})-(\d{2})-(\d{2})"
_TIME = r"(\d{1,2}):(\d{2}):(\d{2})(?:[.,]\d+)?"
_ZONE = r"(Z|[+-](\d{2}):(\d{2}))"
_RX_DATE = re.compile(_DATE)
_RX_TIME = re.compile(_TIME)
_RX_TIME_ZONE = re.compile(_TIME + _ZONE)
_RX_DATE_TIME = re.compile(_DATE + "T" + _TIME + _ZONE)


def _valid_date(y: str, m: str, d: str) -> bool:
    year, month, day = int(y), int(m), int(d)
    if not 1 <= month <= 12:
        return False
    days = [31, 29 if (year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)) else 28, 31, 30, 31, 30, 31, 31,
            30, 31, 30, 31][month - 1]
    return 1 <= day <= days


def _valid_time(h: str, mi: str, s: str) -> bool:
    return int(h) < 24 and int(mi) < 60 and int(s) < 60


def _valid_zone(z: str | None, zh: str | None, zm: str | None) -> bool:
    return z is None or z == "Z" or (int(zh) <= 24 and int(zm) <= 60)


def _is_date(s: str) -> bool:
    m = _RX_DATE.fullmatch(s)
    return bool(m) and _valid_date(*m.groups())


def _is_time(s: str) -> bool:
    m = _RX_TIME_ZONE.fullmatch(s)
    if m:
        return _valid_time(*m.groups()[:3]) and _valid_zone(*m.groups()[3:])
    m = _RX_TIME.fullmatch(s)
    return bool(m) and _valid_time(*m.groups())


def _is_date_time(s: str) -> bool:
    """Go time.Parse with "15:04:05", "15:04:05Z07:00", "2006-01-02", RFC3339(Nano)."""
    if _is_time(s) or _is_date(s):
        return True
    m = _RX_DATE_TIME.fullmatch(s)
    if not m:
        return False
    g = m.groups()
    return _valid_date(*g[:3]) and _valid_time(*g[3:6]) and _valid_zone(*g[6:])


_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~\u0080-\U0010ffff]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
_QUOTED = r'"(?:[^"\\\r\n]|\\.)*"'
_ADDR_SPEC = rf"(?:{_DOT_ATOM}|{_QUOTED})@(?:{_DOT_ATOM}|\[[^\[\]\\]*\])"
_WORD = rf"(?:{_ATEXT}|\.)+|{_QUOTED}"
_RX_EMAIL = re.compile(rf"\s*(?:{_ADDR_SPEC}|(?:(?:{_WORD})(?:\s+(?:{_WORD}))*\s*)?<{_ADDR_SPEC}>)\s*")


def _is_email(s: str) -> bool:
    """Approximates Go net/mail.ParseAddress: addr-spec or `Name <addr-spec>`."""
    return bool(_RX_EMAIL.fullmatch(s))


def _parse_ip(s: str) -> bool:
    """Go net.ParseIP: dotted IPv4 without leading zeros, or IPv6 without zone."""
    if "%" in s or not s:
        return False
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


_HEX = "0123456789abcdefABCDEF"
_HOST_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$&'()*+,;=:[]<>\"")
_USERINFO_OK = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._:~!$&'()*+,;=%@")


def _unescape(s: str, host: bool = False) -> str | None:
    """net/url unescape(): valid %XX escapes, and only allowed ASCII bytes in a host."""
    raw = s.encode("utf-8", "surrogatepass")
    i = 0
    while i < len(raw):
        if raw[i] == 0x25:  # %
            hx = raw[i + 1 : i + 3].decode("latin-1")
            if len(hx) != 2 or hx[0] not in _HEX or hx[1] not in _HEX:
                return None
            i += 3
            continue
        if host and raw[i] < 0x80 and chr(raw[i]) not in _HOST_OK:
            return None
        i += 1
    return unquote(s, errors="replace")


def _valid_optional_port(port: str) -> bool:
    return port == "" or (port[0] == ":" and all(c in "0123456789" for c in port[1:]))


def _go_url_parse(s: str) -> tuple[str, str] | None:
    """Go net/url.Parse: (scheme, unescaped path), or None on error."""
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in s):
        return None  # invalid control character in URL
    rest, _, frag = s.partition("#")
    if _unescape(frag) is None:
        return None
    if rest == "*":
        return "", "*"
    scheme = ""
    for i, c in enumerate(rest):
        if "a" <= c <= "z" or "A" <= c <= "Z":
            continue
        if "0" <= c <= "9" or c in "+-.":
            if i == 0:
                break
            continue
        if c == ":":
            if i == 0:
                return None  # missing protocol scheme
            scheme, rest = rest[:i].lower(), rest[i + 1 :]
        break
    rest = rest.partition("?")[0]
    if not rest.startswith("/"):
        if scheme:
            return scheme, ""  # opaque URL: not validated further
        if ":" in rest.partition("/")[0]:
            return None  # first path segment in URL cannot contain colon
    if (scheme or not rest.startswith("///")) and rest.startswith("//"):
        authority, slash, path = rest[2:].partition("/")
        rest = slash + path
        userinfo, at, host = authority.rpartition("@")
        if at and (not set(userinfo) <= _USERINFO_OK or _unescape(userinfo) is None):
            return None  # net/url: invalid userinfo
        if host.startswith("["):
            end = host.rfind("]")
            if end < 0 or not _valid_optional_port(host[end + 1 :]):
                return None
        elif ":" in host and not _valid_optional_port(host[host.rfind(":") :]):
            return None  # invalid port after host
        if _unescape(host, host=True) is None:
            return None
    path = _unescape(rest)
    if path is None:
        return None
    return scheme, path


def _is_uri(s: str) -> bool:
    parsed = _go_url_parse(s)
    return parsed is not None and parsed[0] != "" and "\\" not in s


def _is_uri_reference(s: str) -> bool:
    return _go_url_parse(s) is not None and "\\" not in s


def _is_uri_template(s: str) -> bool:
    parsed = _go_url_parse(s)
    return parsed is not None and "\\" not in s and bool(_RX_URI_TEMPLATE.fullmatch(parsed[1]))


def _is_regex(s: str) -> bool:
    if s == "":
        return True
    try:
        _go_regexp(s)
    except re.error:
        return False
    return True


_FORMATS: dict[str, Callable[[str], bool]] = {
    "date": _is_date,
    "time": _is_time,
    "date-time": _is_date_time,
    "hostname": lambda s: bool(_RX_HOSTNAME.fullmatch(s)) and len(s) < 256,
    "email": _is_email,
    "idn-email": _is_email,
    "ipv4": lambda s: _parse_ip(s) and "." in s,
    "ipv6": lambda s: _parse_ip(s) and ":" in s,
    "uri": _is_uri,
    "uri-reference": _is_uri_reference,
    "iri": _is_uri,
    "iri-reference": _is_uri_reference,
    "uri-template": _is_uri_template,
    "uuid": lambda s: bool(_RX_UUID.fullmatch(s)),
    "regex": _is_regex,
    "json-pointer": lambda s: bool(_RX_JSON_POINTER.fullmatch(s)),
    "relative-json-pointer": lambda s: bool(_RX_REL_JSON_POINTER.fullmatch(s)),
}


def _is_format(name: str, value: Any) -> bool:
    """FormatCheckers.IsFormat: unknown formats pass; v1.2.0 known checkers reject non-strings."""
    checker = _FORMATS.get(name)
    if checker is None:
        return True
    return isinstance(value, str) and checker(value)


# ---------------------------------------------------------------------------
# Descriptions (gojsonschema DefaultLocale)
# ---------------------------------------------------------------------------

_DESCRIPTIONS: dict[str, str] = {
    "false": "False always fails validation",
    "required": "{property} is required",
    "invalid_type": "Invalid type. Expected: {expected}, given: {given}",
    "number_any_of": "Must validate at least one schema (anyOf)",
    "number_one_of": "Must validate one and only one schema (oneOf)",
    "number_all_of": "Must validate all the schemas (allOf)",
    "number_not": "Must not validate the schema (not)",
    "missing_dependency": "Has a dependency on {dependency}",
    "internal": "Internal Error {error}",
    "const": "{field} does not match: {allowed}",
    "enum": "{field} must be one of the following: {allowed}",
    "array_no_additional_items": "No additional items allowed on array",
    "array_min_items": "Array must have at least {min} items",
    "array_max_items": "Array must have at most {max} items",
    "unique": "{type} items[{i},{j}] must be unique",
    "contains": "At least one of the items must match",
    "array_min_properties": "Must have at least {min} properties",
    "array_max_properties": "Must have at most {max} properties",
    "additional_property_not_allowed": "Additional property {property} is not allowed",
    "invalid_property_pattern": 'Property "{property}" does not match pattern {pattern}',
    "invalid_property_name": 'Property name of "{property}" does not match',
    "string_gte": "String length must be greater than or equal to {min}",
    "string_lte": "String length must be less than or equal to {max}",
    "pattern": "Does not match pattern '{pattern}'",
    "format": "Does not match format '{format}'",
    "multiple_of": "Must be a multiple of {multiple}",
    "number_gte": "Must be greater than or equal to {min}",
    "number_gt": "Must be greater than {min}",
    "number_lte": "Must be less than or equal to {max}",
    "number_lt": "Must be less than {max}",
    "condition_then": 'Must validate "then" as "if" was valid',
    "condition_else": 'Must validate "else" as "if" was not valid',
}


# ---------------------------------------------------------------------------
# Compiled schema (gojsonschema subSchema)
# ---------------------------------------------------------------------------


class _Node:
    """One compiled (sub)schema."""

    passes: bool | None = None
    ref: _Node | None = None
    types: tuple[str, ...] = ()
    properties: list[tuple[str, _Node]]
    additional_properties: bool | _Node | None = None
    pattern_properties: list[tuple[re.Pattern, _Node]]
    property_names: _Node | None = None
    dependencies: list[tuple[str, list[str] | _Node]]
    items: list[_Node] | None = None
    items_single: bool = False
    additional_items: bool | _Node | None = None
    multiple_of: tuple[Fraction, Decimal] | None = None
    minimum: tuple[Fraction, Decimal] | None = None
    maximum: tuple[Fraction, Decimal] | None = None
    exclusive_minimum: tuple[Fraction, Decimal] | None = None
    exclusive_maximum: tuple[Fraction, Decimal] | None = None
    min_length: int | None = None
    max_length: int | None = None
    pattern: tuple[str, re.Pattern] | None = None
    format: str = ""
    min_properties: int | None = None
    max_properties: int | None = None
    required: list[str]
    min_items: int | None = None
    max_items: int | None = None
    unique_items: bool = False
    contains: _Node | None = None
    const: str | None = None
    enum: list[str]
    one_of: list[_Node]
    any_of: list[_Node]
    all_of: list[_Node]
    not_: _Node | None = None
    if_: _Node | None = None
    then_: _Node | None = None
    else_: _Node | None = None

    def __init__(self) -> None:
        self.properties, self.pattern_properties, self.dependencies = [], [], []
        self.required, self.enum, self.one_of, self.any_of, self.all_of = [], [], [], [], []


def _draft_of(document: Any) -> int | None:
    if isinstance(document, dict) and isinstance(document.get("$schema"), str):
        return _DRAFT_URLS.get(document["$schema"].rstrip("#"))
    return None


def _resource(contents: Any) -> referencing.Resource:
    try:
        return referencing.Resource.from_contents(contents, default_specification=DRAFT7)
    except referencing.exceptions.CannotDetermineSpecification:
        return DRAFT7.create_resource(contents)


class _Compiler:
    def __init__(self, registry: referencing.Registry):
        self.registry = registry
        self.cache: dict[tuple[int, str], _Node] = {}

    def node(self, doc: Any, resolver: referencing.Resolver, draft: int) -> _Node:
        if isinstance(doc, dict):
            resolver = resolver.in_subresource(_resource(doc))
        key = (id(doc), str(resolver._base_uri))
        if key in self.cache:
            return self.cache[key]
        node = _Node()
        self.cache[key] = node
        self._parse(node, doc, resolver, draft)
        return node

    def _sub(self, doc: Any, resolver: referencing.Resolver, draft: int, what: str) -> _Node:
        if not isinstance(doc, dict | bool):
            raise SchemaError(f"{what} must be of an object")
        return self.node(doc, resolver, draft)

    def _parse(self, node: _Node, m: Any, resolver: referencing.Resolver, draft: int) -> None:
        if isinstance(m, bool):
            node.passes = m
            return
        if not isinstance(m, dict):
            raise SchemaError("Expected: valid schema, given: Invalid JSON")

        definitions = m.get("definitions")
        if isinstance(definitions, dict):  # parsed eagerly, as gojsonschema does
            for dv in definitions.values():
                self._sub(dv, resolver, draft, "definitions")

        if "$ref" in m:
            if not isinstance(m["$ref"], str):
                raise SchemaError("Invalid type. Expected: string, given: $ref")
            try:
                resolved = resolver.lookup(m["$ref"])
            except referencing.exceptions.Unresolvable as exc:
                raise SchemaError(_unresolvable(resolver, m["$ref"], exc)) from exc
            node.ref = self.node(resolved.contents, resolved.resolver, _draft_of(resolved.contents) or draft)
            return  # siblings of $ref are never validated

        types = m.get("type")
        if types is not None:
            tlist = [types] if isinstance(types, str) else types
            if not isinstance(tlist, list) or not all(isinstance(t, str) for t in tlist):
                raise SchemaError("Invalid type. Expected: string/array of strings, given: type")
            for t in tlist:
                if t not in _JSON_TYPES:
                    raise SchemaError(
                        f"has a primitive type that is NOT VALID -- given: /{t}/ Expected valid values are:"
                        f"[{' '.join(_JSON_TYPES)}]")
                if t in node.types:
                    raise SchemaError(f"{t} type is duplicated")
                node.types += (t,)

        if "properties" in m:
            if not isinstance(m["properties"], dict):
                raise SchemaError("properties must be of type object")
            node.properties = [(k, self._sub(v, resolver, draft, k)) for k, v in m["properties"].items()]

        ap = m.get("additionalProperties")
        if isinstance(ap, bool):
            node.additional_properties = ap
        elif ap is not None:
            node.additional_properties = self._sub(ap, resolver, draft, "additionalProperties")

        for pat, sub in (m.get("patternProperties") or {}).items():
            try:
                rx = _go_regexp(pat)
            except re.error as exc:
                raise SchemaError(f"Invalid regex pattern '{pat}'") from exc
            node.pattern_properties.append((rx, self._sub(sub, resolver, draft, "patternProperties")))

        if "propertyNames" in m and draft >= DRAFT6:
            node.property_names = self._sub(m["propertyNames"], resolver, draft, "propertyNames")

        deps = m.get("dependencies")
        if isinstance(deps, dict):
            for k, dep in deps.items():
                if isinstance(dep, list):
                    if not all(isinstance(x, str) for x in dep):
                        raise SchemaError("dependency must be of type schema or array of strings")
                    node.dependencies.append((k, list(dep)))
                else:
                    node.dependencies.append((k, self._sub(dep, resolver, draft, "dependency")))

        items = m.get("items")
        if items is not None and not isinstance(items, list | dict | bool) or (
                isinstance(items, list) and not all(isinstance(x, dict | bool) for x in items)):
            raise SchemaError("Invalid type. Expected: valid schema/array of schemas, given: items")
        if isinstance(items, list):
            node.items = [self._sub(x, resolver, draft, "items") for x in items]
        elif items is not None:
            node.items, node.items_single = [self._sub(items, resolver, draft, "items")], True
        ai = m.get("additionalItems")
        if isinstance(ai, bool):
            node.additional_items = ai
        elif ai is not None:
            node.additional_items = self._sub(ai, resolver, draft, "additionalItems")

        for key in ("multipleOf", "minimum", "maximum"):
            if key in m:
                num = _schema_number(m[key])
                if num is None:
                    raise SchemaError(f"{key} must be of a number")
                if key == "multipleOf" and num[0] <= 0:
                    raise SchemaError("multipleOf must be strictly greater than 0")
                setattr(node, {"multipleOf": "multiple_of"}.get(key, key), num)
        for key, bound, attr in (("exclusiveMinimum", "minimum", "exclusive_minimum"),
                                 ("exclusiveMaximum", "maximum", "exclusive_maximum")):
            if key not in m:
                continue
            val = m[key]
            if isinstance(val, bool) and draft in (DRAFT4, HYBRID):
                if getattr(node, bound) is None:
                    raise SchemaError(f"{key} cannot be used without {bound}")
                if val:
                    setattr(node, attr, getattr(node, bound))
                    setattr(node, bound, None)
            elif _schema_number(val) is not None and draft != DRAFT4:
                setattr(node, attr, _schema_number(val))
            else:
                raise SchemaError(f"Invalid type. Expected: number, given: {key}")

        for key, attr in (("minLength", "min_length"), ("maxLength", "max_length"), ("minItems", "min_items"),
                          ("maxItems", "max_items"), ("minProperties", "min_properties"),
                          ("maxProperties", "max_properties")):
            if key in m:
                val = _schema_int(m[key])
                if val is None:
                    raise SchemaError(f"{key} must be of an integer")
                if val < 0:
                    raise SchemaError(f"{key} must be greater than or equal to 0")
                setattr(node, attr, val)

        for low, high in (("minLength", "maxLength"), ("minProperties", "maxProperties")):
            if low in m and high in m and m[low] > m[high]:
                raise SchemaError(f"{low} cannot be greater than {high}")

        if "pattern" in m:
            if not isinstance(m["pattern"], str):
                raise SchemaError("pattern must be of a string")
            try:
                node.pattern = (m["pattern"], _go_regexp(m["pattern"]))
            except re.error as exc:
                raise SchemaError("pattern must be a valid regex") from exc
        if "format" in m:
            if not isinstance(m["format"], str):
                raise SchemaError("format must be of type string")
            node.format = m["format"]

        req = m.get("required")
        if req is not None:
            if not isinstance(req, list) or not all(isinstance(r, str) for r in req):
                raise SchemaError("required items must be string")
            if len(set(req)) != len(req):
                raise SchemaError("required items must be unique")
            node.required = list(req)
        node.unique_items = m.get("uniqueItems") is True

        if "contains" in m and draft >= DRAFT6:
            node.contains = self._sub(m["contains"], resolver, draft, "contains")
        if "const" in m and draft >= DRAFT6:
            node.const = _go_json(m["const"])
        if "enum" in m:
            if not isinstance(m["enum"], list):
                raise SchemaError("enum must be of an array")
            for v in m["enum"]:
                txt = _go_json(v)
                if txt in node.enum:
                    raise SchemaError("enum items must be unique")
                node.enum.append(txt)

        for key, attr in (("oneOf", "one_of"), ("anyOf", "any_of"), ("allOf", "all_of")):
            if key in m:
                if not isinstance(m[key], list):
                    raise SchemaError(f"{key} must be of an array")
                setattr(node, attr, [self._sub(v, resolver, draft, key) for v in m[key]])
        if "not" in m:
            node.not_ = self._sub(m["not"], resolver, draft, "not")
        if draft >= DRAFT7_:
            for key, attr in (("if", "if_"), ("then", "then_"), ("else", "else_")):
                if key in m:
                    setattr(node, attr, self._sub(m[key], resolver, draft, key))


def _unresolvable(resolver: referencing.Resolver, ref: str, exc: Exception) -> str:
    """The gojsonpointer message for a missing fragment (`Object has no key 'x'`), when it is one."""
    base, _, fragment = ref.partition("#")
    if fragment.startswith("/"):
        try:
            node = resolver.lookup(base + "#").contents if base else resolver.lookup("#").contents
        except referencing.exceptions.Unresolvable:
            return str(exc)
        for token in fragment[1:].split("/"):
            token = token.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict):
                if token not in node:
                    return f"Object has no key '{token}'"
                node = node[token]
            elif isinstance(node, list):
                if not token.isdigit() or int(token) >= len(node):
                    return f"Index out of bounds array[0,{len(node)}] index '{token}'"
                node = node[int(token)]
            else:
                return f"Invalid token reference '{token}'"
    return f"Reference {ref} could not be resolved"


def _registry(definitions: dict | None) -> referencing.Registry:
    registry = _SPECIFICATIONS
    if isinstance(definitions, dict | bool):
        res = _resource(definitions)
        if res.id():
            registry = registry.with_resource(res.id(), res)
    return registry


def _compile(schema: Any, definitions: dict | None = None) -> _Node:
    registry = _registry(definitions)
    root = _resource(schema)
    registry = registry.with_resource(root.id() or "", root)
    try:
        registry = registry.crawl()
    except Exception:  # malformed subschemas: the parse below reports them as gojsonschema does
        pass
    resolver = registry.resolver(base_uri=root.id() or "")
    draft = _draft_of(schema) or HYBRID
    return _Compiler(registry).node(schema, resolver, draft)


# ---------------------------------------------------------------------------
# Validation walk (gojsonschema validation.go)
# ---------------------------------------------------------------------------


class _Result:
    __slots__ = ("errors", "score")

    def __init__(self) -> None:
        self.errors: list[ResultError] = []
        self.score = 0

    def add(self, etype: str, ctx: list[str], value: Any, **details: Any) -> None:
        details.setdefault("field", _field(ctx))
        self.errors.append(ResultError(etype, ctx, value, _DESCRIPTIONS[etype].format(**details), details))
        self.score -= 2

    def merge(self, other: _Result) -> None:
        self.errors.extend(other.errors)
        self.score += other.score


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _type_name(node: _Node) -> str:
    return node.types[0] if len(node.types) == 1 else "[" + ",".join(node.types) + "]"


def _sub_validate(node: _Node, inst: Any, ctx: list[str]) -> _Result:
    result = _Result()
    _validate_recursive(node, inst, result, ctx)
    return result


def _validate_recursive(node: _Node, inst: Any, result: _Result, ctx: list[str]) -> None:
    if node.passes is not None:
        if not node.passes:
            result.add("false", ctx, inst)
        return
    if node.ref is not None:
        _validate_recursive(node.ref, inst, result, ctx)
        return

    if inst is None:
        given = "null"
    elif isinstance(inst, bool):
        given = "boolean"
    elif _is_number(inst):
        given = "integer" if _number(inst).denominator == 1 else "number"
    elif isinstance(inst, list):
        given = "array"
    elif isinstance(inst, dict):
        given = "object"
    elif isinstance(inst, str):
        given = "string"
    else:
        raise TypeError(f"not a JSON value: {type(inst).__name__}")

    if node.types:
        ok = given in node.types or (given == "integer" and "number" in node.types)
        if not ok:
            result.add("invalid_type", ctx, inst, expected=_type_name(node), given=given)
            return

    _validate_schema(node, inst, result, ctx)
    if given in ("integer", "number"):
        _validate_number(node, inst, result, ctx)
    elif given == "array":
        _validate_array(node, inst, result, ctx)
    elif given == "object":
        _validate_object(node, inst, result, ctx)
    _validate_common(node, inst, result, ctx)
    if given == "string":
        _validate_string(node, inst, result, ctx)
    if given == "object":
        for name, child in node.properties:
            if name in inst:
                _validate_recursive(child, inst[name], result, ctx + [name])
    result.score += 1


def _validate_schema(node: _Node, inst: Any, result: _Result, ctx: list[str]) -> None:
    if node.any_of:
        best: _Result | None = None
        for sub in node.any_of:
            res = _sub_validate(sub, inst, ctx)
            if not res.errors:
                break
            if best is None or res.score > best.score:
                best = res
        else:
            result.add("number_any_of", ctx, inst)
            if best is not None:
                result.merge(best)

    if node.one_of:
        valid, best = 0, None
        for sub in node.one_of:
            res = _sub_validate(sub, inst, ctx)
            if not res.errors:
                valid += 1
            elif valid == 0 and (best is None or res.score > best.score):
                best = res
        if valid != 1:
            result.add("number_one_of", ctx, inst)
            if valid == 0 and best is not None:
                result.merge(best)

    if node.all_of:
        valid = 0
        for sub in node.all_of:
            res = _sub_validate(sub, inst, ctx)
            if not res.errors:
                valid += 1
            result.merge(res)
        if valid != len(node.all_of):
            result.add("number_all_of", ctx, inst)

    if node.not_ is not None and not _sub_validate(node.not_, inst, ctx).errors:
        result.add("number_not", ctx, inst)

    if node.dependencies and isinstance(inst, dict):
        deps = dict(node.dependencies)
        for key in inst:
            dep = deps.get(key)
            if isinstance(dep, list):
                for other in dep:
                    if other not in inst:
                        result.add("missing_dependency", ctx, inst, dependency=other)
            elif dep is not None:
                _validate_recursive(dep, inst, result, ctx)

    if node.if_ is not None:
        if_ok = not _sub_validate(node.if_, inst, ctx).errors
        if node.then_ is not None and if_ok:
            res = _sub_validate(node.then_, inst, ctx)
            if res.errors:
                result.add("condition_then", ctx, inst)
                result.merge(res)
        if node.else_ is not None and not if_ok:
            res = _sub_validate(node.else_, inst, ctx)
            if res.errors:
                result.add("condition_else", ctx, inst)
                result.merge(res)

    result.score += 1


def _validate_common(node: _Node, inst: Any, result: _Result, ctx: list[str]) -> None:
    if node.const is not None and _go_json(inst) != node.const:
        result.add("const", ctx, inst, allowed=node.const)
    if node.enum and _go_json(inst) not in node.enum:
        result.add("enum", ctx, inst, allowed=", ".join(node.enum))
    result.score += 1


def _validate_array(node: _Node, inst: list, result: _Result, ctx: list[str]) -> None:
    if node.items_single and node.items:
        for i, v in enumerate(inst):
            result.merge(_sub_validate(node.items[0], v, ctx + [str(i)]))
    elif node.items:
        for i, (sub, v) in enumerate(zip(node.items, inst, strict=False)):
            result.merge(_sub_validate(sub, v, ctx + [str(i)]))
        if len(node.items) < len(inst):
            if node.additional_items is False:
                result.add("array_no_additional_items", ctx, inst)
            elif isinstance(node.additional_items, _Node):
                for i in range(len(node.items), len(inst)):
                    result.merge(_sub_validate(node.additional_items, inst[i], ctx + [str(i)]))

    if node.min_items is not None and len(inst) < node.min_items:
        result.add("array_min_items", ctx, inst, min=node.min_items)
    if node.max_items is not None and len(inst) > node.max_items:
        result.add("array_max_items", ctx, inst, max=node.max_items)

    if node.unique_items:
        seen: dict[str, int] = {}
        for j, v in enumerate(inst):
            txt = _go_json(v)
            if txt in seen:
                result.add("unique", ctx, inst, type="array", i=seen[txt], j=j)
            seen[txt] = j

    if node.contains is not None:
        best: _Result | None = None
        for i, v in enumerate(inst):
            res = _sub_validate(node.contains, v, ctx + [str(i)])
            if not res.errors:
                break
            if best is None or res.score > best.score:
                best = res
        else:
            result.add("contains", ctx, inst)
            if best is not None:
                result.merge(best)

    result.score += 1


def _validate_object(node: _Node, inst: dict, result: _Result, ctx: list[str]) -> None:
    if node.min_properties is not None and len(inst) < node.min_properties:
        result.add("array_min_properties", ctx, inst, min=node.min_properties)
    if node.max_properties is not None and len(inst) > node.max_properties:
        result.add("array_max_properties", ctx, inst, max=node.max_properties)

    for name in node.required:
        if name in inst:
            result.score += 1
        else:
            result.add("required", ctx, inst, property=name)

    declared = {name for name, _ in node.properties}
    for key, value in inst.items():
        matched = False
        for rx, sub in node.pattern_properties:
            if rx.search(key):
                matched = True
                result.merge(_sub_validate(sub, value, ctx + [key]))
        if matched:
            result.score += 1
        if key in declared or matched:
            continue
        if node.additional_properties is False:
            # reported on the parent object, with the property's own value
            result.add("additional_property_not_allowed", ctx, value, property=key)
        elif isinstance(node.additional_properties, _Node):
            result.merge(_sub_validate(node.additional_properties, value, ctx + [key]))

    if node.property_names is not None:
        for key in inst:
            res = _sub_validate(node.property_names, key, ctx)
            if res.errors:
                result.add("invalid_property_name", ctx, inst, property=key)
                result.merge(res)

    result.score += 1


def _validate_string(node: _Node, inst: str, result: _Result, ctx: list[str]) -> None:
    if node.min_length is not None and len(inst) < node.min_length:
        result.add("string_gte", ctx, inst, min=node.min_length)
    if node.max_length is not None and len(inst) > node.max_length:
        result.add("string_lte", ctx, inst, max=node.max_length)
    if node.pattern is not None and not node.pattern[1].search(inst):
        result.add("pattern", ctx, inst, pattern=node.pattern[0])
    if node.format and not _is_format(node.format, inst):
        result.add("format", ctx, inst, format=node.format)
    result.score += 1


def _validate_number(node: _Node, inst: Any, result: _Result, ctx: list[str]) -> None:
    value = _number(inst)
    if node.multiple_of is not None and (value / node.multiple_of[0]).denominator != 1:
        result.add("multiple_of", ctx, inst, multiple=_go_big_float(node.multiple_of[1]))
    if node.maximum is not None and value > node.maximum[0]:
        result.add("number_lte", ctx, inst, max=_go_big_float(node.maximum[1]))
    if node.exclusive_maximum is not None and value >= node.exclusive_maximum[0]:
        result.add("number_lt", ctx, inst, max=_go_big_float(node.exclusive_maximum[1]))
    if node.minimum is not None and value < node.minimum[0]:
        result.add("number_gte", ctx, inst, min=_go_big_float(node.minimum[1]))
    if node.exclusive_minimum is not None and value <= node.exclusive_minimum[0]:
        result.add("number_gt", ctx, inst, min=_go_big_float(node.exclusive_minimum[1]))
    if node.format and not _is_format(node.format, inst):  # v1.2.0: known formats reject numbers
        result.add("format", ctx, inst, format=node.format)
    result.score += 1


# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------


def validate(schema: dict | bool, instance: Any, definitions: dict | None = None) -> list[ResultError]:
    """Validate `instance` against a draft-07 `schema`; [] when valid.

    `definitions` is the parsed `validator-definitions.json`, reachable through
    its `$id`. Raises SchemaError when the schema does not compile.
    """
    root = _compile(schema, definitions)
    return _sub_validate(root, instance, [ROOT]).errors


def error_message(errors: list[dict]) -> str:
    """The agent's stderr text: `fmt.Sprintf("Validation errors: %v\\n", errorList)`."""
    parts = []
    for err in errors:
        description = getattr(err, "description", None) or err.get("description") or err.get("error", "")
        parts.append(f"{err.get('field', ROOT)}: {description}")
    return "Validation errors: [" + " ".join(parts) + "]\n"


def to_json(errors: list[dict]) -> str:
    """The task output of a validation failure, byte for byte as Go's `json.Marshal`."""
    items = []
    for err in errors:
        items.append("{" + ",".join(_go_json_string(k) + ":" + _go_json(err.get(k))
                                    for k in ("parameter", "error", "value", "field")) + "}")
    return "[" + ",".join(items) + "]"


def _go_os_error(op: str, path: str, exc: OSError) -> str:
    reason = (exc.strerror or str(exc)).lower()
    return f"{op} {path}: {reason}"


def load_definitions(install_dir: str | None = None) -> tuple[str, dict | None]:
    """Read `${AGENT_INSTALL_DIR}/validator-definitions.json`; read errors are ignored as in the agent."""
    base = install_dir if install_dir is not None else os.environ.get("AGENT_INSTALL_DIR", "")
    path = base + "/validator-definitions.json"
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError:
        return path, None
    try:
        return path, json.loads(raw)
    except ValueError as exc:
        raise ValidationFault(f"Schema loader error while loding {path}: {exc}") from exc


def validate_file(schema_path: str, instance: Any, install_dir: str | None = None) -> list[ResultError]:
    """The agent's ValidateGoStruct: schema file + optional definitions file, faults as Go errors."""
    _, definitions = load_definitions(install_dir)
    try:
        with open(schema_path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ValidationFault(
            f"Failed to read schema file {schema_path}: {_go_os_error('open', schema_path, exc)}") from exc
    try:
        schema = json.loads(raw)
        root = _compile(schema, definitions)
    except (ValueError, SchemaError) as exc:
        raise ValidationFault(f"Schema compile error for file {schema_path}: {exc}") from exc
    return _sub_validate(root, instance, [ROOT]).errors


def _go_unmarshal_error(text: str, exc: json.JSONDecodeError) -> str:
    if not text.strip():
        return "unexpected end of JSON input"
    if exc.msg.startswith("Extra data"):
        return f"invalid character {text[exc.pos]!r} after top-level value"
    if exc.pos >= len(text):
        return "unexpected end of JSON input"
    where = "looking for beginning of value" if exc.pos == len(text) - len(text.lstrip()) else exc.msg
    return f"invalid character {text[exc.pos]!r} {where}"


def validate_json_string(schema_path: str, text: str, install_dir: str | None = None) -> list[ResultError]:
    """The agent's ValidateJsonString (output schemas): the output must be one JSON document."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationFault(f"JSON unmarshal error: {_go_unmarshal_error(text, exc)}") from exc
    return validate_file(schema_path, data, install_dir)
