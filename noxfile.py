"""The test matrix. `nox` runs tests, lint and typecheck; `nox -s NAME` one of them.

- tests:       the whole suite against the packages installed from this checkout
               (pipekit-core with its crypto extra, so the encryption tests run;
               plus the example third-party plugin, installed as its own
               distribution so the entry-point path is exercised for real): the
               file backend, fakeredis, and real `redis-server` processes the
               tests start on free ports (skipped with a reason where
               redis-server is missing, failed instead under
               PIPEKIT_REQUIRE_REDIS=1, which CI sets).
- lint:        ruff.
- typecheck:   mypy over the packages' sources.
- tests_redis: only the tests that use a real redis-server, with
               PIPEKIT_REQUIRE_REDIS=1 (not a default session: `tests` runs them).
- lowest:      the suite with every direct dependency at the lowest version the
               packages allow (not a default session: it resolves and installs
               old versions; run it when a minimum changes).
"""

from __future__ import annotations

import re
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
# pipekit-core with its crypto extra, so the encryption tests run (the tests of
# the extra missing block the import themselves)
PACKAGE_DIRS = ["pipekit-core", "pipekit-stages", "pipekit-backend-redis", "examples/plugin-reverse"]
PACKAGES = [arg for d in PACKAGE_DIRS for arg in ("-e", d + ("[crypto]" if d == "pipekit-core" else ""))]
TEST_DEPS = [
    "pytest>=8",
    "hypothesis>=6",
    "pytest-timeout>=2.2",
    "fakeredis[lua]>=2.20",
    "import-linter>=2.1",  # the layering contract (tests/test_layers.py)
]
SOURCES = [
    "pipekit-core/src/pipekit",
    "pipekit-stages/src/pipekit_stages",
    "pipekit-backend-redis/src/pipekit_redis",
]


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run(
        "pytest", "-q", "-ra", "--timeout=300", *args, env={"PYTHONHASHSEED": "0", **(env or {})}
    )


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install(*PACKAGES, *TEST_DEPS)
    _pytest(session, *(session.posargs or ["tests"]))


@nox.session(python=PYTHON)
def tests_redis(session: nox.Session) -> None:
    session.install(*PACKAGES, *TEST_DEPS)
    _pytest(
        session, "-m", "redis_server", *(session.posargs or ["tests"]),
        env={"PIPEKIT_REQUIRE_REDIS": "1"},
    )


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "pipekit-core", "pipekit-stages", "pipekit-backend-redis")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install(*PACKAGES, "mypy>=1.10")
    session.run("mypy", *SOURCES)


def _lowest_constraints() -> list[str]:
    """``name==minimum`` for every ``name>=minimum`` runtime dependency of the
    packages (their own cross-dependencies excluded: they come from here)."""
    import tomllib

    own = set()
    pins: dict[str, str] = {}
    for folder in PACKAGE_DIRS:
        project = tomllib.loads(Path(folder, "pyproject.toml").read_text())["project"]
        own.add(project["name"])
        for dep in project.get("dependencies", []):
            m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*>=\s*([^,;\s]+)\s*", dep)
            if m:
                pins[m.group(1).lower()] = m.group(3)
    return [f"{name}=={version}" for name, version in sorted(pins.items()) if name not in own]


@nox.session(python=PYTHON)
def lowest(session: nox.Session) -> None:
    constraints = Path(session.create_tmp()) / "lowest.txt"
    constraints.write_text("\n".join(_lowest_constraints()) + "\n")
    session.log("lowest direct dependencies: " + ", ".join(_lowest_constraints()))
    session.install("-c", str(constraints), *PACKAGES, *TEST_DEPS)
    _pytest(session, *(session.posargs or ["tests"]))
