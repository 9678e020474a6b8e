"""The error of stage 05 (CNI lifecycle): a refused or failed upgrade/replacement."""

from __future__ import annotations

from ..errors import OperatorError


class LifecycleError(OperatorError):
    """A lifecycle plan was refused or its apply failed; the message says why and what to do."""
