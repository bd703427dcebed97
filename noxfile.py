"""The test matrix. `nox` runs tests, lint and typecheck; `nox -s NAME` one of them.

- tests:     the whole suite against the packages installed from this checkout
             (pipekit-core with its crypto extra, plus the example third-party
             plugin, installed as its own distribution so the entry-point path
             is exercised for real).
- lint:      ruff.
- typecheck: mypy over the packages' sources.
"""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint", "typecheck"]
nox.options.reuse_existing_virtualenvs = True

PYTHON = ["3.11"]
# pipekit-core with its crypto extra, so the encryption tests run (the tests of
# the extra missing block the import themselves)
PACKAGES = ["-e", "pipekit-core[crypto]", "-e", "pipekit-stages", "-e", "examples/plugin-reverse"]
TEST_DEPS = ["pytest>=8", "hypothesis>=6", "pytest-timeout>=2.2"]


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install(*PACKAGES, *TEST_DEPS)
    args = session.posargs or ["tests"]
    session.run("pytest", "-q", "-ra", "--timeout=300", *args, env={"PYTHONHASHSEED": "0"})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", "pipekit-core", "pipekit-stages")


@nox.session(python=PYTHON)
def typecheck(session: nox.Session) -> None:
    session.install(*PACKAGES, "mypy>=1.10")
    session.run(
        "mypy",
        "pipekit-core/src/pipekit",
        "pipekit-stages/src/pipekit_stages",
    )
