"""Errors raised by the CNI sources and rendering code.

Every message names the file (or URL), the key or object concerned and what was expected, so a
runbook cell can show it as is.
"""

from __future__ import annotations


class CniError(ValueError):
    """Base class of every error raised by :mod:`cni_runbook.cni`."""


class SourceError(CniError):
    """A CNI source (URL, local file, Helm chart) could not be obtained or verified."""


class ManifestError(CniError):
    """A manifest is broken or cannot be applied as it is.

    ``problems`` lists every problem found (one line each); the message joins them, so a manifest
    with three broken documents reports all three at once.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class SettingsError(CniError):
    """CNI settings (e.g. Antrea config keys) are unknown, invalid or inconsistent.

    ``problems`` lists every problem found, like :class:`ManifestError`.
    """

    def __init__(self, problems: list[str] | str):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
