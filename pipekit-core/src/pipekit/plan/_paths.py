"""The paths of a pipeline: their keys and kinds (a file, a folder ending
with ``/``, a glob), the stage that makes each input, and where outputs
and the state folder may go."""

from __future__ import annotations

import os
import posixpath
import stat
from pathlib import Path

from . import _config

__all__ = [
    "PathRules",
    "inside_another_output",
    "is_folder",
    "is_glob",
    "path_key",
    "producers_of",
]

_MAGIC = frozenset("*?[")


def is_folder(key: str) -> bool:
    """A key of a folder ends with ``/``."""
    return key.endswith("/")


def is_glob(key: str) -> bool:
    """A glob holds ``*``, ``?`` or ``[``."""
    return not _MAGIC.isdisjoint(key)


def path_key(root: Path, given: str) -> tuple[str, Path]:
    """(key, absolute path) of a path of the pipeline file: a folder's key
    keeps its trailing ``/`` (its path does not)."""
    key, path = _config.relpath_key(root, given)
    if given.endswith("/") and key not in (".", "/") and not is_glob(key):
        key += "/"
    return key, path


def producers_of(key: str, producers: dict[str, tuple[int, str]]) -> list[tuple[int, str]]:
    """The stages whose outputs an input ``key`` reads: the one writing it,
    or the folder it is inside; for a glob, every output it can match or
    whose folder it can reach into."""
    if not is_glob(key):
        found = producers.get(key)
        if found is not None:
            return [found]
        inner, folder = key.rstrip("/"), posixpath.dirname(key.rstrip("/"))
        while folder and folder != inner:  # (an absolute path ends at "/")
            found = producers.get(folder.rstrip("/") + "/")
            if found is not None:
                return [found]
            inner, folder = folder, posixpath.dirname(folder)
        return []
    pattern = key.split("/")
    return [
        producer
        for output, producer in producers.items()
        if output.startswith("/") == key.startswith("/")
        and (
            _reaches(pattern, output.rstrip("/").split("/"))
            if is_folder(output)
            else _matches(pattern, output.split("/"))
        )
    ]


def _matches(pattern: list[str], parts: list[str]) -> bool:
    """Whether path ``parts`` match glob ``pattern`` (``**``: any folders)."""
    from fnmatch import fnmatchcase

    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_matches(pattern[1:], parts[i:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _matches(pattern[1:], parts[1:])


def _reaches(pattern: list[str], folder: list[str]) -> bool:
    """Whether glob ``pattern`` can match a file inside folder ``folder``."""
    from fnmatch import fnmatchcase

    if not folder:
        return bool(pattern)
    if not pattern:
        return False
    if pattern[0] == "**":
        return True
    return fnmatchcase(folder[0], pattern[0]) and _reaches(pattern[1:], folder[1:])


def inside_another_output(key: str, producers: dict[str, tuple[int, str]]) -> str | None:
    """``o/x`` when another stage (or this one) writes ``o`` or ``o/``:
    neither can be made."""
    key = key.rstrip("/")
    folder = posixpath.dirname(key)
    while folder and folder != key:
        for name in (folder, folder + "/"):
            producer = producers.get(name)
            if producer is not None:
                return (
                    f"{key!r} is inside {name!r}, an output of stage "
                    f"{producer[1]!r} (stages[{producer[0]}])"
                )
        key, folder = folder, posixpath.dirname(folder)
    return None


def _is_within(path: str, folder: str) -> bool:
    """``path`` is ``folder`` or somewhere below it (both normalized)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def _slash_advice(key: str, mode: int | None) -> str | None:
    """What is wrong when what is at a path is not the kind its key names."""
    if mode is None:
        return None
    if stat.S_ISDIR(mode) and not is_folder(key):
        return f"{key!r} is a folder: write it as {key + '/'!r} (a folder's path ends with '/')"
    if is_folder(key) and not stat.S_ISDIR(mode):
        return f"{key!r} is a file, not a folder: write it as {key.rstrip('/')!r}"
    return None


class PathRules:
    """Where outputs and the state folder may go: never onto the pipeline
    file or into the state folder, never under a file; and what each path
    is (a folder named without its ``/`` is an error)."""

    def __init__(self, file: Path, root: Path, state_dir: Path) -> None:
        self.file_path, self.root_path = file, root
        self.file = os.fspath(file)
        self.root = os.fspath(root)
        self.state_dir = os.fspath(state_dir)
        self.state_key = self.key(self.state_dir)

    def key(self, path: str) -> str:
        return _config.relpath_key(Path(self.root), path)[0]

    def state_dir_problem(self) -> str | None:
        key = self.state_key
        if _is_within(self.root, self.state_dir):
            what = "is" if self.state_dir == self.root else "holds"
            return f"{key!r} {what} the pipeline's folder; the state needs a folder of its own"
        mode = self.kind(self.state_dir)
        if mode is not None and not stat.S_ISDIR(mode):
            return f"{key!r} is a file, not a folder"
        return self.under_a_file(key, self.state_dir)

    def output_problem(self, key: str, path: Path) -> str | None:
        where = os.fspath(path)
        if is_glob(key):
            return f"{key!r} is a glob; an output names one file or folder"
        if where == self.root:
            return f"{key!r} is the pipeline's folder; an output is a file"
        if where == self.file:
            return f"{key!r} would overwrite the pipeline file"
        if not _is_within(self.root, self.state_dir):  # else the state folder's own error
            if _is_within(where, self.state_dir):
                return f"{key!r} is inside the state folder {self.state_key!r}"
            if _is_within(self.state_dir, where):
                return f"{key!r} holds the state folder {self.state_key!r}"
        return _slash_advice(key, self.kind(where)) or self.under_a_file(key, where)

    def input_problem(self, key: str, path: Path) -> str | None:
        """What is wrong with an input no stage makes (a glob is looked at
        when its stage runs)."""
        if is_glob(key):
            return None
        mode = self.kind(os.fspath(path))
        if mode is None:
            return f"{key!r} does not exist and no stage produces it"
        return _slash_advice(key, mode)

    def under_a_file(self, key: str, path: str) -> str | None:
        """``path`` cannot be made because a folder above it is a file."""
        folder = os.path.dirname(path)
        while folder != path:
            mode = self.kind(folder)
            if mode is not None:
                if stat.S_ISDIR(mode):
                    return None
                return f"{key!r} is under {self.key(folder)!r}, which is a file"
            path, folder = folder, os.path.dirname(folder)
        return None

    def kind(self, path: str) -> int | None:
        """``path``'s st_mode, or None when there is nothing there."""
        try:
            return os.stat(path).st_mode
        except OSError:
            return None
