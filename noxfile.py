"""The test matrix. `nox` runs the default sessions; `nox -s NAME` one of them.

`nox` alone (the README's test command, and CI's) runs tests-3.11, lint,
typecheck and wheels: the suite once, on the oldest Python the packages
support. `nox -s tests` runs the suite on every Python of the matrix (3.11,
3.12, 3.13; an interpreter that is missing fails its session, or is skipped
with `--no-error-on-missing-interpreters`); `nox -s tests-3.13` one of them.
The matrix is not the default because it triples the time of the default
run (the suite alone takes about 15 minutes on a busy 2-core machine).
The suite runs serially: with pytest-xdist `-n 2` it took 13.5 minutes on a
2-core machine at a load of 8-10, and one test that needs a rerun within
2 s of writing its inputs (test_plan_binding) failed on that load.

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
- wheels:      builds the sdists and wheels of the three packages (each wheel
               from its sdist), installs the wheels alone in a fresh virtualenv,
               and runs the README's quick start from them: `pipekit run` in a
               copy of examples/quickstart exits 0, a second run skips every
               stage; then `pipekit init` and `pipekit run` in an empty folder.
- tests_redis: only the tests that use a real redis-server, with
               PIPEKIT_REQUIRE_REDIS=1 (not a default session: `tests` runs them).
- lowest:      the suite with every direct dependency at the lowest version the
               packages allow (not a default session: it resolves and installs
               old versions; run it when a minimum changes).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import nox

PYTHON = "3.11"  # the oldest supported: the default sessions run on it
MATRIX = ["3.11", "3.12", "3.13"]  # `nox -s tests`

nox.options.sessions = [f"tests-{PYTHON}", "lint", "typecheck", "wheels"]
nox.options.reuse_existing_virtualenvs = True

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
    "hatchling>=1.27",  # tests/test_packaging.py builds the wheels and sdists
]
PUBLISHED = PACKAGE_DIRS[:3]  # the example plugin is not published
SOURCES = [
    "pipekit-core/src/pipekit",
    "pipekit-stages/src/pipekit_stages",
    "pipekit-backend-redis/src/pipekit_redis",
]


def _pytest(session: nox.Session, *args: str, env: dict[str, str] | None = None) -> None:
    session.run(
        "pytest", "-q", "-ra", "--timeout=300", *args, env={"PYTHONHASHSEED": "0", **(env or {})}
    )


@nox.session(python=MATRIX)
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


@nox.session(python=PYTHON)
def wheels(session: nox.Session) -> None:
    tmp = Path(session.create_tmp()).resolve()
    dist = tmp / "dist"
    shutil.rmtree(dist, ignore_errors=True)
    session.install("build>=1.0", "hatchling>=1.27")
    for folder in PUBLISHED:  # an sdist, then the wheel built from it
        session.run("python", "-m", "build", "--no-isolation", "-q", "-o", str(dist), folder)
    # the README's quick start installs pipekit-core and pipekit-stages: only
    # their wheels (and what they require) go into a fresh virtualenv, made
    # without pip of its own (the session's pip installs into it: 10 s less)
    fresh = tmp / "fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    session.run("python", "-m", "venv", "--without-pip", str(fresh))
    wanted = [str(w) for name in ("core", "stages") for w in dist.glob(f"pipekit_{name}-*.whl")]
    pip = ["python", "-m", "pip", "--python", str(fresh / "bin" / "python")]
    session.run(*pip, "install", "-q", *wanted)
    _quick_start(session, fresh / "bin" / "pipekit", tmp)


def _quick_start(session: nox.Session, pipekit: Path, tmp: Path) -> None:
    """The README's quick start from the installed wheels, then `pipekit init`."""
    quickstart = tmp / "quickstart"
    shutil.rmtree(quickstart, ignore_errors=True)
    skip = shutil.ignore_patterns("work", "output", ".pipekit")
    shutil.copytree("examples/quickstart", quickstart, ignore=skip)
    starter = tmp / "starter"
    shutil.rmtree(starter, ignore_errors=True)
    starter.mkdir()
    for folder, first in ((quickstart, None), (starter, "init")):
        with session.chdir(folder):
            if first:
                session.run(str(pipekit), first, external=True)
            session.run(str(pipekit), "run", external=True)
            rerun = session.run(str(pipekit), "run", "--json", external=True, silent=True)
        statuses = {s["name"]: s["status"] for s in json.loads(str(rerun))["stages"]}
        if set(statuses.values()) != {"skipped"}:
            session.error(f"{folder.name}: the second run did not skip every stage: {statuses}")
        session.log(f"{folder.name}: every stage skipped on the second run ({len(statuses)})")
