"""A folder's content hash (issue 22): its sorted entries, each file through
the stat-keyed hash cache."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from pipekit.state._folders import FolderProblem, describe_changes, entries_digest, folder_entries
from pipekit.state._hash_cache import HashCache


def make_tree(root: Path, files: dict[str, str]) -> None:
    old = time.time() - 10  # outside the racy window: cacheable
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.utime(path, (old, old))


def digest_of(cache: HashCache, root: Path) -> str:
    entries = folder_entries(cache, str(root), "data/")
    assert not isinstance(entries, str)
    return entries_digest(entries)


def test_an_unchanged_folder_is_hashed_from_stats_alone(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, {f"d{i}/f{j}.txt": f"{i} {j}\n" for i in range(5) for j in range(20)})
    cache = HashCache(tmp_path / "cache.json")
    first = digest_of(cache, root)
    assert cache.reads == 100
    cache.save()
    again = HashCache(tmp_path / "cache.json")
    assert digest_of(again, root) == first
    assert again.reads == 0


def test_content_names_executable_bits_and_empty_folders_count(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, {"a.txt": "a\n", "sub/b.txt": "b\n"})
    cache = HashCache(tmp_path / "cache.json")
    seen = {digest_of(cache, root)}
    (root / "empty").mkdir()
    seen.add(digest_of(cache, root))
    os.chmod(root / "a.txt", 0o755)
    seen.add(digest_of(cache, root))
    os.rename(root / "sub/b.txt", root / "sub/c.txt")
    seen.add(digest_of(cache, root))
    assert len(seen) == 4


def test_an_unreadable_file_is_a_clear_problem(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_tree(root, {"a.txt": "a\n"})

    class Unreadable(HashCache):
        def read(self, key: str, path: object, st: os.stat_result) -> str:
            raise PermissionError(13, "Permission denied", str(path))

    with pytest.raises(FolderProblem, match=r"cannot read 'data/a.txt': Permission denied"):
        folder_entries(Unreadable(tmp_path / "cache.json"), str(root), "data/")


def test_changes_are_counted_and_the_first_named() -> None:
    old = [("d/a", "1", False), ("d/b", "2", False), ("d/c", "3", False)]
    new = [("d/a", "1", True), ("d/b", "9", False), ("d/z", "4", False)]
    assert describe_changes(old, new) == "2 files changed, 1 added, 1 removed (d/a, d/b, ...)"
    assert describe_changes(old, old[:2]) == "1 removed (d/c)"
