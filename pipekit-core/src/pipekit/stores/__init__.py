"""Backends: the protocols every backend implements (a lease, an
idempotency store, a checkpoint store, a dead-letter store), what a
backend's ``doctor()`` reports, and core's own file backends. A backend
plugin implements these protocols; semantics above them live once in core.
"""

from ._doctor import FAIL, OK, WARN, Check
from ._protocols import (
    DEAD_LETTER_FIELDS,
    CheckpointStore,
    DeadLetter,
    DeadLetterStore,
    IdempotencyStore,
    IdemRecord,
    Lease,
    LockBackend,
)

__all__ = [
    "Lease",
    "LockBackend",
    "IdemRecord",
    "IdempotencyStore",
    "CheckpointStore",
    "DeadLetter",
    "DEAD_LETTER_FIELDS",
    "DeadLetterStore",
    "Check",
    "OK",
    "WARN",
    "FAIL",
]
