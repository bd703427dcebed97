"""A network refusal is never retried, however it is wrapped (issue 20,
"Smaller"): urllib turns the guard's refusal into ``URLError`` whose
``reason`` is the refusal; the stage must fail after one attempt."""

from __future__ import annotations

import json

import pytest
from conftest import Project


@pytest.mark.parametrize("timeout", [None, 60], ids=["in the runner", "in a worker process"])
def test_a_refusal_wrapped_by_urllib_is_not_retried(project: Project, timeout: int | None) -> None:
    project.write("in.txt", "x\n")
    calls = project.root / "calls.txt"
    stage = {
        "name": "fetch",
        "uses": "net-fetch",
        "inputs": ["in.txt"],
        "outputs": ["out.txt"],
        "params": {"url": "http://192.0.2.1:9/", "calls": str(calls)},
        "retry": {"attempts": 3, "backoff": 0.0, "jitter": 0.0},
    }
    if timeout is not None:
        stage["timeout"] = timeout
    project.pipeline([stage])
    env = project.env(PIPEKIT_PLUGIN_MODULES="pipekit_testplugin,pipekit_urltest")
    proc = project.cli("run", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    assert calls.read_text() == "call\n"  # one attempt only
    [result] = json.loads(proc.stdout)["stages"]
    assert "failed after 1 attempt" in result["reason"], result["reason"]


def test_a_refusal_wrapped_by_urllib_fails_a_record_without_retries(project: Project) -> None:
    project.write("in.txt", "http://192.0.2.1:9/a\nhttp://192.0.2.1:9/b\n")
    calls = project.root / "calls.txt"
    project.pipeline(
        [
            {
                "name": "fetch",
                "uses": "net-fetch-records",
                "inputs": ["in.txt"],
                "outputs": ["out.txt"],
                "params": {"calls": str(calls)},
                "retry": {"attempts": 3, "backoff": 0.0, "jitter": 0.0},
            }
        ]
    )
    env = project.env(PIPEKIT_PLUGIN_MODULES="pipekit_testplugin,pipekit_urltest")
    proc = project.cli("run", "--json", env=env)
    assert proc.returncode == 1, proc.stderr
    assert calls.read_text().splitlines() == ["http://192.0.2.1:9/a"]  # one try, then it stops


def test_is_network_refusal_walks_causes_contexts_and_reasons() -> None:
    import urllib.error

    from pipekit.errors import NetworkRefused, is_network_refusal

    refused = NetworkRefused("no network here")
    assert is_network_refusal(refused)
    assert is_network_refusal(urllib.error.URLError(refused))
    try:
        try:
            raise refused
        except NetworkRefused:
            raise RuntimeError("wrapped") from None  # context kept, cause suppressed
    except RuntimeError as wrapped:
        assert is_network_refusal(wrapped)
    looped = ValueError("a")
    looped.__context__ = ValueError("b")
    looped.__context__.__context__ = looped
    assert not is_network_refusal(looped)
    assert not is_network_refusal(ConnectionRefusedError("a server said no"))
