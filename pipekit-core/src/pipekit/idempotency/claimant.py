"""Who made a PENDING claim, and whether it is gone.

A claim's owner reads ``<random>.<machine> pid <pid> on <host>``, where
*machine* names this boot of this machine and this PID namespace (a hash of
``/proc/sys/kernel/random/boot_id`` and the namespace's inode), so that a PID
means the same process to every caller that shares it. A claim whose
claimant was a process of this machine that no longer runs can be taken
over at once instead of after its ``pending_timeout``. The Redis lock
names and judges its holders the same way, with these functions.
"""

from __future__ import annotations

import hashlib
import os

from .._atomic import pid_runs

__all__ = ["MACHINE", "new_owner", "gone_local_claimant"]

HOST = os.uname().nodename if hasattr(os, "uname") else "host"


def _machine_id() -> str | None:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        pidns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return hashlib.sha256(f"{boot}:{pidns}".encode()).hexdigest()[:12]


MACHINE = _machine_id()


def new_owner() -> str:
    """A new claim's owner: unique, and naming this process."""
    tag = os.urandom(8).hex() + (f".{MACHINE}" if MACHINE else "")
    return f"{tag} pid {os.getpid()} on {HOST}"


def gone_local_claimant(owner: str | None) -> int | None:
    """The PID of the claimant named by ``owner`` when it was a process of
    this machine (same boot, same PID namespace) that no longer runs; None
    when it runs, or cannot be known to be gone."""
    if MACHINE is None or not owner:
        return None
    parts = owner.split(" ")
    if len(parts) < 3 or parts[1] != "pid" or not parts[0].endswith("." + MACHINE):
        return None
    try:
        pid = int(parts[2])
    except ValueError:
        return None
    if pid == os.getpid() or pid_runs(pid):
        return None
    return pid
