"""Tests that fail when the documentation drifts from the code.

In the style of datasette's ``tests/test_docs.py``: the names come from the
code by introspection (hookspecs, built-in processors, config fields, the
CLI parser, exit codes), and each must be documented where a reader would
look for it. The TOML examples in the docs and the README must load.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import attrs
import pipekit
import pytest
from pipekit import errors
from pipekit.cli._main import build_parser
from pipekit.plan import _config as config
from pipekit.plan._templates import expand as expand_templates
from pipekit.plugins import _hookspecs as hookspecs
from pipekit.plugins._processors import RecordStage
from pipekit_stages.plugin import BUILTINS

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
DOC_PAGES = (
    "index",
    "user-guide",
    "state",
    "records",
    "offline",
    "stages",
    "plugins",
    "backends",
    "checkpoints",
    "idempotency",
    "dependencies",
    "development",
)
PYTHON_EXAMPLE_PAGES = ("state", "python-api")  # pages whose ```python blocks run, in order

HEADING_RE = re.compile(r"^(#{1,6})\s+(.*?)\s*$", re.M)
FENCE_RE = re.compile(r"^```([\w-]*)\n(.*?)^```\s*$", re.M | re.S)
CELL_SPLIT_RE = re.compile(r"(?<!\\)\|")


# -- helpers ------------------------------------------------------------------


def read(page: str) -> str:
    return (DOCS / f"{page}.md").read_text(encoding="utf-8")


def strip_fences(text: str) -> str:
    """The text with its fenced code blocks blanked out (a '#' in code is no
    heading), keeping every offset the same."""
    return FENCE_RE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def sections(text: str, level: int) -> dict[str, str]:
    """Heading text -> the section's body, for headings of exactly ``level``;
    a section runs to the next heading of the same or a higher level."""
    bare = strip_fences(text)
    heads = [(m.start(), m.end(), len(m.group(1)), m.group(2)) for m in HEADING_RE.finditer(bare)]
    out: dict[str, str] = {}
    for i, (_start, end, lvl, title) in enumerate(heads):
        if lvl != level:
            continue
        stop = len(text)
        for start2, _end2, lvl2, _title2 in heads[i + 1 :]:
            if lvl2 <= level:
                stop = start2
                break
        out[title] = text[end:stop]
    return out


def section_named(text: str, level: int, marker: str) -> str:
    """The body of the one heading of ``level`` that contains ``marker``."""
    found = [body for title, body in sections(text, level).items() if marker in title]
    assert len(found) == 1, (
        f"expected one level-{level} heading containing {marker!r}, found {len(found)}"
    )
    return found[0]


def table_rows(text: str) -> dict[str, list[str]]:
    """First cell's `name` -> the row's cells, for every Markdown table row
    whose first cell is a single code span (``| `name` | ... |``)."""
    rows: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("|"):
            continue
        cells = [c.strip().replace("\\|", "|") for c in CELL_SPLIT_RE.split(line)[1:-1]]
        m = re.fullmatch(r"`([^`]+)`", cells[0]) if cells else None
        if m:
            rows[m.group(1)] = cells
    return rows


def toml_literal(value: Any) -> str:
    """A default value as it is written in a pipeline file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    if value == {}:
        return "{}"
    raise TypeError(f"no TOML literal for {value!r}")


def check_field_row(
    row: list[str] | None, cls: type, field: attrs.Attribute[Any], where: str
) -> None:
    """A documented field: a row ``| `name` | `type` | default | meaning |``
    whose type is the annotation and whose default is the real default."""
    name = field.name
    assert row is not None, (
        f"{cls.__name__}.{name} is not documented in {where} (no table row `{name}`)"
    )
    assert len(row) >= 4, (
        f"{where}: the row of {name!r} needs the columns name, type, default, meaning"
    )
    annotation = inspect.get_annotations(cls)[name]
    assert f"`{annotation}`" in row[1], (
        f"{where}: {cls.__name__}.{name} has type `{annotation}`, the docs say {row[1]!r}"
    )
    default = field.default
    if default is attrs.NOTHING:
        assert "required" in row[2].lower(), f"{where}: {name!r} has no default; say 'required'"
        return
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        default = default.factory()  # type: ignore[union-attr]
        if attrs.has(type(default)):
            return  # a nested table: described in its own section
    if default is None:
        assert "none" in row[2].lower(), f"{where}: {name!r} defaults to None; say 'none'"
        return
    literal = toml_literal(default)
    assert f"`{literal}`" in row[2], (
        f"{where}: {cls.__name__}.{name} defaults to {literal}, the docs say {row[2]!r}"
    )


def github_slug(title: str, seen: dict[str, int]) -> str:
    """The anchor GitHub gives a heading (duplicates get -1, -2, ...)."""
    slug = re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")
    n = seen.get(slug, 0)
    seen[slug] = n + 1
    return slug if n == 0 else f"{slug}-{n}"


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    return {github_slug(m.group(2), seen) for m in HEADING_RE.finditer(strip_fences(text))}


# -- (1) every hookspec is documented in plugins.md ----------------------------


def hookspec_names() -> list[str]:
    marker = f"{hookspecs.PROJECT}_spec"
    return sorted(
        name
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and hasattr(obj, marker)
    )


def test_hookspecs_are_found() -> None:
    names = hookspec_names()
    assert "register_stages" in names and "on_run_end" in names, names


@pytest.fixture(scope="module")
def documented_hooks() -> dict[str, list[str]]:
    """Hook name -> argument names, from headings like ``#### `on_stage_end(run, stage, result)` ``."""
    out: dict[str, list[str]] = {}
    for m in HEADING_RE.finditer(strip_fences(read("plugins"))):
        h = re.fullmatch(r"`(\w+)\(([^)]*)\)`", m.group(2))
        if h:
            out[h.group(1)] = [a.strip() for a in h.group(2).split(",") if a.strip()]
    return out


@pytest.mark.parametrize("hook", hookspec_names())
def test_hookspec_is_documented(hook: str, documented_hooks: dict[str, list[str]]) -> None:
    assert hook in documented_hooks, f"hook {hook} has no heading `{hook}(...)` in docs/plugins.md"
    spec_args = list(inspect.signature(getattr(hookspecs, hook)).parameters)
    assert documented_hooks[hook] == spec_args, (
        f"docs/plugins.md documents {hook}({', '.join(documented_hooks[hook])}), "
        f"the hookspec is {hook}({', '.join(spec_args)})"
    )


def test_no_documented_hook_is_gone(documented_hooks: dict[str, list[str]]) -> None:
    hooks = {name for name in documented_hooks if name.startswith(("register_", "on_"))}
    assert hooks <= set(hookspec_names()), (
        f"documented but not hookspecs: {hooks - set(hookspec_names())}"
    )


# -- (2) every built-in processor and its params are documented in stages.md ---


@pytest.fixture(scope="module")
def stage_sections() -> dict[str, str]:
    out = {}
    for title, body in sections(read("stages"), 2).items():
        m = re.fullmatch(r"`([\w-]+)`", title)
        if m:
            out[m.group(1)] = body
    return out


def test_builtins_are_found() -> None:
    assert {p.name for p in BUILTINS} >= {"copy", "concat", "upper", "shell"}


@pytest.mark.parametrize("processor", BUILTINS, ids=lambda p: p.name)
def test_builtin_stage_is_documented(processor: Any, stage_sections: dict[str, str]) -> None:
    name = processor.name
    assert name in stage_sections, (
        f"processor {name!r} has no '## `{name}`' section in docs/stages.md"
    )
    body = stage_sections[name]
    assert f"version `{processor.version}`" in body, (
        f"stages.md: say {name!r} is version `{processor.version}`"
    )
    kind = "pipekit.RecordStage" if isinstance(processor, RecordStage) else "pipekit.Stage"
    assert f"`{kind}`" in body, f"stages.md: say {name!r} is a `{kind}`"
    if isinstance(processor, RecordStage):
        assert f"`{processor.format}`" in body, (
            f"stages.md: say {name!r} reads `{processor.format}`"
        )
    if processor.handles_timeout:
        assert "handles_timeout = True" in body, f"stages.md: say {name!r} handles its timeout"
    if processor.Params is None:
        assert "Params:\nnone" in body or "Params: none" in body, (
            f"stages.md: say {name!r} takes no params"
        )
    examples = [code for lang, code in FENCE_RE.findall(body) if lang == "toml"]
    assert any(f'uses = "{name}"' in code for code in examples), (
        f'stages.md: the {name!r} section needs a ```toml example with uses = "{name}"'
    )


def builtin_params() -> list[Any]:
    return [
        pytest.param(p, field, id=f"{p.name}.{field.name}")
        for p in BUILTINS
        if p.Params is not None
        for field in attrs.fields(p.Params)
    ]


@pytest.mark.parametrize(("processor", "field"), builtin_params())
def test_builtin_stage_param_is_documented(
    processor: Any, field: attrs.Attribute[Any], stage_sections: dict[str, str]
) -> None:
    body = stage_sections.get(processor.name, "")
    check_field_row(
        table_rows(body).get(field.name),
        processor.Params,
        field,
        f"docs/stages.md ({processor.name})",
    )


def test_no_documented_stage_is_gone(stage_sections: dict[str, str]) -> None:
    assert set(stage_sections) <= {p.name for p in BUILTINS}


# -- (3) every config field is documented in user-guide.md ---------------------

CONFIG_CLASSES = (
    config.PipelineConfig,
    config.StageConfig,
    config.RetryPolicy,
    config.RecordRetryPolicy,
    config.CheckpointPolicy,
    config.BackendConfig,
    config.NetworkConfig,
    config.StageNetworkConfig,
)


def config_fields() -> list[Any]:
    return [
        pytest.param(cls, field, id=f"{cls.__name__}.{field.name}")
        for cls in CONFIG_CLASSES
        for field in attrs.fields(cls)
    ]


@pytest.mark.parametrize(("cls", "field"), config_fields())
def test_config_field_is_documented(cls: type, field: attrs.Attribute[Any]) -> None:
    body = section_named(read("user-guide"), 3, f"(`{cls.__name__}`)")
    check_field_row(
        table_rows(body).get(field.name), cls, field, f"docs/user-guide.md ({cls.__name__})"
    )


@pytest.mark.parametrize("cls", CONFIG_CLASSES, ids=lambda c: c.__name__)
def test_no_documented_config_field_is_gone(cls: type) -> None:
    body = section_named(read("user-guide"), 3, f"(`{cls.__name__}`)")
    assert set(table_rows(body)) <= {f.name for f in attrs.fields(cls)}


# -- (4) every TOML pipeline example loads -------------------------------------


def toml_examples() -> list[Any]:
    files = [*sorted(DOCS.glob("*.md")), ROOT / "README.md"]
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        for m in FENCE_RE.finditer(text):
            if m.group(1) == "toml" and "[[stages]]" in m.group(2):
                line = text.count("\n", 0, m.start()) + 1
                rel = path.relative_to(ROOT).as_posix()
                out.append(pytest.param(rel, m.group(2), id=f"{rel}:{line}"))
    return out


def test_toml_examples_are_found() -> None:
    found = {p.values[0] for p in toml_examples()}
    assert {"README.md", "docs/user-guide.md", "docs/stages.md", "docs/plugins.md"} <= found


def _named_files(doc: str) -> dict[str, str]:
    """The files a doc shows as a ``toml`` block whose first line is
    ``# NAME`` (a vars file of a templated example, say)."""
    text = (ROOT / doc).read_text(encoding="utf-8")
    named = {}
    for m in FENCE_RE.finditer(text):
        first = m.group(2).split("\n", 1)[0]
        if m.group(1) == "toml" and re.fullmatch(r"# [\w.-]+\.(toml|json)", first):
            named[first[2:]] = m.group(2)
    return named


@pytest.mark.parametrize(("doc", "code"), toml_examples())
def test_toml_example_is_a_valid_pipeline(doc: str, code: str, tmp_path: Path) -> None:
    for name, content in _named_files(doc).items():
        (tmp_path / name).write_text(content, encoding="utf-8")
    data = expand_templates(tomllib.loads(code), tmp_path / "pipekit.toml").data
    cfg = config.structure_pipeline(data, Path(doc))
    registry = pipekit.load_registry()
    unknown = [s.uses for s in cfg.stages if s.uses not in registry.stages]
    if not unknown:
        # Everything a run checks before it starts, but whether inputs exist.
        from pipekit.plan._pipeline import load_pipeline

        file = tmp_path / "pipekit.toml"
        file.write_text(code, encoding="utf-8")
        load_pipeline(file, registry, check_inputs=False)
        return
    for i, stage in enumerate(cfg.stages):  # a third party's processor: check the rest
        if stage.uses in registry.stages:
            processor = registry.get("stages", stage.uses)
            _params, problems = config.check_params(
                processor.Params, stage.params, data, i, Path(doc)
            )
            assert not problems, problems


# -- (5) every CLI subcommand and option is documented in user-guide.md --------


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("build_parser() has no subcommands")


def _nested(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """A command's own subcommands (``pipekit state show``): NAME -> parser."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def cli_options() -> list[Any]:
    """Every option of every command and of its own subcommands; a
    subcommand's options are documented in its command's section."""
    out = []
    parsers = {"": build_parser(), **_subcommands()}
    for command, parser in parsers.items():
        nested = _nested(parser) if command else {}
        for sub, p in {"": parser, **nested}.items():
            for action in p._actions:
                for option in action.option_strings:
                    label = " ".join(w for w in ("pipekit", command, sub, option) if w)
                    out.append(pytest.param(command, option, action, id=label))
    return out


def _mentions(text: str, word: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(word)}(?![\w-])", text) is not None


@pytest.fixture(scope="module")
def cli_docs() -> dict[str, str]:
    """'' -> the command's common part (before its first subsection); NAME ->
    the section of ``pipekit NAME``."""
    body = section_named(read("user-guide"), 2, "The `pipekit` command")
    first_sub = HEADING_RE.search(strip_fences(body))
    out = {"": body[: first_sub.start()] if first_sub else body}
    for command in _subcommands():
        out[command] = section_named(body, 3, f"`pipekit {command}`")
    return out


@pytest.mark.parametrize("command", sorted(_subcommands()))
def test_cli_subcommand_is_documented(command: str, cli_docs: dict[str, str]) -> None:
    assert command in cli_docs and cli_docs[command].strip()


def nested_subcommands() -> list[Any]:
    return [
        pytest.param(command, sub, id=f"pipekit {command} {sub}")
        for command, parser in _subcommands().items()
        for sub in _nested(parser)
    ]


@pytest.mark.parametrize(("command", "sub"), nested_subcommands())
def test_cli_nested_subcommand_is_documented(
    command: str, sub: str, cli_docs: dict[str, str]
) -> None:
    assert f"pipekit {command} {sub}" in cli_docs[command], (
        f"`pipekit {command} {sub}` is not described in the `pipekit {command}` section"
    )


@pytest.mark.parametrize(("command", "option", "action"), cli_options())
def test_cli_option_is_documented(
    command: str, option: str, action: argparse.Action, cli_docs: dict[str, str]
) -> None:
    text = cli_docs[""] + "\n" + cli_docs.get(command, "")
    where = f"`pipekit {command}`" if command else "the common options"
    assert _mentions(text, option), f"{option} is not documented in {where} of docs/user-guide.md"
    for choice in action.choices or ():
        assert _mentions(text, str(choice)), f"{option}: the choice {choice!r} is not documented"
    default = action.default
    if (
        command
        and isinstance(action, argparse._StoreAction)
        and isinstance(default, (int, float))
        and not isinstance(default, bool)
    ):
        rows = [
            line for line in text.splitlines() if line.startswith("|") and _mentions(line, option)
        ]
        shown = f"`{default:g}`"
        assert any(shown in row for row in rows), (
            f"{option}: document its default {shown} in its table row"
        )


# -- (6) the Python examples of the API pages run -------------------------------


def python_examples(page: str) -> list[tuple[int, str]]:
    text = read(page)
    return [
        (text.count("\n", 0, m.start()) + 1, m.group(2))
        for m in FENCE_RE.finditer(text)
        if m.group(1) == "python"
    ]


@pytest.mark.parametrize("page", PYTHON_EXAMPLE_PAGES)
def test_python_examples_run(page: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's ```python blocks, run in order in one namespace, in an
    empty folder (what a reader pasting them one after another would do)."""
    examples = python_examples(page)
    assert examples, f"docs/{page}.md has no ```python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": f"docs_{page}"}
    for line, code in examples:
        try:
            # dont_inherit: not this module's `from __future__ import annotations`
            exec(compile(code, f"docs/{page}.md:{line}", "exec", dont_inherit=True), namespace)
        except Exception as exc:
            raise AssertionError(f"the example at docs/{page}.md:{line} fails: {exc!r}") from exc


# -- exit codes, links ---------------------------------------------------------


def exit_codes() -> list[Any]:
    return [
        pytest.param(value, id=name)
        for name, value in vars(errors).items()
        if name.startswith("EXIT_")
    ]


@pytest.mark.parametrize("code", exit_codes())
def test_exit_code_is_documented(code: int) -> None:
    body = section_named(read("user-guide"), 3, "Exit codes")
    assert str(code) in table_rows(body), f"exit code {code} has no row in the exit code table"


def test_index_links_every_page() -> None:
    index = read("index")
    for page in DOC_PAGES:
        assert (DOCS / f"{page}.md").is_file(), f"docs/{page}.md is missing"
        if page != "index":
            assert f"({page}.md)" in index, f"docs/index.md does not link {page}.md"


@pytest.mark.parametrize("page", DOC_PAGES)
def test_relative_links_resolve(page: str) -> None:
    text = strip_fences(read(page))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # an external link
        path, _, anchor = target.partition("#")
        doc = (DOCS / path) if path else DOCS / f"{page}.md"
        assert doc.is_file(), f"docs/{page}.md links to a missing file: {target}"
        if anchor and doc.suffix == ".md":
            assert anchor in anchors(doc.read_text(encoding="utf-8")), (
                f"docs/{page}.md links to a missing heading: {target}"
            )


# -- reason codes ----------------------------------------------------------------


def test_reason_codes_are_documented() -> None:
    from pipekit.engine._results import REASON_CODES

    body = section_named(read("user-guide"), 4, "Reason codes")
    assert set(table_rows(body)) == set(REASON_CODES)


def test_dlq_retry_skipped_codes_are_documented() -> None:
    from pipekit.engine._dead_letter_queue import RETRY_SKIPPED_CODES

    body = section_named(read("user-guide"), 3, "`pipekit dlq`")
    for code in RETRY_SKIPPED_CODES:
        assert f"`{code}`" in body, code
