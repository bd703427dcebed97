"""The pipeline's DAG for ``pipekit report``: stages folded into groups,
laid out in layers by depth, drawn as inline SVG.

A group is the stages one template made (``name@item`` -> ``name@*``), or
ten or more whose names differ only in a trailing number (``upper-0001`` ..
``upper-0999`` -> ``upper-*``); any other stage is a group of its own.
"""

from __future__ import annotations

import re
from collections import Counter
from html import escape
from typing import Any

import attrs

__all__ = ["Group", "group_stages", "dag_svg", "status_class", "STATUS_ORDER"]

NODE_W, NODE_H, COLUMN_W, ROW_H, MARGIN = 200, 38, 270, 50, 16
ROWS_PER_COLUMN = 24
"""A layer with more groups wraps into several columns of this many."""
STATUS_ORDER = ("failed", "running", "not-ended", "ok", "skipped", "not-run")
_NUMBERED = re.compile(r"^(.*?)(\d+)$")
_FOLD_AT = 10


@attrs.define
class Group:
    key: str
    label: str
    stages: list[dict[str, Any]]
    deps: list[str] = attrs.field(factory=list)
    index: int = 0

    @property
    def counts(self) -> Counter[str]:
        return Counter(status_class(stage) for stage in self.stages)

    @property
    def status(self) -> str:
        counts = self.counts
        return next(s for s in STATUS_ORDER if counts.get(s))


def status_class(stage: dict[str, Any]) -> str:
    """A stage's class in the report: its status, with ``not-run`` for a
    stage a failure or an interrupt kept from running, ``not-ended`` for
    one a killed run did not end."""
    status = stage.get("status") or "not-ended"
    if status == "skipped" and str(stage.get("reason", "")).startswith("not run"):
        return "not-run"
    return status if status in STATUS_ORDER else "not-ended"


def _group_key(name: str, numbered: Counter[str]) -> str:
    if "@" in name:
        return name.split("@", 1)[0] + "@*"
    match = _NUMBERED.match(name)
    if match and numbered[match.group(1)] >= _FOLD_AT:
        return match.group(1) + "*"
    return name


def group_stages(record: dict[str, Any]) -> list[Group]:
    """The run's stages (every stage of its graph; one it did not end has
    only its name) folded into groups, in pipeline order."""
    ended = {stage["name"]: stage for stage in record.get("stages", [])}
    graph = record.get("graph") or [{"name": n, "deps": []} for n in ended]
    numbered = Counter(m.group(1) for g in graph if (m := _NUMBERED.match(g["name"])))
    groups: dict[str, Group] = {}
    group_of: dict[str, str] = {}
    for node in graph:
        name = node["name"]
        key = _group_key(name, numbered)
        group_of[name] = key
        if key not in groups:
            groups[key] = Group(key, key, [], index=len(groups))
        groups[key].stages.append(ended.get(name) or {"name": name, "status": None})
    for group in groups.values():
        if len(group.stages) == 1:
            group.label = group.stages[0]["name"]
    for node in graph:
        group = groups[group_of[node["name"]]]
        for dep in node.get("deps", []):
            upstream = group_of.get(dep)
            if upstream is not None and upstream != group.key and upstream not in group.deps:
                group.deps.append(upstream)
    return list(groups.values())


def _layers(groups: list[Group]) -> list[list[Group]]:
    """Groups by depth (longest path from a group with no deps); in a
    layer, ordered by where their deps sit (one barycentre pass)."""
    depth: dict[str, int] = {}
    for group in groups:  # pipeline order: deps first (a fold may make a cycle: 0)
        depth[group.key] = 1 + max((depth.get(d, -1) for d in group.deps), default=-1)
    layers: list[list[Group]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for group in groups:
        layers[depth[group.key]].append(group)
    position: dict[str, float] = {}
    for layer in layers:
        if layer is not layers[0]:
            layer.sort(key=lambda g: _mean([position.get(d, 0.0) for d in g.deps] or [0.0]))
        for row, group in enumerate(layer):
            position[group.key] = float(row)
    return layers


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def dag_svg(groups: list[Group]) -> str:
    """The DAG as an ``<svg>``: a node per group, coloured by its status
    (a fold shows the share of each status), an arrow per dependency."""
    places: dict[str, tuple[int, int]] = {}
    column = 0
    height = 0
    for layer in _layers(groups):
        for row, group in enumerate(layer):
            x = MARGIN + (column + row // ROWS_PER_COLUMN) * COLUMN_W
            y = MARGIN + (row % ROWS_PER_COLUMN) * ROW_H
            places[group.key] = (x, y)
            height = max(height, y + NODE_H + MARGIN)
        column += max(1, -(-len(layer) // ROWS_PER_COLUMN))
    width = MARGIN + column * COLUMN_W
    edges = [
        _edge(places[dep], places[group.key])
        for group in groups
        for dep in group.deps
        if dep in places
    ]
    nodes = [_node(group, *places[group.key]) for group in groups]
    return (
        f'<svg id="dag" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="the pipeline\'s stages">'
        '<defs><marker id="arrow" viewBox="0 0 8 8" refX="8" refY="4" markerWidth="7" '
        'markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" class="arrowhead"/>'
        "</marker></defs>"
        f'<g class="edges">{"".join(edges)}</g><g class="nodes">{"".join(nodes)}</g></svg>'
    )


def _edge(start: tuple[int, int], end: tuple[int, int]) -> str:
    x1, y1 = start[0] + NODE_W, start[1] + NODE_H // 2
    x2, y2 = end[0], end[1] + NODE_H // 2
    bend = max(30, (x2 - x1) // 2)
    return (
        f'<path class="edge" d="M{x1},{y1} C{x1 + bend},{y1} {x2 - bend},{y2} {x2},{y2}" '
        'marker-end="url(#arrow)"/>'
    )


def _node(group: Group, x: int, y: int) -> str:
    counts = group.counts
    total = len(group.stages)
    room = 26 if not (total > 1 and counts.get("failed")) else 15
    label = group.label if len(group.label) <= room else group.label[: room - 1] + "\u2026"
    if total > 1:
        label = f"{label} ({total})"
    tip = f"{group.label}: " + ", ".join(f"{n} {s}" for s, n in counts.most_common())
    bar, offset = [], 0.0
    for status in STATUS_ORDER:
        if counts.get(status):
            share = (NODE_W - 2) * counts[status] / total
            bar.append(
                f'<rect class="share st-{status}" x="{x + 1 + offset:.1f}" y="{y + NODE_H - 7}" '
                f'width="{share:.1f}" height="6"/>'
            )
            offset += share
    if total > 1 and counts.get("failed"):
        bar.append(
            f'<text class="alarm" x="{x + NODE_W - 8}" y="{y + 20}" text-anchor="end">'
            f"{counts['failed']} failed</text>"
        )
    return (
        f'<g class="node st-{group.status}" data-group="g{group.index}" tabindex="0">'
        f"<title>{escape(tip)}</title>"
        f'<rect class="box" x="{x}" y="{y}" width="{NODE_W}" height="{NODE_H}" rx="6"/>'
        f'<text x="{x + 10}" y="{y + 20}">{escape(label)}</text>{"".join(bar)}</g>'
    )
