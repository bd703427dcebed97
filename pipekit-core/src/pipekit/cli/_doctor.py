"""``pipekit doctor``: can the pipeline's backend work, and what would it lose?"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import EXIT_FAILED, EXIT_OK, ConfigError
from ..plan._config import DEFAULT_FILES
from ..plan._pipeline import load_pipeline
from ..plugins._manager import load_registry
from ..stores._assemble import build_backends
from ..stores._doctor import FAIL, WARN, gather
from ._common import add_common, add_file, print_json


def add_parser(sub: Any) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check the backend: connectivity, server version, persistence",
        description=(
            "Check that the backend can be used: the checks come from the backend "
            "(for redis: connection, server version, persistence and eviction settings, "
            "scripts, and a round trip of each kind). Uses the pipeline file's [backend] "
            "when there is one, else --backend with no options."
        ),
    )
    add_file(doctor)
    add_common(doctor)
    doctor.add_argument("--json", action="store_true", help="print the checks as JSON on stdout")
    doctor.set_defaults(handler=main)


def _backend(args: argparse.Namespace) -> tuple[str, dict[str, Any], Path, Any]:
    """(name, options, state dir, registry): from the pipeline file when one
    is named or found here, else from ``--backend`` alone."""
    file = args.file or next((Path(n) for n in DEFAULT_FILES if Path(n).is_file()), None)
    registry = load_registry()
    if file is not None:
        pipeline = load_pipeline(file, registry, backend_override=args.backend, check_inputs=False)
        backend = pipeline.backend
        return backend.name, dict(backend.options), pipeline.state_dir, registry
    name = args.backend or "file"
    if name not in registry.backend_names():
        raise ConfigError(f"--backend: {registry.unknown_backend_message(name)}")
    return name, {}, Path(".pipekit").resolve(), registry


def main(args: argparse.Namespace) -> int:
    name, options, state_dir, registry = _backend(args)
    backends = build_backends(registry, name, options, state_dir, connect=False)
    checks = gather(backends)
    failed = sum(1 for c in checks if c.status == FAIL)
    warned = sum(1 for c in checks if c.status == WARN)
    status = "fail" if failed else "warn" if warned else "ok"
    if args.json:
        print_json({"backend": name, "status": status, "checks": [c.to_json() for c in checks]})
    else:
        print(f"backend {name}:")
        if not checks:
            print("  (this backend reports no checks)")
        width = max((len(c.name) for c in checks), default=0)
        for c in checks:
            print(f"  {c.status:<5} {c.name:<{width}}  {c.message}")
        print(f"{failed} failure(s), {warned} warning(s)")
    return EXIT_FAILED if failed else EXIT_OK
