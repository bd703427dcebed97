"""portalocker is imported as it is, not patched: no ``sys.modules["redis"]``
set to None while it imports, no fake ``portalocker.__about__``."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version


def test_portalocker_is_imported_unpatched() -> None:
    code = (
        "import sys\n"
        "from pipekit._portalocker import portalocker\n"
        "p = portalocker()\n"
        "print(p.__version__, p.RedisLock.__module__, sys.modules['redis'] is not None)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [version("portalocker"), "portalocker.redis", "True"]
