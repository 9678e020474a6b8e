"""The base of errors an operator can act on from the message alone.

The CLI prints these without a traceback (exit 1): the lab refused or failed to start, the
cluster refused an object, a wait timed out. Kept free of heavy imports so the CLI stays fast.
"""


class OperatorError(RuntimeError):
    """An error whose message says what went wrong and what to do; no traceback needed."""
