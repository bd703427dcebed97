"""``pipekit completion bash|zsh|fish``: the shell's completion script.

The scripts come from argcomplete: on each Tab the shell runs ``pipekit``
with ``_ARGCOMPLETE`` set, and :func:`complete` answers from the same
argparse parser the command uses, so completions never drift from the
options. argcomplete is imported only then and by ``pipekit completion``.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import EXIT_OK
from ._common import add_common, data_stdout

SHELLS = ("bash", "zsh", "fish")


def add_parser(sub: Any) -> None:
    completion = sub.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description=(
            "Print the completion script for SHELL on stdout. bash: "
            "`source <(pipekit completion bash)` in ~/.bashrc; zsh: "
            "`source <(pipekit completion zsh)` in ~/.zshrc after compinit; fish: "
            "`pipekit completion fish > ~/.config/fish/completions/pipekit.fish`."
        ),
    )
    add_common(completion)
    completion.add_argument("shell", choices=SHELLS, metavar="SHELL", help="bash, zsh or fish")
    completion.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    import argcomplete

    data_stdout().write(argcomplete.shellcode(["pipekit"], shell=args.shell))  # data: -q keeps it
    return EXIT_OK


def complete(parser: argparse.ArgumentParser) -> None:
    """Answer the shell's completion request (``_ARGCOMPLETE`` is set) and
    exit; argcomplete writes the candidates where the script reads them."""
    import argcomplete

    argcomplete.autocomplete(parser)
