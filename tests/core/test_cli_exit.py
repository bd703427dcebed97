"""The ``pipekit`` command ends as Python programs end: what a plugin left
buffered in an open file is written (it left with ``os._exit`` before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_a_plugins_buffered_file_is_written_at_exit(tmp_path: Path) -> None:
    out = tmp_path / "tail.txt"
    (tmp_path / "buffered_plugin.py").write_text(
        f"LOG = open({str(out)!r}, 'w')\nLOG.write('the tail\\n')  # never flushed\n"
    )
    path = os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path, "PIPEKIT_PLUGIN_MODULES": "buffered_plugin"}
    env.pop("PIPEKIT_DISABLE_PLUGINS", None)
    proc = subprocess.run(
        [sys.executable, "-m", "pipekit", "plugins"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "buffered_plugin" in proc.stdout
    assert out.read_text() == "the tail\n"
