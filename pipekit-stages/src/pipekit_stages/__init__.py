"""The built-in stage processors of pipekit, registered through the
``pipekit`` entry-point group like any third party's."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
