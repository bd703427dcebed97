"""Which stage makes an input, for folders and globs (issue 22)."""

from __future__ import annotations

from pipekit.plan._paths import producers_of

PRODUCERS = {"work/split/": (0, "make"), "out/a.txt": (1, "a"), "/abs/dir/": (2, "abs")}


def test_a_folder_output_makes_the_paths_inside_it() -> None:
    assert producers_of("work/split/", PRODUCERS) == [(0, "make")]
    assert producers_of("work/split/x/y.csv", PRODUCERS) == [(0, "make")]
    assert producers_of("work/other.csv", PRODUCERS) == []
    assert producers_of("/abs/dir/f", PRODUCERS) == [(2, "abs")]
    assert producers_of("/elsewhere/f", PRODUCERS) == []  # ends at "/"


def test_a_glob_depends_on_what_it_can_match_or_reach_into() -> None:
    assert producers_of("out/*.txt", PRODUCERS) == [(1, "a")]
    assert producers_of("work/*/*.csv", PRODUCERS) == [(0, "make")]
    assert producers_of("**/*.csv", PRODUCERS) == [(0, "make")]
    assert producers_of("work/*.csv", PRODUCERS) == []
