"""One place that scrubs secrets from everything written into a run folder.

Two kinds of scrubbing, always both:

* known values - secrets read through the params' secret references (environment variables,
  secret files such as SSH keys) and credentials found in kubeconfig files (client keys,
  client certificates, tokens, passwords; raw and base64-decoded);
* patterns - PEM blocks, ``Bearer``/``Basic`` credentials, ``user:password@`` in URLs (database
  URLs, proxies), well-known token formats (npm, GitHub, GitLab, Slack, AWS key ids), and values of
  names that look secret (``*TOKEN*``, ``*PASSWORD*``, ``*SECRET*``, ``*_KEY`` such as
  ``AWS_SECRET_ACCESS_KEY``, ``psk``), wherever they appear.

Notebooks and JSON files are parsed and every string in them is scrubbed (so a secret split by
JSON escaping is still found); other text files are scrubbed as text; binary files have known
values blanked byte for byte. Known values shorter than :data:`MIN_SECRET_LEN` are ignored so a
weak password cannot turn every file into confetti.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from .params import secrets

MARK = "[REDACTED]"
MIN_SECRET_LEN = 6
_LINE_MIN = 12  # lines of multi-line secrets (key files) at least this long are scrubbed alone too

_PEM = re.compile(r"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)
_BEARER = re.compile(r"(?i)\b((?:bearer|basic)\s+)[A-Za-z0-9\-._~+/]{8,}=*")
# user:password@ in any URL (DATABASE_URL, http_proxy, git remotes): the password goes.
_URL_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.\-]*://[^\s:/@\"']*:)(?!\[REDACTED\])([^\s@/\"']+)(@)")
# Well-known token formats, wherever they appear.
_TOKENS = re.compile(
    r"\b(?:npm_[A-Za-z0-9]{30,}|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,}|glpat-[A-Za-z0-9_\-]{20,}"
    r"|xox[abposr]-[A-Za-z0-9\-]{10,}|AKIA[0-9A-Z]{16}|sk-[A-Za-z0-9_\-]{20,})\b")
# name: value / name=value / "name": "value" where the name ends like a secret (password, token,
# private_key, api-key, psk, client-key-data, ...), and environment-style names that contain one
# (AWS_SECRET_ACCESS_KEY, GITHUB_TOKEN_RO, DB_PASSWORD_FILE, ...).
_KEY_VALUE = re.compile(
    r"""(?x)
    ( (?: (?i:\b[\w-]*(?:token|password|passwd|passphrase|secret|client-key-data|client-certificate-data
                          |private[_-]?key|api[_-]?key|access[_-]?key|auth[_-]?key|psk|credentials?))
        | \b[A-Z0-9_]*(?:SECRET|TOKEN|PASSW|PRIVATE_KEY|API_KEY|ACCESS_KEY|AUTH_KEY|CREDENTIAL)[A-Z0-9_]* )
      ["']? \s* [:=] \s* ["']? )
    (?!\[REDACTED\])                     # already scrubbed
    ( [^\s"',}\]]+ )""")
_ENV_SECRET_NAME = re.compile(r"^[A-Z0-9_]*(?:SECRET|TOKEN|PASSW|PRIVATE_KEY|API_KEY|ACCESS_KEY|AUTH_KEY|CREDENTIAL)[A-Z0-9_]*$")


def secret_name(key: str) -> bool:
    """True if a key or variable name says its value is secret."""
    return bool(secrets.SECRET_KEY.search(key) or _ENV_SECRET_NAME.match(key))


_HARMLESS = {"true", "false", "null", "none", "~", "''", '""', MARK.lower()}
_KUBECONFIG_CREDENTIALS = ("client-key-data", "client-certificate-data", "token", "password")


def _harmless(value: str) -> bool:
    return value.lower() in _HARMLESS or secrets.is_reference(value) or value.startswith(("{{", "$("))


def _b64(value: str) -> str | None:
    try:
        return base64.b64decode(value, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


class Redactor:
    """Scrubs known secret values and secret-looking patterns from text, data and files."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._values: set[str] = set()
        for value in values:
            self.add(value)

    # -- what is secret ----------------------------------------------------------------------

    def add(self, value: str | None) -> None:
        """Treat ``value`` (and each long line of it) as a secret."""
        if not value:
            return
        value = value.strip()
        if len(value) >= MIN_SECRET_LEN:
            self._values.add(value)
        if "\n" in value:
            for line in value.splitlines():
                if len(line.strip()) >= _LINE_MIN:
                    self._values.add(line.strip())

    def add_kubeconfig(self, path: str | Path) -> None:
        """Add the credentials held in a kubeconfig file (missing or unreadable files are skipped)."""
        try:
            config = yaml.safe_load(Path(path).expanduser().read_text())
        except (OSError, yaml.YAMLError):
            return
        if not isinstance(config, dict):
            return
        for user in config.get("users") or []:
            fields = (user or {}).get("user") or {}
            for key in _KUBECONFIG_CREDENTIALS:
                value = fields.get(key)
                if isinstance(value, str):
                    self.add(value)
                    self.add(_b64(value) if key.endswith("-data") else None)

    def add_secret_file(self, path: str | Path) -> None:
        """Add the content of a file whose content is secret; kubeconfigs give only their credentials."""
        path = Path(path).expanduser()
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError):
            return
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = None
        if isinstance(parsed, dict) and "users" in parsed and "clusters" in parsed:
            self.add_kubeconfig(path)
        else:
            self.add(text)

    @classmethod
    def for_params(cls, params: Any, kubeconfigs: Iterable[str | Path] = ()) -> Redactor:
        """A redactor knowing every secret the params reference, plus the given kubeconfigs."""
        red = cls()
        for ref in params.secret_refs():  # SECRET fields and env:/file: anywhere in free-form data
            path = secrets.reference_path(ref)
            if path is None:
                try:
                    value = secrets.resolve(ref)
                except secrets.SecretError:
                    # an unset variable holds no secret to scrub; the stage that needs it says so
                    continue
                red.add(value)
            else:
                red.add_secret_file(path)
        for path in kubeconfigs:
            red.add_kubeconfig(path)
        return red

    # -- scrubbing ---------------------------------------------------------------------------

    def text(self, text: str) -> str:
        """Scrub one string."""
        for value in sorted(self._values, key=len, reverse=True):
            if value in text:
                text = text.replace(value, MARK)
        text = _PEM.sub(lambda m: f"-----BEGIN {m.group(1)}----- {MARK} -----END {m.group(1)}-----", text)
        text = _BEARER.sub(lambda m: m.group(1) + MARK, text)
        text = _URL_CREDENTIALS.sub(lambda m: m.group(1) + MARK + m.group(3), text)
        text = _TOKENS.sub(MARK, text)
        return _KEY_VALUE.sub(lambda m: m.group(0) if _harmless(m.group(2)) else m.group(1) + MARK, text)

    def data(self, obj: Any) -> Any:
        """Scrub every string in JSON-like data; values of secret-named keys are scrubbed whole."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, list):
            return [self.data(v) for v in obj]
        if isinstance(obj, dict):
            out = {}
            for key, value in obj.items():
                if (isinstance(value, str) and secret_name(str(key))
                        and value and not _harmless(value)):
                    out[key] = MARK
                else:
                    out[key] = self.data(value)
            return out
        return obj

    def file(self, path: Path) -> bool:
        """Scrub one file in place; True if it changed."""
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            new = raw
            for value in self._values:
                encoded = value.encode()
                new = new.replace(encoded, b"\0" * len(encoded))
            changed = new != raw
        else:
            if path.suffix in (".ipynb", ".json"):
                try:
                    doc = json.loads(text)
                except json.JSONDecodeError:
                    new_text = self.text(text)
                else:
                    clean = self.data(doc)
                    new_text = text if clean == doc else _dump_json(clean, path.suffix)
            else:
                new_text = self.text(text)
            changed = new_text != text
            new = new_text.encode("utf-8")
        if changed:
            path.write_bytes(new)
        return changed

    def tree(self, root: Path) -> list[Path]:
        """Scrub every file under root; returns the files that changed."""
        return [p for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink() and self.file(p)]


def _dump_json(doc: Any, suffix: str) -> str:
    if suffix == ".ipynb":  # the layout nbformat writes
        return json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"
