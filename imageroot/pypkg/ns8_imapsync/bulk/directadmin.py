"""DirectAdmin panel access for the bulk tools: list domains and mailboxes, and
create the mailboxes an import needs.

Only the documented legacy API is used (`CMD_API_SHOW_DOMAINS`, `CMD_API_POP`),
over HTTPS with HTTP Basic auth, so a login key works as well as the password.
The password travels only in the Authorization header or a POST body: never in a
URL (panels and proxies log URLs) and never in a message of ours.

The legacy API answers URL-encoded (`list[]=a&list[]=b`, `error=1&text=...`) or,
with `json=yes`, JSON whose shape differs between panel versions; the parser
accepts both, whatever was asked, because an old panel ignores `json=yes`.
A wrong password often yields the HTML login page with status 200 instead of a
401, which must not be read as "no domains": any reply that is not API text is
an error.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import requests

Reply = dict[str, str | list[str]] | list

_LIST_KEYS = ("list", "users", "domains")


class DirectAdminError(Exception):
    """The panel refused a request, could not be reached, or answered something
    that is not its API. The message is for the operator and holds no secret."""


@dataclass(frozen=True)
class Mailbox:
    """An address split the way the panel names it: local part and domain."""

    user: str
    domain: str

    @property
    def email(self) -> str:
        return f"{self.user}@{self.domain}"


def split_email(email: str) -> Mailbox:
    """`user@domain` in the panel's terms (lower case: DirectAdmin stores both so)."""
    user, at, domain = email.strip().rpartition("@")
    if not at or not user or not domain or "@" in user or "." not in domain:
        raise DirectAdminError(f"{email!r} is not an e-mail address the panel can hold")
    return Mailbox(user.lower(), domain.lower())


# ---------------------------------------------------------------------------
# reply parsing
# ---------------------------------------------------------------------------


def parse_reply(text: str) -> Reply:
    """A legacy API reply as data: JSON when it is JSON, else URL-encoded pairs
    (keys ending in `[]` collect lists). Raises DirectAdminError on a reply that
    is neither, such as an HTML page."""
    body = text.strip()
    if body.startswith(("{", "[")):
        try:
            return json.loads(body)
        except ValueError:
            raise DirectAdminError("the panel sent a reply that looks like JSON but does not parse") from None
    if body.startswith("<") or "<html" in body[:500].lower():
        raise DirectAdminError(
            "the panel answered with an HTML page (usually its login page), not an API reply: "
            "check the URL, the user name and the password or login key"
        )
    out: dict[str, str | list[str]] = {}
    if not body:
        return out
    pairs = parse_qsl(body, keep_blank_values=True)
    if not pairs or any(not k or any(c.isspace() for c in k) for k, _ in pairs):
        raise DirectAdminError(f"the panel sent a reply that is not its API: {_excerpt(body)}")
    for key, value in pairs:
        if key.endswith("[]"):
            items = out.setdefault(key[:-2], [])
            if isinstance(items, list):
                items.append(value)
        else:
            out[key] = value
    return out


def reply_error(reply: Reply) -> str | None:
    """The panel's own words when the reply says `error=1`, else None."""
    if not isinstance(reply, dict):
        return None
    flag = reply.get("error")
    if flag in (None, "", "0", 0, False):
        return None
    text = _scalar(reply.get("text")) or _scalar(reply.get("message")) or "error"
    details = _scalar(reply.get("details"))
    return f"{text}: {details}" if details and details != text else text


def reply_list(reply: Reply) -> list[str]:
    """The list a list command returned, in any of the shapes panels use: a plain
    array, `{"list": [...]}` / `users` / `domains`, keys starting with `list`
    (`list0=`, `list[]=`), or an object of numbered keys."""
    if isinstance(reply, list):
        return [str(x) for x in reply if str(x)]
    for key in _LIST_KEYS:
        value = reply.get(key)
        if isinstance(value, list):
            return [str(x) for x in value if str(x)]
        if isinstance(value, dict):
            return [str(x) for x in value.values() if str(x)]
        if isinstance(value, str) and value:
            return [value]
    keyed = [v for k, v in reply.items() if k.startswith("list") or k.isdigit()]
    out: list[str] = []
    for value in keyed:
        out.extend(value if isinstance(value, list) else [value])
    return [str(x) for x in out if str(x)]


def _scalar(value: object) -> str:
    if isinstance(value, list):
        return "; ".join(str(v) for v in value)
    return "" if value is None else str(value).strip()


def _excerpt(body: str, limit: int = 120) -> str:
    one_line = " ".join(body.split())
    return one_line if len(one_line) <= limit else one_line[:limit] + "..."


# ---------------------------------------------------------------------------
# client
# ---------------------------------------------------------------------------


class DirectAdminClient:
    """The three legacy API calls the bulk tools need.

    `use_json` asks for `json=yes` replies; URL-encoded replies are understood
    either way. `verify_ssl=False` accepts a self-signed panel certificate, which
    is the operator's explicit choice, so urllib3's per-request warning is muted.
    """

    def __init__(self, url: str, username: str, password: str, verify_ssl: bool = True,
                 timeout: float = 30, *, use_json: bool = True) -> None:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DirectAdminError(f"the panel URL {url!r} must look like https://panel.example.com:2222")
        if parts.username or parts.password:
            raise DirectAdminError("put no credentials in the panel URL: give the user name and password apart")
        if not username:
            raise DirectAdminError("the panel user name is empty")
        if not password:
            raise DirectAdminError("the panel password is empty")
        self.base_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
        self.username = username
        self.verify_ssl = verify_ssl
        self.timeout = timeout
        self.use_json = use_json
        self._session = requests.Session()
        self._session.auth = (username, password)
        # `verify` is also passed on every call: with trust_env, $REQUESTS_CA_BUNDLE
        # would otherwise override a session-level verify=False.
        self._session.verify = verify_ssl
        if not verify_ssl:
            from urllib3.exceptions import InsecureRequestWarning

            warnings.filterwarnings("ignore", category=InsecureRequestWarning)

    def __repr__(self) -> str:  # no password, even by accident in a traceback
        return f"DirectAdminClient({self.base_url!r}, user={self.username!r}, verify_ssl={self.verify_ssl})"

    def close(self) -> None:
        self._session.close()

    def __enter__(self) -> DirectAdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the API ------------------------------------------------------------

    def list_domains(self) -> list[str]:
        """The domains owned by the panel user."""
        reply = self._call("GET", "CMD_API_SHOW_DOMAINS", {}, doing="listing the domains")
        return _unique(d.lower() for d in reply_list(reply))

    def list_mailboxes(self, domain: str) -> list[str]:
        """Local parts of the POP/IMAP mailboxes of `domain`."""
        reply = self._call("GET", "CMD_API_POP", {"action": "list", "domain": domain.lower()},
                           doing=f"listing the mailboxes of {domain.lower()}")
        return _unique(u.lower() for u in reply_list(reply))

    def create_mailbox(self, email: str, password: str, quota_mb: int) -> None:
        """Create `email` with `password`; `quota_mb` 0 = unlimited. POST, so the
        password is in the body and never in a URL."""
        box = split_email(email)
        if not password:
            raise DirectAdminError(f"cannot create {box.email}: its password is empty")
        if quota_mb < 0:
            raise DirectAdminError(f"the mailbox quota must be 0 (unlimited) or more MB, not {quota_mb}")
        self._call("POST", "CMD_API_POP", {
            "action": "create", "domain": box.domain, "user": box.user,
            "passwd": password, "passwd2": password, "quota": str(quota_mb),
        }, doing=f"creating {box.email}")

    # -- transport ------------------------------------------------------------

    def _call(self, method: str, command: str, params: dict[str, str], doing: str = "") -> Reply:
        url = f"{self.base_url}/{command}"
        fields = dict(params)
        if self.use_json:
            fields["json"] = "yes"
        doing = doing or command
        try:
            if method == "GET":
                resp = self._session.get(url, params=fields, timeout=self.timeout,
                                         verify=self.verify_ssl, allow_redirects=False)
            else:
                resp = self._session.post(url, data=fields, timeout=self.timeout,
                                          verify=self.verify_ssl, allow_redirects=False)
        except requests.exceptions.SSLError as exc:
            raise DirectAdminError(_tls_problem(self.base_url, exc)) from None
        except requests.exceptions.Timeout:
            raise DirectAdminError(f"the panel at {self.base_url} did not answer within {self.timeout:g} s "
                                   f"({doing})") from None
        except requests.exceptions.ConnectionError as exc:
            raise DirectAdminError(f"cannot reach the panel at {self.base_url}: {_root_cause(exc)}") from None
        except requests.exceptions.RequestException as exc:
            raise DirectAdminError(f"request to the panel at {self.base_url} failed: {_root_cause(exc)}") from None
        return self._check(resp, doing)

    def _check(self, resp: requests.Response, doing: str) -> Reply:
        if resp.status_code in (401, 403):
            raise DirectAdminError(
                f"the panel at {self.base_url} refused the login of user {self.username!r} "
                f"(HTTP {resp.status_code}): check the user name and the password or login key"
            )
        if 300 <= resp.status_code < 400:
            where = resp.headers.get("Location", "")
            raise DirectAdminError(
                f"the panel at {self.base_url} redirected {doing} to {where or 'another page'} "
                f"(HTTP {resp.status_code}): check the URL (scheme and port, usually https and 2222) and the login"
            )
        if resp.status_code >= 400:
            raise DirectAdminError(f"the panel at {self.base_url} answered HTTP {resp.status_code} {resp.reason} "
                                   f"({doing})")
        # No trust in Content-Type: the legacy API labels its URL-encoded text "text/html".
        text = resp.text
        try:
            reply = parse_reply(text)
        except DirectAdminError as exc:
            raise DirectAdminError(f"{exc} ({doing} at {self.base_url})") from None
        problem = reply_error(reply)
        if problem is not None:
            raise DirectAdminError(f"the panel refused {doing}: {problem}")
        return reply


def _tls_problem(base_url: str, exc: Exception) -> str:
    cause = _root_cause(exc)
    if "CERTIFICATE_VERIFY_FAILED" in cause or "certificate verify failed" in cause.lower():
        return (f"the TLS certificate of the panel at {base_url} could not be verified ({cause}); "
                "if the panel uses a self-signed certificate, allow it explicitly with the no-verify-ssl option")
    return f"TLS with the panel at {base_url} failed: {cause}"


def _root_cause(exc: BaseException) -> str:
    """The reason in words, without urllib3's pool/retry wrapping."""
    inner: object = exc
    for arg in getattr(exc, "args", ()):
        reason = getattr(arg, "reason", None)
        if reason is not None:
            inner = reason
    text = str(inner) or type(inner).__name__
    if "Connection refused" in text:
        return "connection refused (nothing listens on that port?)"
    if "Name or service not known" in text or "nodename nor servname" in text or "Temporary failure in name" in text:
        return "the host name does not resolve"
    if ": " in text and text.startswith("<"):  # "<urllib3... object at 0x...>: Failed to ..."
        text = text.split(": ", 1)[1]
    return text


def _unique(items) -> list[str]:
    out: list[str] = []
    seen: set[str] = set()
    for item in items:
        item = item.strip()
        if item and item not in seen:
            seen.add(item)
            out.append(item)
    return out


# ---------------------------------------------------------------------------
# provisioning
# ---------------------------------------------------------------------------


@dataclass
class Provisioner:
    """Makes sure a mailbox exists on the panel before an import logs in to it.

    Each domain's mailbox list is fetched once and kept, so provisioning
    thousands of accounts costs one call per domain plus one per creation.
    Safe to share between import workers (one lock: panel calls are short and a
    panel handles parallel creations badly). With `dry_run` nothing is changed:
    it only says what it would create.
    """

    client: DirectAdminClient
    quota_mb: int
    dry_run: bool
    log: Callable[[str], None]
    _domains: list[str] | None = field(default=None, init=False, repr=False)
    _mailboxes: dict[str, set[str]] = field(default_factory=dict, init=False, repr=False)
    _would_create: set[str] = field(default_factory=set, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.quota_mb < 0:
            raise DirectAdminError(f"the mailbox quota must be 0 (unlimited) or more MB, not {self.quota_mb}")

    def ensure(self, email: str, password: str, *, fresh: bool = False) -> str:
        """"exists", "created" or "would-create" (dry run) for `email`; raises
        DirectAdminError when the panel fails or does not hold the domain.

        `fresh` re-lists the domain first instead of trusting the cache: for the
        lazy second chance after a login failed, when the box may have gone."""
        box = split_email(email)
        with self._lock:
            existing = self._known(box.domain)
            if fresh and box.user in existing:
                existing = self._refresh(box.domain)
            if box.user in existing:
                return "exists"
            if self.dry_run:
                if box.email not in self._would_create:
                    self._would_create.add(box.email)
                    note = "" if password else " (its password in the config is empty: the panel would refuse it)"
                    self.log(f"dry run: would create mailbox {box.email} on the panel, "
                             f"quota {self._quota_words()}{note}")
                return "would-create"
            try:
                self.client.create_mailbox(box.email, password, self.quota_mb)
            except DirectAdminError as refused:
                # Another tool (or a previous run that lost its reply) may have made it meanwhile.
                try:
                    existing = self._refresh(box.domain)
                except DirectAdminError:
                    raise refused from None
                if box.user in existing:
                    return "exists"
                raise
            existing.add(box.user)
            self.log(f"created mailbox {box.email} on the panel, quota {self._quota_words()}")
            return "created"

    def _known(self, domain: str) -> set[str]:
        cached = self._mailboxes.get(domain)
        if cached is not None:
            return cached
        if self._domains is None:
            self._domains = self.client.list_domains()
        if domain not in self._domains:
            raise DirectAdminError(
                f"the domain {domain} does not belong to the panel user {self.client.username!r} "
                f"(its domains: {', '.join(self._domains) or 'none'})"
            )
        return self._refresh(domain)

    def _refresh(self, domain: str) -> set[str]:
        boxes = set(self.client.list_mailboxes(domain))
        self._mailboxes[domain] = boxes
        return boxes

    def _quota_words(self) -> str:
        return "unlimited" if self.quota_mb == 0 else f"{self.quota_mb} MB"
