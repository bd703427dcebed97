"""The packages are ready to publish: a LICENSE in the repository and in
every wheel and sdist, project URLs, classifiers, READMEs that work on PyPI
(absolute links), and each version written once.

The metadata checks read the ``pyproject.toml`` files; the archive checks
build each package's wheel and sdist with hatchling (about a second each;
skipped with a reason where hatchling is not installed: the nox sessions
install it, and the ``wheels`` session also installs the wheels and runs the
quick start from them).
"""

from __future__ import annotations

import email.parser
import importlib.util
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
REPOSITORY = "https://github.com/pipekit/pipekit"
PACKAGES = ("pipekit-core", "pipekit-stages", "pipekit-backend-redis", "examples/plugin-reverse")
PUBLISHED = PACKAGES[:3]  # the example plugin is not published: it has no URLs nor classifiers
REQUIRED_CLASSIFIERS = {
    "Development Status :: 3 - Alpha",
    "License :: OSI Approved :: MIT License",
    "Operating System :: POSIX :: Linux",
    "Programming Language :: Python :: 3.11",
    "Programming Language :: Python :: 3.12",
    "Programming Language :: Python :: 3.13",
}
URL_NAMES = {"Homepage", "Source", "Issues", "Documentation"}
LINK_RE = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def project(folder: str) -> dict[str, Any]:
    return tomllib.loads((ROOT / folder / "pyproject.toml").read_text(encoding="utf-8"))


def written_version(folder: str) -> str:
    """The version in the one file the pyproject names."""
    path = ROOT / folder / project(folder)["tool"]["hatch"]["version"]["path"]
    found = re.findall(r'^__version__ = "([^"]+)"$', path.read_text(encoding="utf-8"), re.M)
    assert len(found) == 1, f"{path}: one __version__ line expected"
    return found[0]


def test_license_is_mit_for_the_pipekit_developers() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n")
    assert "Copyright (c) 2026 The pipekit developers" in text


@pytest.mark.parametrize("folder", PACKAGES)
def test_package_ships_the_license(folder: str) -> None:
    meta = project(folder)["project"]
    assert meta["license"] == "MIT"
    assert meta["license-files"] == ["LICENSE"]
    assert (ROOT / folder / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes(), (
        f"{folder}/LICENSE must be a copy of the repository's LICENSE"
    )
    requires = project(folder)["build-system"]["requires"]
    assert requires == ["hatchling>=1.27"], "license-files needs hatchling 1.27"


@pytest.mark.parametrize("folder", PUBLISHED)
def test_package_metadata_for_pypi(folder: str) -> None:
    meta = project(folder)["project"]
    assert REQUIRED_CLASSIFIERS <= set(meta["classifiers"])
    assert URL_NAMES <= set(meta["urls"])
    assert all(url.startswith(REPOSITORY) for url in meta["urls"].values())
    assert meta["readme"] == "README.md"
    assert meta["requires-python"] == ">=3.11"


@pytest.mark.parametrize("folder", PUBLISHED)
def test_version_is_written_once(folder: str) -> None:
    data = project(folder)
    assert "version" not in data["project"] and data["project"]["dynamic"] == ["version"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", written_version(folder))


@pytest.mark.parametrize("folder", PACKAGES[1:])
def test_sibling_pins_compatible_core(folder: str) -> None:
    major, minor, _ = written_version("pipekit-core").split(".")
    core = [d for d in project(folder)["project"]["dependencies"] if d.startswith("pipekit-core")]
    assert core == [f"pipekit-core~={major}.{minor}"]


@pytest.mark.parametrize("folder", PACKAGES)
def test_readme_links_work_on_pypi(folder: str) -> None:
    """PyPI shows the README without the repository: every link is absolute,
    and a link into the repository names a file that exists."""
    text = (ROOT / folder / "README.md").read_text(encoding="utf-8")
    links = LINK_RE.findall(text)
    assert links, f"{folder}/README.md links nowhere"
    for link in links:
        assert link.startswith("https://"), f"{folder}/README.md: relative link {link}"
        if link.startswith(f"{REPOSITORY}/blob/main/"):
            path = link.removeprefix(f"{REPOSITORY}/blob/main/").split("#")[0]
            assert (ROOT / path).is_file(), f"{folder}/README.md: {link} names no file"


# -- the archives ---------------------------------------------------------------


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """Each package's wheel and sdist, built by hatchling."""
    if importlib.util.find_spec("hatchling") is None:
        pytest.skip("hatchling is not installed (the nox sessions install it)")
    out: dict[str, list[Path]] = {}
    for folder in PACKAGES:
        dist = tmp_path_factory.mktemp("dist")
        subprocess.run(
            [sys.executable, "-m", "hatchling", "build", "-d", str(dist)],
            cwd=ROOT / folder,
            check=True,
            capture_output=True,
        )
        out[folder] = sorted(dist.iterdir())
    return out


def wheel_metadata(wheel: Path) -> Any:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


@pytest.mark.parametrize("folder", PACKAGES)
def test_wheel_and_sdist_hold_the_license(folder: str, built: dict[str, list[Path]]) -> None:
    license_text = (ROOT / "LICENSE").read_bytes()
    (sdist,) = [p for p in built[folder] if p.name.endswith(".tar.gz")]
    (wheel,) = [p for p in built[folder] if p.name.endswith(".whl")]
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/licenses/LICENSE")]
        assert archive.read(name) == license_text
    with tarfile.open(sdist) as archive:
        (member,) = [
            m
            for m in archive.getmembers()
            if m.name.count("/") == 1 and m.name.endswith("/LICENSE")
        ]
        handle = archive.extractfile(member)
        assert handle is not None and handle.read() == license_text
    metadata = wheel_metadata(wheel)
    assert metadata["License-Expression"] == "MIT"
    assert metadata["License-File"] == "LICENSE"


@pytest.mark.parametrize("folder", PUBLISHED)
def test_wheel_metadata(folder: str, built: dict[str, list[Path]]) -> None:
    (wheel,) = [p for p in built[folder] if p.name.endswith(".whl")]
    metadata = wheel_metadata(wheel)
    assert metadata["Version"] == written_version(folder)
    assert REQUIRED_CLASSIFIERS <= set(metadata.get_all("Classifier"))
    assert {url.split(",")[0] for url in metadata.get_all("Project-URL")} >= URL_NAMES
    assert metadata["Description-Content-Type"] == "text/markdown"
