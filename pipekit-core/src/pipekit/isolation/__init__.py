"""Offline by default: the network guard of Python processors (``_guard``),
network namespaces for the programs stages start (``_namespaces``), the
static scan of ``pipekit check`` (``_scan``) and the sentinel that kills
stage commands when the runner dies (``_sentinel``)."""

from ._namespaces import trusted

__all__ = ["trusted"]
