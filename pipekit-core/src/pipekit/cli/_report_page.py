"""The page ``pipekit report`` writes: one run as one self-contained HTML
file (its style, script and drawings inline; it fetches nothing).

    header      the run: id, pipeline, status, when, how long, where
    DAG         the stages, folded into groups, coloured by status
    timeline    which stage ran when, on which job slot of which host
    stages      per group and stage: reason, duration, records, errors
    metrics     the run's counters

Everything a record holds is escaped (a stage's name, an error).
"""

from __future__ import annotations

from datetime import datetime
from html import escape
from typing import Any

from ._report_assets import CSS, SCRIPT, content_policy
from ._report_graph import STATUS_ORDER, Group, dag_svg, group_stages, status_class

__all__ = ["render"]

LANE_H, LABEL_W, PLOT_W, AXIS_H = 24, 120, 1040, 22
_WORDS = {"not-run": "not run", "not-ended": "did not end"}


def render(record: dict[str, Any], duration: float | None) -> str:
    groups = group_stages(record)
    title = f"pipekit run {record.get('run_id')}"
    return "".join(
        [
            '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            f'<meta http-equiv="Content-Security-Policy" content="{content_policy()}">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>",
            _header(record, groups, duration),
            "<main>",
            _section("The pipeline", _legend() + f'<div class="scroll">{dag_svg(groups)}</div>'),
            _section("Timeline", _timeline(record)),
            _section("Stages", _stages(groups)),
            _section("Metrics", _metrics(record)),
            f"</main><script>{SCRIPT}</script></body></html>",
        ]
    )


def _section(title: str, body: str) -> str:
    slug = title.lower().replace(" ", "-")
    return f'<section id="{slug}"><h2>{escape(title)}</h2>{body}</section>'


def _header(record: dict[str, Any], groups: list[Group], duration: float | None) -> str:
    status = str(record.get("status") or "")
    counts: dict[str, int] = {}
    for group in groups:
        for key, n in group.counts.items():
            counts[key] = counts.get(key, 0) + n
    took = "-" if duration is None else f"{duration:.2f} s"
    facts = [
        ("pipeline", record.get("pipeline")),
        ("started", record.get("started_at")),
        ("ended", record.get("ended_at") or "-"),
        ("took", took),
        ("host", record.get("host")),
        ("jobs", record.get("jobs")),
        ("backend", record.get("backend")),
        ("exit code", record.get("exit_code")),
    ]
    meta = " &middot; ".join(f"{escape(k)} <b>{escape(str(v))}</b>" for k, v in facts)
    cards = "".join(
        f'<div class="count st-{s}"><b>{counts[s]}</b>{escape(_WORDS.get(s, s))}</div>'
        for s in STATUS_ORDER
        if counts.get(s)
    )
    state = {"ok": "ok", "failed": "failed", "killed": "not-ended", "running": "running"}
    return (
        f"<header><h1>Run {escape(str(record.get('run_id')))}"
        f'<span class="badge st-{state.get(status, "skipped")}">{escape(status)}</span></h1>'
        f'<div class="meta">{meta}</div><div class="counts">{cards}</div></header>'
    )


def _legend() -> str:
    items = "".join(
        f'<span><span class="dot st-{s}"></span>{escape(_WORDS.get(s, s))}</span>'
        for s in STATUS_ORDER
    )
    return (
        f'<div class="legend">{items}<span>a fold of N stages shows its share of each; '
        "click a stage for its details</span></div>"
    )


def _epoch(iso: str | None) -> float | None:
    if not iso:
        return None
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _timeline(record: dict[str, Any]) -> str:
    """A lane per job slot (per host), a bar per stage that ran."""
    groups = {s["name"]: g for g in group_stages(record) for s in g.stages}
    ran = []
    for stage in record.get("stages", []):
        start, end = _epoch(stage.get("started_at")), _epoch(stage.get("ended_at"))
        if start is not None and end is not None and stage.get("slot") is not None:
            ran.append((start, end, stage))
    if not ran:
        return (
            '<p class="empty">No stage ran in this run (every stage was up to date or not run).</p>'
        )
    origin = _epoch(record.get("started_at")) or min(r[0] for r in ran)
    span = max(max(r[1] for r in ran) - origin, 1e-3)
    lanes = sorted({(str(s.get("host")), int(s["slot"])) for _, _, s in ran})
    row = {lane: i for i, lane in enumerate(lanes)}
    several_hosts = len({host for host, _ in lanes}) > 1
    parts = []
    for lane, i in row.items():
        y = AXIS_H + i * LANE_H
        name = f"slot {lane[1]}" + (f" @ {lane[0]}" if several_hosts else "")
        parts.append(
            f'<rect class="lane" x="{LABEL_W}" y="{y + 2}" width="{PLOT_W}" height="{LANE_H - 4}"/>'
            f'<text x="4" y="{y + LANE_H // 2 + 4}">{escape(name)}</text>'
        )
    parts.extend(_ticks(span, len(lanes)))
    for start, end, stage in ran:
        x = LABEL_W + PLOT_W * (start - origin) / span
        width = max(1.5, PLOT_W * (end - start) / span)
        y = AXIS_H + row[(str(stage.get("host")), int(stage["slot"]))] * LANE_H + 3
        tip = f"{stage['name']}: {stage.get('status')}, {end - start:.3f} s, from +{start - origin:.3f} s"
        parts.append(
            f'<rect class="bar st-{status_class(stage)}" data-group="g{groups[stage["name"]].index}" '
            f'x="{x:.1f}" y="{y}" width="{width:.1f}" height="{LANE_H - 6}" rx="2">'
            f"<title>{escape(tip)}</title></rect>"
        )
        if width > 40:
            fits = int((width - 6) / 6.2)
            label = (
                stage["name"]
                if len(stage["name"]) <= fits
                else stage["name"][: fits - 1] + "\u2026"
            )
            parts.append(
                f'<text class="barlabel" x="{x + 4:.1f}" y="{y + LANE_H - 11}">{escape(label)}</text>'
            )
    height = AXIS_H + len(lanes) * LANE_H + 4
    width = LABEL_W + PLOT_W + 30
    skipped = len(record.get("stages", [])) - len(ran)
    note = (
        f'<p class="meta">{skipped} stage(s) were decided without running.</p>' if skipped else ""
    )
    return (
        f'<div class="scroll"><svg id="timeline" '
        f'width="{width}" height="{height}">{"".join(parts)}</svg></div>{note}'
    )


def _ticks(span: float, lanes: int) -> list[str]:
    step = next(
        (s for s in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30,
                     60, 120, 300, 600, 1800, 3600, 7200) if span / s <= 10),
        span / 10,
    )  # fmt: skip
    out, t = [], 0.0
    bottom = AXIS_H + lanes * LANE_H
    while t <= span + 1e-9:
        x = LABEL_W + PLOT_W * t / span
        out.append(
            f'<line class="tick" x1="{x:.1f}" y1="{AXIS_H - 4}" x2="{x:.1f}" y2="{bottom}"/>'
            f'<text x="{x + 2:.1f}" y="{AXIS_H - 8}">{t:g} s</text>'
        )
        t += step
    return out


_HEAD = (
    "<thead><tr><th>stage</th><th>status</th><th>reason</th><th>duration</th><th>where</th>"
    "<th>records in</th><th>out</th><th>dead letters</th></tr></thead>"
)


def _stages(groups: list[Group]) -> str:
    """One table of the stages of their own, then a fold per group of
    stages (open when one failed or did not end, or when they are few)."""
    toolbar = (
        '<div class="toolbar"><input id="filter" type="search" '
        'placeholder="filter stages by name or status" aria-label="filter stages">'
        f'<span class="meta">{_stage_count(groups)}</span></div>'
    )
    single = [g for g in groups if len(g.stages) == 1]
    rows = "".join(_stage_row(g.stages[0], f"g{g.index}") for g in single)
    table = f'<table class="stages">{_HEAD}<tbody>{rows}</tbody></table>' if single else ""
    few = len(groups) - len(single) <= 10
    return toolbar + table + "".join(_fold(g, few) for g in groups if len(g.stages) > 1)


def _stage_count(groups: list[Group]) -> str:
    folds = sum(1 for g in groups if len(g.stages) > 1)
    text = f"{sum(len(g.stages) for g in groups)} stage(s)"
    return text + (f", {folds} fold(s) of stages alike" if folds else "")


def _fold(group: Group, few: bool) -> str:
    opened = group.status in ("failed", "not-ended") or (few and len(group.stages) <= 30)
    counts = ", ".join(
        f"{n} {_WORDS.get(s, s)}" for s, n in sorted(group.counts.items(), key=_rank)
    )
    ordered = sorted(group.stages, key=lambda stage: STATUS_ORDER.index(status_class(stage)))
    rows = "".join(_stage_row(stage) for stage in ordered)  # failures first
    return (
        f'<details class="group st-{group.status}" id="g{group.index}"{" open" if opened else ""}>'
        f'<summary><span class="dot"></span><span class="name">{escape(group.label)}</span> '
        f'<span class="meta">&mdash; {len(group.stages)} stages: {escape(counts)}</span></summary>'
        f'<div class="scroll"><table class="stages">{_HEAD}<tbody>{rows}</tbody></table></div>'
        "</details>"
    )


def _rank(item: tuple[str, int]) -> int:
    return STATUS_ORDER.index(item[0])


def _stage_row(stage: dict[str, Any], anchor: str = "") -> str:
    info = stage.get("info") or {}
    status = status_class(stage)
    where = "-"
    if stage.get("slot") is not None:
        where = f"slot {stage['slot']} @ {stage.get('host')}"
    duration = stage.get("duration_s")
    cells = [
        f'<td class="name">{escape(stage["name"])}</td>',
        f'<td class="status st-{status}"><span>{escape(_WORDS.get(status, status))}</span></td>',
        f"<td>{escape(str(stage.get('reason') or ''))}</td>",
        f'<td class="num">{"-" if duration is None else f"{duration:.3f} s"}</td>',
        f"<td>{escape(where)}</td>",
        *(
            f'<td class="num">{escape(str(info.get(key, "")))}</td>'
            for key in ("records_in", "records_out", "records_dead_lettered")
        ),
    ]
    anchor = f' id="{anchor}"' if anchor else ""
    row = (
        f'<tr class="stage"{anchor} data-name="{escape(stage["name"])}" data-status="{status}">'
        f"{''.join(cells)}</tr>"
    )
    problem = _problem(stage, info)
    if problem:
        row += f'<tr class="stage problem" data-name="{escape(stage["name"])}" '
        row += f'data-status="{status}"><td colspan="8">{problem}</td></tr>'
    return row


def _problem(stage: dict[str, Any], info: dict[str, Any]) -> str:
    parts = []
    error = stage.get("error")
    if error and str(error) not in str(stage.get("reason") or ""):
        parts.append(f'<div class="error">error: {escape(str(stage["error"]))}</div>')
    for key in ("traceback", "stderr"):
        if info.get(key) and stage.get("status") == "failed":
            parts.append(
                f"<details open><summary>{key}</summary><pre>{escape(str(info[key]))}</pre></details>"
            )
    return "".join(parts)


def _metrics(record: dict[str, Any]) -> str:
    metrics = record.get("metrics") or {}
    if not metrics:
        return '<p class="empty">No metrics: the run did not end.</p>'
    items = "".join(
        f"<div><dt>{escape(str(k))}</dt><dd>{escape(str(v))}</dd></div>"
        for k, v in sorted(metrics.items())
    )
    return f'<dl class="metrics">{items}</dl>'
