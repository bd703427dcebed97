"""Measure one command: wall time, CPU time and peak RSS of its process tree.

Run as ``python _measure.py SPEC_JSON``; prints one JSON object on stdout.
SPEC: ``{"cmd": [...], "cwd": str, "stdout": path, "stderr": path,
"timeout": seconds or null, "time_bin": path or null, "rss_file": path}``.

Why a process of its own per measurement: ``getrusage(RUSAGE_CHILDREN)`` is
cumulative for a process's whole life (and ``ru_maxrss`` is a maximum, which
cannot be "subtracted"), so a fresh wrapper gives a clean slate every time.

Peak RSS is the largest resident set of any single process in the tree
(``ru_maxrss`` is a max over waited-for descendants, not a sum). Linux carries
a parent's high-water RSS over ``fork``+``exec`` into the child, so a command
spawned straight from this Python wrapper could never report less than the
wrapper's own ~10 MB. When GNU ``time`` is available the command is started
through it (a ~1 MB C program) and its ``%M`` is used instead; otherwise the
wrapper falls back to ``RUSAGE_CHILDREN`` and says so (``rss_method``).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time


def _maxrss_kb(ru_maxrss: int) -> int:
    # Linux reports kilobytes, macOS bytes.
    return ru_maxrss // 1024 if sys.platform == "darwin" else ru_maxrss


def main() -> int:
    spec = json.loads(sys.argv[1])
    cmd = list(spec["cmd"])
    time_bin = spec.get("time_bin")
    rss_file = spec.get("rss_file")
    if time_bin and rss_file:
        cmd = [time_bin, "-f", "%M", "-o", rss_file, *cmd]
    with open(spec["stdout"], "wb") as out, open(spec["stderr"], "wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=spec["cwd"],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # so that a timeout can kill the whole tree
        )
        # Not proc.wait(timeout=...): that polls with sleeps of up to 50 ms,
        # which would round every measurement up to the next poll.
        killed = threading.Event()

        def kill() -> None:
            killed.set()
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(spec["timeout"], kill) if spec.get("timeout") else None
        if timer is not None:
            timer.start()
        returncode = proc.wait()
        wall = time.perf_counter() - t0
        if timer is not None:
            timer.cancel()
        timed_out = killed.is_set()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    maxrss_kb = _maxrss_kb(ru.ru_maxrss)
    method = "getrusage(RUSAGE_CHILDREN).ru_maxrss"
    if time_bin and rss_file:
        try:
            with open(rss_file) as f:
                lines = [ln.strip() for ln in f if ln.strip()]
            maxrss_kb = int(lines[-1])  # GNU time may add "Command exited with ..." first
            method = "GNU time %M"
        except (OSError, ValueError, IndexError):
            pass  # killed before time wrote it: keep the rusage figure
    print(
        json.dumps(
            {
                "wall_s": wall,
                "cpu_s": ru.ru_utime + ru.ru_stime,
                "maxrss_kb": maxrss_kb,
                "rss_method": method,
                "returncode": returncode,
                "timed_out": timed_out,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
