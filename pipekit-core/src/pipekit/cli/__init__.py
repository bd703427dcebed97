"""The ``pipekit`` command: one module per subcommand (``_run``,
``_status``, ...), the progress bars, the human report and the ``status``
view. The top layer: it imports the engine and everything below."""

from ._main import build_parser, entry, main

__all__ = ["entry", "main", "build_parser"]
