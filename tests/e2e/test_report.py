"""``pipekit report``: one run as one self-contained HTML page, looked at
in a real browser (headless Chromium) where one is installed.

Without Chromium the browser tests are skipped, with the reason; with
``PIPEKIT_REQUIRE_CHROMIUM=1`` (CI) they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Project
from pipekit.state._run_records import iso_utc, write_run_record

XSS_NAME = '<img src=x onerror="document.title=1">"</script><script>alert(1)</script>'


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("PIPEKIT_REQUIRE_CHROMIUM") == "1":
        pytest.fail(
            "PIPEKIT_REQUIRE_CHROMIUM=1 but no chromium is installed (apt-get install chromium)"
        )
    pytest.skip(
        "no chromium installed (Debian: apt-get install chromium); PIPEKIT_REQUIRE_CHROMIUM=1 fails instead"
    )


def browse(page: Path, tmp_path: Path, *, screenshot: Path, height: int) -> str:
    """The page's DOM once its script ran, and its screenshot."""
    browser = chromium()
    flags = [
        browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
        "--no-first-run", "--disable-extensions", f"--user-data-dir={tmp_path / 'chromium'}",
    ]  # fmt: skip
    shot = subprocess.run(
        [*flags, f"--screenshot={screenshot}", f"--window-size=1400,{height}", page.as_uri()],
        capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert screenshot.exists() and screenshot.stat().st_size > 10_000, shot.stderr
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dom = subprocess.run(
        [*flags, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=180
    )
    assert dom.returncode == 0, dom.stderr
    return dom.stdout


def ten_stages(project: Project) -> None:
    project.write("in.txt", "x\n")
    cp = "cp {input} {output}"
    project.pipeline([
        {"name": "fetch", "uses": "shell", "inputs": ["in.txt"], "outputs": ["raw.txt"], "params": {"cmd": cp}},
        *({"name": f"clean_{lang}", "uses": "shell", "inputs": ["raw.txt"], "outputs": [f"{lang}.txt"],
           "params": {"cmd": cp}} for lang in ("en", "fr", "de")),
        {"name": "merge", "uses": "shell", "inputs": ["en.txt", "fr.txt", "de.txt"], "outputs": ["all.txt"],
         "params": {"cmd": "cat {inputs} > {output}"}},
        {"name": "stats", "uses": "shell", "inputs": ["all.txt"], "outputs": ["stats.txt"], "params": {"cmd": cp}},
        {"name": "validate", "uses": "shell", "inputs": ["all.txt"], "outputs": ["v.txt"],
         "params": {"cmd": "echo '</pre><script>alert(2)</script>' >&2; exit 4"}},
        {"name": "publish", "uses": "shell", "inputs": ["stats.txt", "v.txt"], "outputs": ["pub.txt"],
         "params": {"cmd": "cat {inputs} > {output}"}},
        {"name": "index", "uses": "shell", "inputs": ["in.txt"], "outputs": ["index.txt"], "params": {"cmd": cp}},
        {"name": "archive", "uses": "shell", "inputs": ["index.txt"], "outputs": ["arch.txt"], "params": {"cmd": cp}},
    ])  # fmt: skip


def test_report_is_one_page_that_fetches_nothing(project: Project) -> None:
    ten_stages(project)
    summary = project.run_json("-j", "3", "-k", expect=1)
    made = project.cli("report")
    assert made.returncode == 0, made.stderr
    page = project.root / f"pipekit-report-{summary['run_id']}.html"
    assert f"wrote pipekit-report-{summary['run_id']}.html" in made.stdout
    html = page.read_text()
    assert "Content-Security-Policy" in html and "default-src 'none'" in html
    assert not re.search(r"https?://|<link|\ssrc=|@import|url\((?!#)", html), "fetches something"
    assert html.count('class="node ') == 10
    assert "<script>alert(2)" not in html and "&lt;script&gt;alert(2)" in html
    assert project.cli("report", "-q", "-o", "quiet.html").stdout == ""
    unknown = project.cli("report", "nope")
    assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr


def test_report_in_a_browser_at_ten_stages(project: Project, tmp_path: Path) -> None:
    ten_stages(project)
    project.run_json("-j", "3", "-k", expect=1)
    page = tmp_path / "report.html"
    assert project.cli("report", "latest", "-o", str(page)).returncode == 0
    dom = browse(page, tmp_path, screenshot=tmp_path / "report-10.png", height=1300)
    assert 'data-ready="yes"' in dom  # the page's script ran (its CSP let it)
    assert len(re.findall(r'<g class="node st-', dom)) == 10
    assert 'class="node st-failed"' in dom and 'class="node st-not-run"' in dom
    assert len(re.findall(r'<rect class="bar st-', dom)) == 9  # every stage that ran
    assert "<script>alert(2)" not in dom


def record_of(names: list[str], deps: dict[str, list[str]], failed: set[str]) -> dict[str, Any]:
    start = time.time() - 100
    stages = []
    for i, name in enumerate(names):
        began = start + 0.01 * i
        stages.append({
            "name": name, "status": "failed" if name in failed else "ok", "reason": "never run",
            "duration_s": 0.008, "attempts": 1, "error": "boom <b>" if name in failed else None,
            "info": {"traceback": f"Traceback ...\nRuntimeError: {name}"} if name in failed else {},
            "started_at": iso_utc(began), "ended_at": iso_utc(began + 0.008),
            "slot": i % 2, "host": "here",
        })  # fmt: skip
    return {
        "run_id": "crafted", "pipeline": "big", "host": "here", "pid": 1, "jobs": 2,
        "backend": "file", "started_at": iso_utc(start), "ended_at": iso_utc(start + 0.01 * len(names)),
        "duration_s": 0.01 * len(names), "status": "failed" if failed else "ok", "exit_code": 1,
        "metrics": {"stages_ok": len(names) - len(failed), "stages_failed": len(failed)},
        "graph": [{"name": n, "deps": deps.get(n, [])} for n in names], "stages": stages,
    }  # fmt: skip


def test_report_in_a_browser_at_a_thousand_stages(project: Project, tmp_path: Path) -> None:
    project.pipeline(
        [{"name": "s", "uses": "shell", "outputs": ["o.txt"], "params": {"cmd": "echo > {output}"}}]
    )
    parts = [f"part@{i:04d}" for i in range(997)]
    names = ["prepare", *parts, "combine", XSS_NAME]
    deps = {**{p: ["prepare"] for p in parts}, "combine": parts, XSS_NAME: ["prepare"]}
    record = record_of(names, deps, failed={"part@0123", XSS_NAME})
    write_run_record(project.root / ".pipekit", record, time.time() - 100)
    page = tmp_path / "report.html"
    made = project.cli("report", "crafted", "-o", str(page))
    assert made.returncode == 0, made.stderr
    html = page.read_text()
    assert "<img src=x" not in html and "<script>alert(1)" not in html
    assert "boom <b>" not in html and "boom &lt;b&gt;" in html
    dom = browse(page, tmp_path, screenshot=tmp_path / "report-1000.png", height=1300)
    assert 'data-ready="yes"' in dom
    assert (
        len(re.findall(r'<g class="node st-', dom)) == 4
    )  # prepare, part@* (folded), combine, the XSS one
    assert "part@* (997)" in dom and "1 failed" in dom
    assert len(re.findall(r'<rect class="bar st-', dom)) == 1000
    assert "<img" not in dom and "alert(1)</script>" not in dom.split("<script>")[0]
    assert "&lt;img src=x" in dom  # shown as text
