"""Every registered checkpoint store against the byte-store contract."""

from __future__ import annotations

from checkpoint_conformance import CheckpointStoreConformance


class TestCheckpointStoreConformance(CheckpointStoreConformance):
    pass
