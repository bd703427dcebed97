"""``pipekit plugins``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import EXIT_OK
from ..plugins._manager import load_registry
from ._common import add_common, print_json


def add_parser(sub: Any) -> None:
    plugins = sub.add_parser(
        "plugins",
        help="list installed plugins and what they registered",
        description="Every plugin: its distribution, version, hooks and registered names.",
    )
    add_common(plugins)
    plugins.add_argument("--json", action="store_true", help="print JSON on stdout")
    plugins.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    registry = load_registry()
    if args.json:
        print_json({"plugins": registry.to_json()}, indent=True)
        return EXIT_OK
    for p in registry.plugins:
        print(f"{p.name}  ({p.distribution} {p.version}, {p.module})")
        for kind, names in sorted(p.registered.items()):
            print(f"    {kind}: {', '.join(sorted(names))}")
    if registry.disabled:
        print(f"disabled: {', '.join(registry.disabled)}")
    return EXIT_OK
