"""``pipekit init``: a commented starter pipeline in the current folder, and
the state folder in ``.gitignore``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import EXIT_OK, ConfigError
from ._common import add_common

STARTER = """\
# A starter pipeline, written by `pipekit init`: make it yours.
#
#   pipekit run      run every stage that is not up to date (run it twice:
#                    the second run skips both stages, and says why)
#   pipekit status   what would run, and why
#   pipekit plugins  the stage processors installed (`uses = ...`)
#
# Every field: https://github.com/pipekit/pipekit/blob/main/docs/user-guide.md
# The built-in stages: https://github.com/pipekit/pipekit/blob/main/docs/stages.md

# name = "my-pipeline"    # default: this folder's name (part of every stage's key)
# state_dir = "{state_dir}"  # where pipekit keeps its state (in .gitignore)

# A command run by /bin/sh, offline (in a network namespace with nothing but
# its own loopback). {{output}} is its first output; pipekit writes it to a
# temporary file and renames it into place only when the command succeeds.
[[stages]]
name = "hello"
uses = "shell"
outputs = ["work/hello.txt"]
params = {{ cmd = "printf 'hello from pipekit\\\\nedit pipekit.toml to make it yours\\\\n' > {{output}}" }}
retry = {{ attempts = 3, backoff = 0.5 }}   # try up to 3 times, waiting 0.5 s, then 1 s
timeout = 60                             # seconds per attempt
# allow_network = true                   # if the command needs the network

# A record stage: one line at a time, resumed after a crash from its last
# checkpoint. Its input is the stage above's output, so it runs after it,
# and again whenever that output changes.
[[stages]]
name = "shout"
uses = "upper"
inputs = ["work/hello.txt"]
outputs = ["out/hello-upper.txt"]
"""


def add_parser(sub: Any) -> None:
    init = sub.add_parser(
        "init",
        help="write a commented starter pipekit.toml here and ignore the state folder in git",
        description=(
            "Write a commented starter pipeline, pipekit.toml, in the current folder "
            "(it runs as written with pipekit-stages installed), and add the state "
            "folder to .gitignore (made if missing; never listed twice)."
        ),
    )
    add_common(init)
    init.add_argument(
        "--force", action="store_true", help="replace an existing pipekit.toml with the starter"
    )
    init.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import attrs

    from .._atomic import atomic_write_bytes
    from ..plan._config import DEFAULT_FILES, PipelineConfig

    folder = Path.cwd()
    state_dir = attrs.fields(PipelineConfig).state_dir.default
    target = folder / DEFAULT_FILES[0]
    _refuse_existing(folder, DEFAULT_FILES, force=args.force)
    atomic_write_bytes(target, STARTER.format(state_dir=state_dir).encode())
    added = _ignore(folder / ".gitignore", f"{state_dir}/")
    if not args.quiet:
        print(f"wrote {target.name}: run it with `pipekit run`")
        if added:
            print(f"added {state_dir}/ to .gitignore")
    return EXIT_OK


def _refuse_existing(folder: Path, names: tuple[str, ...], *, force: bool) -> None:
    """A ConfigError (exit 2) when a pipeline file is here already; with
    ``force`` a ``pipekit.toml`` may be replaced, never another file (the new
    pipekit.toml would hide it)."""
    for name in names:
        if not (folder / name).exists():
            continue
        if name == names[0] and force:
            continue
        if name == names[0]:
            raise ConfigError(
                f"{folder / name} already exists: not overwritten (--force replaces it)"
            )
        raise ConfigError(
            f"{folder / name} already exists: a new {names[0]} would be used instead of it; "
            f"remove or rename it first"
        )


def _ignore(gitignore: Path, entry: str) -> bool:
    """Add ``entry`` to ``gitignore`` unless a line already ignores that
    folder (with or without its slashes); True when it was added."""
    text = gitignore.read_text(encoding="utf-8") if gitignore.exists() else ""
    bare = entry.strip("/")
    if any(line.strip().strip("/") == bare for line in text.splitlines()):
        return False
    separator = "" if not text or text.endswith("\n") else "\n"
    with gitignore.open("a", encoding="utf-8") as file:  # appended: the rest is never rewritten
        file.write(f"{separator}{entry}\n")
    return True
