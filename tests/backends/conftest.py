"""The checkpoint store fixtures, parametrized over every store factory of
``checkpoint_conformance.STORE_FACTORIES``."""

from __future__ import annotations

from checkpoint_conformance import checkpoint_store, checkpoint_store_factory

__all__ = ["checkpoint_store", "checkpoint_store_factory"]
