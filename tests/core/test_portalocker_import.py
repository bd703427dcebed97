"""portalocker is imported without dragging in redis (its unused RedisLock),
and redis stays importable afterwards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_portalocker_import_skips_redis_and_leaves_it_importable(tmp_path: Path) -> None:
    fake = tmp_path / "redis"
    fake.mkdir()
    marker = tmp_path / "redis-imported"
    (fake / "__init__.py").write_text(f"open({str(marker)!r}, 'a').write('x')\n")
    code = (
        "import sys\n"
        "from pipekit._portalocker import portalocker\n"
        "p = portalocker()\n"
        "assert hasattr(p, 'lock'), 'portalocker is usable'\n"
        f"assert not __import__('os').path.exists({str(marker)!r}), 'redis was imported'\n"
        "assert 'redis' not in sys.modules\n"
        "import redis\n"
        f"assert __import__('os').path.exists({str(marker)!r})\n"
        "print('ok')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
