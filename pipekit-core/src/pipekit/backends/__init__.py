"""Backends: locks, idempotency stores and checkpoint stores.

``protocols`` holds the small protocols every backend implements; ``file``
is core's own backend, registered under the name ``file`` for all three kinds.
"""
