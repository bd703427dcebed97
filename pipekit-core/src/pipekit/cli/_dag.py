"""``pipekit dag``: the pipeline's graph, as text, Graphviz, Mermaid or JSON.

Stages generated from one template (``train@us-1``, ``train@eu-2``, ...)
are folded into one node (``train@*``) unless ``--expand``; the JSON
document always lists every stage.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..plan import _plan_cache as plancache
from ..plan._config import find_pipeline_file
from ._common import add_common, add_file, add_targets, data_stdout, load, print_json


def add_parser(sub: Any) -> None:
    dag = sub.add_parser(
        "dag",
        help="show the pipeline's graph: stages in dependency order and their edges",
        description="The pipeline's graph. Runs nothing, writes nothing.",
    )
    add_file(dag)
    add_common(dag)
    add_targets(dag)
    form = dag.add_mutually_exclusive_group()
    form.add_argument("--dot", action="store_true", help="Graphviz dot on stdout")
    form.add_argument("--mermaid", action="store_true", help="a Mermaid flowchart on stdout")
    form.add_argument("--json", action="store_true", help="nodes and edges as JSON (every stage)")
    dag.add_argument(
        "--expand", action="store_true", help="one node per generated stage (name@item), not folded"
    )
    dag.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    from ..plan._targets import select

    pipeline = plancache.load(args.file or find_pipeline_file(), args.backend)
    if pipeline is None:
        pipeline, _registry = load(args)
    pipeline = select(pipeline, args.targets, downstream=args.downstream)
    if args.json:
        stages = [{"name": n, "deps": list(pipeline.stages[n].deps)} for n in pipeline.order]
        links = [[d, n] for n in pipeline.order for d in pipeline.stages[n].deps]
        print_json({"pipeline": pipeline.name, "nodes": stages, "edges": links})
        return 0
    nodes, edges = graph(pipeline, fold=not args.expand)
    if args.dot:
        data_stdout().write(dot(pipeline.name, nodes, edges))
    elif args.mermaid:
        data_stdout().write(mermaid(nodes, edges))
    else:
        print(text(nodes, edges), end="")
    return 0


def node_of(name: str, fold: bool) -> str:
    """The node a stage is drawn as: ``NAME@*`` for a generated stage when folding."""
    base, at, _item = name.partition("@")
    return f"{base}@*" if fold and at else name


def graph(pipeline: Any, *, fold: bool) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The nodes in dependency order, each with how many stages it stands
    for, and the edges between them (once each, none from a node to itself)."""
    nodes: dict[str, int] = {}
    edges: dict[tuple[str, str], None] = {}
    for name in pipeline.order:
        node = node_of(name, fold)
        nodes[node] = nodes.get(node, 0) + 1
        for dep in pipeline.stages[name].deps:
            upstream = node_of(dep, fold)
            if upstream != node:
                edges[(upstream, node)] = None
    return nodes, list(edges)


def text(nodes: dict[str, int], edges: list[tuple[str, str]]) -> str:
    needs: dict[str, list[str]] = {n: [] for n in nodes}
    for upstream, node in edges:
        needs[node].append(upstream)
    width = max(len(_label(n, c)) for n, c in nodes.items())
    lines = []
    for node, count in nodes.items():
        after = f"  <- {', '.join(needs[node])}" if needs[node] else ""
        lines.append(f"  {_label(node, count):<{width}}{after}".rstrip() + "\n")
    return "".join(lines)


def _label(node: str, count: int) -> str:
    return f"{node} ({count} stages)" if node.endswith("@*") else node


def dot(name: str, nodes: dict[str, int], edges: list[tuple[str, str]]) -> str:
    def quoted(text: str) -> str:
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [f"digraph {quoted(name)} {{\n", "  rankdir=LR;\n"]
    lines += [f"  {quoted(n)} [label={quoted(_label(n, c))}];\n" for n, c in nodes.items()]
    lines += [f"  {quoted(a)} -> {quoted(b)};\n" for a, b in edges]
    return "".join(lines) + "}\n"


def mermaid(nodes: dict[str, int], edges: list[tuple[str, str]]) -> str:
    ids = {node: f"n{i}" for i, node in enumerate(nodes)}  # Mermaid ids: letters and digits
    lines = ["flowchart LR\n"]
    lines += [f'  {ids[n]}["{_label(n, c)}"]\n' for n, c in nodes.items()]
    lines += [f"  {ids[a]} --> {ids[b]}\n" for a, b in edges]
    return "".join(lines)
