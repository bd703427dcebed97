"""portalocker is imported as it is, not patched: no ``sys.modules["redis"]``
set to None while it imports, no fake ``portalocker.__about__``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version


def test_portalocker_is_imported_unpatched() -> None:
    code = (
        "import sys\n"
        "import pathlib, tempfile\n"
        "from pipekit.stores._file_lock import FileLockBackend\n"
        "FileLockBackend(pathlib.Path(tempfile.mkdtemp())).lock('k').acquire(timeout=5)\n"
        "p = sys.modules['portalocker']\n"
        "print(p.__version__, p.RedisLock.__module__, sys.modules['redis'] is not None)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [version("portalocker"), "portalocker.redis", "True"]
