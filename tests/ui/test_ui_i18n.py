"""Every string of the UI is in ui/public/i18n/<lang>/translation.json, and
English and Italian are complete: checked on the sources, no browser needed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from localnode.config import REPO_ROOT

UI = REPO_ROOT / "ui"
LANGS = ("en", "it")
STATIC_KEY = re.compile(r"""\$tc?\(\s*["'`]([a-z_]+\.[A-Za-z0-9_.-]+)["'`]""")
ACTION = re.compile(r"""run(?:Module|Cluster)Task\(\s*["'`]([a-z-]+)["'`]""")
TEMPLATE_KEY = re.compile(r"""\$tc?\(\s*`([a-z_]+\.[A-Za-z0-9_]*)\$\{""")


def flat(tree: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def messages(lang: str) -> dict[str, str]:
    return flat(json.loads((UI / "public" / "i18n" / lang / "translation.json").read_text()))


def sources() -> str:
    return "\n".join(p.read_text() for p in sorted((UI / "src").rglob("*")) if p.suffix in (".vue", ".js"))


def test_english_and_italian_have_the_same_keys_and_no_empty_string() -> None:
    en, it = messages("en"), messages("it")
    assert set(en) == set(it), set(en) ^ set(it)
    assert not [k for lang in (en, it) for k, v in lang.items() if not str(v).strip()]
    # Italian is a translation, not a copy (a few words are the same in both)
    same = [k for k in en if en[k] == it[k]]
    assert len(same) < len(en) // 10, same


def test_every_key_the_sources_use_exists() -> None:
    en = messages("en")
    text = sources()
    used = set(STATIC_KEY.findall(text)) | {f"action.{a}" for a in ACTION.findall(text)}
    assert used, "the sources were not read"
    missing = sorted(k for k in used if k not in en)
    assert not missing, missing
    # keys built at run time: each prefix has keys behind it
    for prefix in set(TEMPLATE_KEY.findall(text)):
        assert any(k.startswith(prefix) for k in en), prefix


def test_each_family_of_built_keys_is_complete() -> None:
    en = messages("en")
    families = {
        "tasks.state_": ("running", "queued", "idle", "failed", "stalled", "crashed"),
        "tasks.last_": ("succeeded", "failed", "stopped", "stalled", "crashed"),
        "tasks.security_": ("none", "tls", "ssl"),
        "history.state_": ("succeeded", "failed", "stopped", "stalled", "crashed"),
        "history.trigger_": ("manual", "cron", "create"),
        "import_csv.outcome_": ("created", "updated", "skipped", "failed", "would_create", "would_update",
                                "would_skip", "not_imported"),
        "tasks.column_": ("localuser", "remoteusername", "remotehostname", "schedule", "state", "last_sync"),
    }
    missing = [f"{p}{v}" for p, values in families.items() for v in values if f"{p}{v}" not in en]
    assert not missing, missing
    # every refusal create-task and configure-module can answer has words
    form = (UI / "src" / "lib" / "taskform.js").read_text()
    block = form[form.index("const FIELD_OF_ERROR = {"):]
    codes = re.findall(r"^\s+([A-Za-z_]+): \"", block[:block.index("};")], re.M)
    assert "bad_user_credentials" in codes
    codes += ["mail_server_is_not_valid", "task_id_is_already_used", "exclude_backtracks_catastrophically",
              "validation_failed", "module_is_not_configured"]
    assert not [c for c in codes if f"error.{c}" not in en]


def test_no_message_trips_vue_i18n_syntax() -> None:
    """`@` starts a linked message and `|` separates plural forms in vue-i18n 8."""
    for lang in LANGS:
        for key, value in messages(lang).items():
            assert "@" not in value, f"{lang} {key}: use {{'@'}}"
            if "|" in value:
                assert value.count("|") == 1 and ("{n}" in value or key.endswith("schedule_off")), f"{lang} {key}"


def test_metadata_describes_the_module_in_both_languages() -> None:
    meta = json.loads((UI / "public" / "metadata.json").read_text())
    assert {"en", "it"} <= set(meta["description"])
    assert meta["source"] == "ghcr.io/nethserver/imapsync"
    assert Path(UI / "src" / "assets" / "module_default_logo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
