"""Secret references: params name secrets, they never contain them.

A secret field accepts only
  * ``env:NAME``   - the value of environment variable NAME, read when needed;
  * ``file:PATH``  - the content of a file;
  * a path        - anything that starts with ``/``, ``./``, ``../`` or ``~``.
Anything else is taken for an inline secret and rejected, so a password pasted
into a params file fails validation before it can reach a run record.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_ENV = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
_PATH_PREFIXES = ("/", "./", "../", "~")

SECRET_REF_EXPECTATION = "a secret reference: 'env:VAR', 'file:PATH' or a path starting with / ./ ../ or ~ (never the secret itself)"

# Keys whose values are secrets wherever they appear in free-form mappings
# (kubespray extra_vars, CNI config overrides, Helm values): the name ends in one of these.
SECRET_KEY = re.compile(
    r"(pass(word|wd|phrase)?|secret|token|private_?key|api_?key|access_?key|auth_?key|encryption_?key"
    r"|signing_?key|credential|psk|pre_?shared_?key|client_?key(_?data)?)s?$", re.IGNORECASE)

class SecretError(ValueError):
    """A secret reference that cannot be resolved."""


def is_reference(value: str) -> bool:
    """True if value is a secret *reference* (env var, file: prefix or a path)."""
    return bool(_ENV.match(value)) or value.startswith("file:") or value.startswith(_PATH_PREFIXES)


def check_reference(value: str) -> str:
    """Pydantic validator: accept references, reject anything that may be an inline secret."""
    if not isinstance(value, str) or not is_reference(value):
        raise ValueError(f"inline secrets are not allowed; expected {SECRET_REF_EXPECTATION}")
    if value.startswith("file:") and len(value) == len("file:"):
        raise ValueError("'file:' needs a path after it")
    return value


def reference_path(value: str) -> str | None:
    """The file path a reference points at, or None for an env reference."""
    if _ENV.match(value):
        return None
    return value[len("file:"):] if value.startswith("file:") else value


def with_path(value: str, path: str) -> str:
    """Rewrite the path part of a file reference (used to make paths absolute)."""
    return f"file:{path}" if value.startswith("file:") else path


def resolve(value: str) -> str:
    """Read the secret a reference points at. Raises SecretError if it is unavailable."""
    env = _ENV.match(value)
    if env:
        name = env.group(1)
        if name not in os.environ:
            raise SecretError(f"environment variable {name} is not set")
        return os.environ[name]
    path = Path(reference_path(value)).expanduser()
    try:
        return path.read_text()
    except OSError as exc:
        raise SecretError(f"cannot read secret file {path}: {exc.strerror}") from None


def references_in(value: object) -> list[str]:
    """Secret references anywhere in free-form data (``env:VAR`` and ``file:PATH`` strings)."""
    found: list[str] = []
    if isinstance(value, str):
        if _ENV.match(value) or (value.startswith("file:") and len(value) > len("file:")):
            found.append(value)
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(references_in(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            found.extend(references_in(item))
    return found
