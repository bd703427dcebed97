"""Run a command inside the network namespace this process was started in
(by ``unshare --net``), after checking that it holds nothing but loopback
and bringing loopback up. Used by the tests that could otherwise send a
packet beyond loopback if the guard were broken: they fail instead.

    unshare --net -- python in_netns.py PARENT_NETNS ARGV...

With ``IN_NETNS_HOSTS=FILE`` (and ``unshare --mount``), FILE is bind-mounted
over /etc/hosts first, so that test names resolve without any DNS server.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import subprocess
import sys


def main() -> None:
    parent, argv = sys.argv[1], sys.argv[2:]
    mine = os.readlink("/proc/self/ns/net")
    if mine == parent:
        sys.exit(f"in_netns: not in a new network namespace ({mine})")
    names = [name for _, name in socket.if_nameindex()]
    if names != ["lo"]:
        sys.exit(f"in_netns: the namespace has interfaces besides lo: {names}")
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    req = struct.pack("16sh22x", b"lo", 0)
    flags = struct.unpack("16sh22x", fcntl.ioctl(s, 0x8913, req))[1]
    fcntl.ioctl(s, 0x8914, struct.pack("16sh22x", b"lo", flags | 1))
    s.close()
    hosts = os.environ.pop("IN_NETNS_HOSTS", "")
    if hosts:
        subprocess.run(["mount", "--bind", hosts, "/etc/hosts"], check=True)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
