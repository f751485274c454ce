"""The export directory: one directory per account, one per folder, one ``.eml``
per message with a ``.json`` sidecar.

Layout::

    exported/<email>/.account.json               source server, namespace, export times
    exported/<email>/<c1>/<c2>/.folder.json      original IMAP name, delimiter, UIDVALIDITY
    exported/<email>/<c1>/<c2>/u0000001234.eml   the message, byte for byte as FETCHed
    exported/<email>/<c1>/<c2>/u0000001234.json  flags, internal date, identity

A folder ``A.B.C`` (delimiter ``.``) becomes the directories ``A/B/C``, so the
hierarchy is visible on disk and a folder can hold messages *and* child folders.
Each name component is kept as it is (spaces, non-ASCII) except what the file
system cannot hold or what could clash with our own files: ``/``, ``%``, NUL and
control characters are percent-encoded, and so is the first character of a
component that starts with ``.`` (no ``..``, no clash with ``.folder.json``) or
looks like a message file (``u123.eml``).  Encoding is reversible, so two
different folders never share a directory; the original name is in
``.folder.json`` anyway and that is what the import uses.

Files are written to a ``.tmp-`` name and renamed; the sidecar is written after
the ``.eml``, so a message counts as exported only when its sidecar exists.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ns8_imapsync import files

ACCOUNT_META = ".account.json"
FOLDER_META = ".folder.json"
TMP_PREFIX = ".tmp-"
MESSAGE_RE = re.compile(r"^u(\d{10,})\.(eml|json)$")
_MESSAGE_LIKE = re.compile(r"^u\d+\.(eml|json)", re.I)
_UNSAFE = re.compile(r"[%/\x00-\x1f\x7f]")
MAX_COMPONENT_BYTES = 200


class StoreError(Exception):
    """The export directory is unusable (bad account name, unreadable metadata)."""


@dataclass
class Sidecar:
    """What we know about one exported message besides its bytes."""

    uid: int
    uidvalidity: int
    folder: str
    flags: list[str]
    internaldate: str | None  # ISO 8601 with offset
    size: int  # bytes of the .eml file
    rfc822_size: int  # size as the server reported it (CRLF line endings)
    message_id: str | None
    sha256: str  # of the .eml file as stored
    content_key: str  # "sha256:" of the message with CRLF line endings (identity of header-less mail)
    signature: str | None  # imapsync's Message-Id + Received signature

    @property
    def identity(self) -> str:
        """The key import and validate match on: the header signature, else the content hash."""
        return self.signature or self.content_key

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False, indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: dict) -> Sidecar:
        try:
            return cls(
                uid=int(data["uid"]),
                uidvalidity=int(data["uidvalidity"]),
                folder=str(data["folder"]),
                flags=[str(f) for f in data.get("flags") or []],
                internaldate=data.get("internaldate"),
                size=int(data["size"]),
                rfc822_size=int(data.get("rfc822_size", data["size"])),
                message_id=data.get("message_id"),
                sha256=str(data["sha256"]),
                content_key=str(data["content_key"]),
                signature=data.get("signature"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(f"sidecar field missing or invalid: {exc}") from None


@dataclass
class FolderMeta:
    """``.folder.json``: the folder as the source server named it."""

    name: str  # decoded (Unicode) IMAP name
    raw: str  # modified UTF-7 as LISTed
    delimiter: str
    uidvalidity: int
    messages: int = 0  # messages on the source at the end of the last export
    flags: list[str] = field(default_factory=list)


def encode_component(part: str) -> str:
    """One folder name component as a safe, reversible directory name."""
    out = _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group(0).encode()), part)
    if out == "" or out.startswith(".") or _MESSAGE_LIKE.match(out):
        first = out[:1] or ""
        out = ("".join(f"%{b:02X}" for b in first.encode()) if first else "%") + out[1:]
    if len(out.encode()) > MAX_COMPONENT_BYTES:
        digest = hashlib.sha256(part.encode()).hexdigest()[:16]
        cut = out.encode()[: MAX_COMPONENT_BYTES - 18].decode("utf-8", "ignore")
        cut = re.sub(r"%[0-9A-F]?$", "", cut)  # never cut an escape in half
        out = f"{cut}%~{digest}"
    return out


def folder_components(name: str, delimiter: str) -> list[str]:
    """The directory components of a folder: its hierarchy, each part encoded."""
    parts = name.split(delimiter) if delimiter else [name]
    return [encode_component(p) for p in parts]


def safe_account_dir(email: str) -> str:
    """The account's directory name: the address itself when harmless, else encoded."""
    if not email or email.strip() != email:
        raise StoreError(f"account name {email!r} is empty or has surrounding blanks")
    return encode_component(email)


def atomic_write(path: Path, data: bytes, mode: int = 0o600) -> None:
    """A sidecar or meta file, whole or absent: thousands per export, so without
    fsync (a power cut costs re-exporting them), under the temporary prefix the
    audit looks for."""
    files.write_atomic(path, data, mode, durable=False, tmp=path.with_name(f"{TMP_PREFIX}{path.name}"))


def message_paths(folder_dir: Path, uid: int) -> tuple[Path, Path]:
    stem = f"u{uid:010d}"
    return folder_dir / f"{stem}.eml", folder_dir / f"{stem}.json"


class AccountStore:
    """The files of one account under the export root."""

    def __init__(self, root: Path, email: str) -> None:
        self.email = email
        self.dir = Path(root) / safe_account_dir(email)

    # ---- account ---------------------------------------------------------
    def ensure(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    def read_account_meta(self) -> dict:
        path = self.dir / ACCOUNT_META
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path} is unreadable: {exc}") from None

    def write_account_meta(self, meta: dict) -> None:
        self.ensure()
        atomic_write(self.dir / ACCOUNT_META, (json.dumps(meta, ensure_ascii=False, indent=1) + "\n").encode())

    # ---- folders ---------------------------------------------------------
    def folder_dir(self, name: str, delimiter: str) -> Path:
        return self.dir.joinpath(*folder_components(name, delimiter))

    def folders(self) -> Iterator[tuple[Path, FolderMeta]]:
        """Every exported folder (a directory with ``.folder.json``), parents first."""
        if not self.dir.is_dir():
            return
        for meta_path in sorted(self.dir.rglob(FOLDER_META)):
            yield meta_path.parent, self.read_folder_meta(meta_path.parent)

    @staticmethod
    def read_folder_meta(folder_dir: Path) -> FolderMeta:
        path = folder_dir / FOLDER_META
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return FolderMeta(
                name=str(data["name"]), raw=str(data.get("raw", data["name"])),
                delimiter=str(data.get("delimiter", "")), uidvalidity=int(data.get("uidvalidity", 0)),
                messages=int(data.get("messages", 0)), flags=list(data.get("flags") or []),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path} is unreadable: {exc}") from None

    @staticmethod
    def write_folder_meta(folder_dir: Path, meta: FolderMeta) -> None:
        folder_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write(folder_dir / FOLDER_META,
                     (json.dumps(asdict(meta), ensure_ascii=False, indent=1) + "\n").encode())

    # ---- messages --------------------------------------------------------
    @staticmethod
    def exported_uids(folder_dir: Path) -> set[int]:
        """UIDs with both files present (a lone ``.eml`` is an interrupted write)."""
        if not folder_dir.is_dir():
            return set()
        names = {p.name for p in folder_dir.iterdir() if p.is_file()}
        uids = set()
        for name in names:
            m = MESSAGE_RE.match(name)
            if m and m.group(2) == "json" and name[:-5] + ".eml" in names:
                uids.add(int(m.group(1)))
        return uids

    @staticmethod
    def read_sidecar(path: Path) -> Sidecar:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path.name}: unreadable sidecar ({exc})") from None
        if not isinstance(data, dict):
            raise StoreError(f"{path.name}: the sidecar is not a JSON object")
        return Sidecar.from_dict(data)

    @classmethod
    def sidecars(cls, folder_dir: Path) -> list[tuple[Path, Sidecar]]:
        """(eml path, sidecar) of every complete message of a folder, by UID."""
        out = []
        for uid in sorted(cls.exported_uids(folder_dir)):
            eml, js = message_paths(folder_dir, uid)
            out.append((eml, cls.read_sidecar(js)))
        return out

    @staticmethod
    def remove_message(folder_dir: Path, uid: int) -> None:
        for path in message_paths(folder_dir, uid):
            path.unlink(missing_ok=True)

    @staticmethod
    def remove_folder_files(folder_dir: Path) -> None:
        """Drop a folder's messages and metadata, keeping child folders' directories."""
        for p in list(folder_dir.iterdir()):
            if p.is_file() and (MESSAGE_RE.match(p.name) or p.name == FOLDER_META or p.name.startswith(TMP_PREFIX)):
                p.unlink()
        _prune_empty(folder_dir)

    @staticmethod
    def clean_tmp(folder_dir: Path) -> None:
        if folder_dir.is_dir():
            for p in folder_dir.iterdir():
                if p.is_file() and p.name.startswith(TMP_PREFIX):
                    p.unlink()

    def remove_all(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _prune_empty(folder_dir: Path) -> None:
    try:
        if not any(folder_dir.iterdir()):
            folder_dir.rmdir()
    except OSError:
        pass
