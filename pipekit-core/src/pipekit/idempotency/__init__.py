"""Idempotency: make any function or pipeline step safe to retry: the
:func:`idempotent` decorator, :class:`IdempotencyManager` over any
idempotency store, and :func:`make_key` (see docs/idempotency.md).
"""

from __future__ import annotations

from .decorator import DEFAULT_RETRYABLE, idempotent
from .keys import canonical_bytes, digest, make_key
from .manager import IdempotencyManager, default_store_dir, open_store
from .status import IdempotencyStatus

__all__ = [
    "idempotent",
    "IdempotencyManager",
    "IdempotencyStatus",
    "make_key",
    "digest",
    "canonical_bytes",
    "open_store",
    "default_store_dir",
    "DEFAULT_RETRYABLE",
]
