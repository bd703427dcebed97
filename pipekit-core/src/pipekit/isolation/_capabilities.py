"""The libc calls that make and enter network namespaces (``unshare``,
``setns``: Python 3.11 has no ``os.setns``) and that take away, for good,
the capabilities that would let a command leave one."""

from __future__ import annotations

import ctypes
import functools
import os
from typing import Any

__all__ = [
    "CLONE_NEWNET",
    "Unavailable",
    "libc_calls",
    "os_error",
    "without_capabilities",
    "drop_capabilities",
]


class Unavailable(Exception):
    """No network namespace can be made here; the message says why."""


CLONE_NEWNET = 0x40000000


@functools.cache
def libc_calls() -> Any:
    """libc, for ``unshare`` and ``setns`` (Python 3.11 has no os.setns)."""
    lib = ctypes.CDLL(None, use_errno=True)
    lib.unshare.argtypes = [ctypes.c_int]
    lib.setns.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.prctl.argtypes = [ctypes.c_int, *[ctypes.c_ulong] * 4]
    lib.capget.argtypes = lib.capset.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    return lib


def os_error(call: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{call}: {os.strerror(err)}")


# Capabilities an isolated command must not have: entering another
# namespace (setns, mount: CAP_SYS_ADMIN), reaching into processes of other
# users (CAP_SYS_PTRACE), moving a network interface into another namespace
# (CAP_NET_ADMIN), and running kernel code (CAP_SYS_MODULE, CAP_BPF).
_CAPABILITIES = {"sys_admin": 21, "sys_ptrace": 19, "net_admin": 12, "sys_module": 16, "bpf": 39}
_PR_CAPBSET_DROP = 24
_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL = 47, 4


def without_capabilities(setpriv: str | None) -> list[str]:
    """The argv prefix that starts a program (as root) without
    :data:`_CAPABILITIES`, in every set and for good; none for other users,
    whose commands' capabilities are those of a user namespace."""
    if os.geteuid() != 0:
        return []
    if not setpriv:
        raise Unavailable(
            "setpriv not found (install util-linux): as root, a command's argv needs it to "
            "drop the capabilities that would let it leave its namespace; start the command "
            "with IsolatedCommand.popen() instead"
        )
    names = ",".join(f"-{n}" for n in _CAPABILITIES if capability_known(_CAPABILITIES[n]))
    return [setpriv, f"--bounding-set={names}", f"--inh-caps={names}", "--"]


def capability_known(number: int) -> bool:
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return number <= int(f.read())
    except (OSError, ValueError):
        return number <= 37


def drop_capabilities() -> None:
    """Take :data:`_CAPABILITIES` out of the calling thread's bounding,
    inheritable, permitted and effective sets, and clear its ambient set
    (capabilities belong to a thread): what it starts can never have them."""
    lib = libc_calls()
    for number in _CAPABILITIES.values():
        if capability_known(number) and lib.prctl(_PR_CAPBSET_DROP, number, 0, 0, 0) != 0:
            raise os_error("prctl(PR_CAPBSET_DROP)")
    lib.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)  # (EINVAL before 4.3)

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class Data(ctypes.Structure):
        _fields_ = [(n, ctypes.c_uint32) for n in ("effective", "permitted", "inheritable")]

    header = Header(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3, this thread
    data = (Data * 2)()
    if lib.capget(ctypes.byref(header), data) != 0:
        raise os_error("capget")
    for number in _CAPABILITIES.values():
        word, bit = data[number // 32], ~(1 << (number % 32)) & 0xFFFFFFFF
        word.effective &= bit
        word.permitted &= bit
        word.inheritable &= bit
    if lib.capset(ctypes.byref(header), data) != 0:
        raise os_error("capset")
