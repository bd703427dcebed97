"""The style sheet and the script ``pipekit report`` inlines in its page
(the page fetches nothing: its Content-Security-Policy forbids it)."""

from __future__ import annotations

import base64
import hashlib

__all__ = ["CSS", "SCRIPT", "content_policy"]

CSS = """
:root { --ok: #2f9e5b; --failed: #d64545; --skipped: #8d99a6; --not-run: #cfd6dd;
  --not-ended: #e8a33d; --running: #3b82f6; --ink: #1f2933; --muted: #616e7c;
  --line: #d9e2ec; --paper: #ffffff; --back: #f5f7fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: var(--back); }
header { padding: 18px 28px 14px; background: var(--paper); border-bottom: 1px solid var(--line); }
h1 { margin: 0 0 4px; font-size: 20px; font-weight: 600; word-break: break-all; }
h2 { margin: 0 0 10px; font-size: 16px; font-weight: 600; }
main { padding: 18px 28px 40px; display: grid; gap: 18px; }
section { background: var(--paper); border: 1px solid var(--line); border-radius: 8px;
  padding: 14px 16px; min-width: 0; }
.meta { color: var(--muted); }
.meta b { color: var(--ink); font-weight: 600; }
.badge { display: inline-block; padding: 1px 9px; border-radius: 10px; color: #fff;
  font-size: 12px; font-weight: 600; vertical-align: 2px; margin-left: 6px; }
.counts { display: flex; gap: 10px; flex-wrap: wrap; margin-top: 10px; }
.count { padding: 6px 12px; border-radius: 6px; background: var(--back); border-left: 4px solid; }
.count b { font-size: 18px; margin-right: 4px; }
.scroll { overflow: auto; max-height: 70vh; border: 1px solid var(--line); border-radius: 6px;
  background: #fbfcfd; }
#dag .box { fill: #fff; stroke-width: 2; }
#dag .node { cursor: pointer; }
#dag .node text { font-size: 12.5px; fill: var(--ink); }
#dag .node:hover .box, #dag .node:focus .box { stroke-width: 3.5; }
#dag .node text.alarm { fill: var(--failed); font-weight: 600; font-size: 11.5px; }
#dag .edge { fill: none; stroke: #9fb3c8; stroke-width: 1.3; }
#dag .arrowhead { fill: #9fb3c8; }
.st-ok { --c: var(--ok); } .st-failed { --c: var(--failed); } .st-skipped { --c: var(--skipped); }
.st-not-run { --c: var(--not-run); } .st-not-ended { --c: var(--not-ended); }
.st-running { --c: var(--running); }
#dag .node .box { stroke: var(--c); }
#dag .node.st-failed .box { fill: #fdecec; }
#dag .node.st-not-ended .box { stroke-dasharray: 5 3; }
.share, .bar { fill: var(--c); }
.badge, .dot { background: var(--c); }
.count { border-color: var(--c); }
.bar { cursor: pointer; fill-opacity: .88; stroke: #fff; stroke-width: 1; }
.bar:hover { fill-opacity: 1; stroke: var(--ink); }
#timeline text { font-size: 11px; fill: var(--muted); }
#timeline .lane { fill: #f0f4f8; }
#timeline .tick { stroke: var(--line); }
.legend { display: flex; gap: 14px; flex-wrap: wrap; color: var(--muted); font-size: 12px;
  margin: 0 0 8px; }
.dot { display: inline-block; width: 10px; height: 10px; border-radius: 3px; margin-right: 5px;
  vertical-align: -1px; }
.toolbar { display: flex; gap: 12px; align-items: center; margin-bottom: 10px; }
.toolbar input { padding: 5px 9px; border: 1px solid var(--line); border-radius: 6px; width: 280px; }
details.group { border-top: 1px solid var(--line); }
details.group > summary { padding: 7px 4px; cursor: pointer; list-style-position: inside; }
details.group > summary .name { font-weight: 600; word-break: break-all; }
details.group > summary .dot { margin-left: 4px; }
details.group.flash, tr.flash td { background: #fff3c4; }
table.stages { margin-bottom: 8px; }
#timeline .barlabel { font-size: 10.5px; fill: #fff; pointer-events: none; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #eef2f6; vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.name { word-break: break-all; }
td.status span { color: var(--c); font-weight: 600; }
pre { margin: 4px 0; padding: 8px 10px; background: #1f2933; color: #f5f7fa; border-radius: 6px;
  overflow: auto; max-height: 320px; font-size: 12px; white-space: pre-wrap; word-break: break-all; }
.error { color: var(--failed); }
.empty { color: var(--muted); font-style: italic; }
dl.metrics { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr));
  gap: 6px 18px; margin: 0; }
dl.metrics div { display: flex; justify-content: space-between; border-bottom: 1px solid #eef2f6; }
dl.metrics dt { color: var(--muted); } dl.metrics dd { margin: 0; font-variant-numeric: tabular-nums; }
"""

SCRIPT = """
(function () {
  "use strict";
  function reveal(id) {
    var target = document.getElementById(id);
    if (!target) { return; }
    var fold = target.closest("details");
    if (fold) { fold.open = true; }
    target.scrollIntoView({block: "center"});
    target.classList.add("flash");
    setTimeout(function () { target.classList.remove("flash"); }, 1500);
  }
  document.querySelectorAll("[data-group]").forEach(function (el) {
    el.addEventListener("click", function () { reveal(el.getAttribute("data-group")); });
    el.addEventListener("keydown", function (e) {
      if (e.key === "Enter") { reveal(el.getAttribute("data-group")); }
    });
  });
  var filter = document.getElementById("filter");
  filter.addEventListener("input", function () {
    var words = filter.value.toLowerCase().trim();
    document.querySelectorAll("tr.stage").forEach(function (row) {
      var text = row.getAttribute("data-name") + " " + row.getAttribute("data-status");
      row.hidden = words !== "" && text.toLowerCase().indexOf(words) < 0;
    });
    document.querySelectorAll("details.group").forEach(function (fold) {
      var shown = fold.querySelectorAll("tr.stage:not([hidden])").length;
      fold.hidden = shown === 0;
      if (words !== "") { fold.open = shown > 0; }
    });
  });
  document.body.setAttribute("data-ready", "yes");
})();
"""


def content_policy() -> str:
    """The page's Content-Security-Policy: nothing fetched, its own style,
    and only its own script (by hash: nothing a record holds can run)."""
    digest = base64.b64encode(hashlib.sha256(SCRIPT.encode()).digest()).decode()
    return (
        f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{digest}'; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
