"""Every registered checkpoint store against the byte-store contract."""

from __future__ import annotations

from checkpoint_conformance import CheckpointStoreConformance

pytest_plugins = ["checkpoint_conformance"]  # the checkpoint_store fixtures, over every store


class TestCheckpointStoreConformance(CheckpointStoreConformance):
    pass
