"""``pipekit check``: what each stage's processor may do on the network,
found statically (nothing runs)."""

from __future__ import annotations

import argparse
import os
from typing import Any

import attrs

from ..errors import EXIT_FAILED, EXIT_OK
from ..isolation import _namespaces as netns
from ..isolation import _scan as netscan
from ._common import add_common, add_file, load, print_json


def add_parser(sub: Any) -> None:
    check = sub.add_parser(
        "check",
        help="scan every stage's processor for network use; run nothing",
        description=(
            "For each stage: its network policy, the network modules its processor's "
            "source imports, URLs in its params and network programs in its commands. "
            "Exit 1 when a stage that may not use the network shows network use."
        ),
    )
    add_file(check)
    add_common(check)
    check.add_argument("--json", action="store_true", help="print JSON on stdout")
    check.set_defaults(handler=main)


def _display(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        rel = os.path.relpath(path)
    except ValueError:
        return path
    return path if rel.startswith("..") else rel


def report(pipeline: Any) -> dict[str, Any]:
    """The check's findings for every stage, as JSON-shaped data."""
    net = pipeline.network
    stages = []
    for name in pipeline.order:
        st = pipeline.stages[name]
        cfg = st.config
        proc = st.processor
        source, findings = netscan.scan_processor(proc)
        findings += netscan.scan_params(cfg.params, tuple(getattr(proc, "command_params", ())))
        allowed = cfg.allow_network
        bad = [f for f in findings if f.kind == "network"]
        stages.append(
            {
                "name": name,
                "processor": proc.name,
                "source": _display(source),
                "network": "allowed" if allowed else "guarded",
                "allow": list(dict.fromkeys([*net.allow, *cfg.network.allow])),
                "isolation": cfg.network.isolation or net.isolation,
                "findings": [{**attrs.asdict(f), "file": _display(f.file)} for f in findings],
                "ok": allowed or not bad,
            }
        )
    why = netns.probe()
    return {
        "pipeline": pipeline.name,
        "isolation": {"available": why is None, "reason": why},
        "stages": stages,
        "problems": sum(not s["ok"] for s in stages),
    }


def main(args: argparse.Namespace) -> int:
    pipeline, _registry = load(args)
    doc = report(pipeline)
    code = EXIT_FAILED if doc["problems"] else EXIT_OK
    if args.json:
        print_json(doc, indent=True)
        return code
    width = max(len(s["name"]) for s in doc["stages"])
    for s in doc["stages"]:
        policy = (
            "network allowed (allow_network = true)"
            if s["network"] == "allowed"
            else f"guarded (allow: {', '.join(s['allow']) or 'nothing'})"
        )
        mark = "ok  " if s["ok"] else "FAIL"
        source = f", {s['source']}" if s["source"] else ""
        print(f"{mark} {s['name']:<{width}}  processor {s['processor']!r}{source}: {policy}")
        for f in s["findings"]:
            where = f["file"] + (f":{f['line']}" if f["line"] else "") if f["file"] else ""
            label = {"network": "network", "program": "programs", "note": "note"}[f["kind"]]
            print(f"       {label:<8} {f['what']}" + (f"  ({where})" if where else ""))
    iso = doc["isolation"]
    if iso["available"]:
        print("commands (shell, pipekit.isolate_command) run in network namespaces here")
    else:
        print(f"commands cannot be isolated here: {iso['reason']}")
    if doc["problems"]:
        print(
            f"{pipeline.name}: {doc['problems']} stage(s) show network use but may not use the "
            "network: the guard will refuse it at run time; set allow_network = true on "
            "the stage (or allow its hosts in network.allow) if it needs the network"
        )
    else:
        print(f"{pipeline.name}: no stage shows network use it is not allowed")
    return code
