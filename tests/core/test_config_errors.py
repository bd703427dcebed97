"""Config errors (DESIGN §3, §4.5): every problem in a pipeline file or on the
command line is reported before anything runs, as one line per problem on
stderr naming the file, the stage (name and index) and the field; exit code
2, never a traceback, and nothing executed.

Each pipeline here starts with a ``probe`` stage (the test plugin's
``side-effect`` processor, which appends to a log whenever it runs), so
"nothing executed" is checked for real: no log, no output, no state folder.
"""

from __future__ import annotations

import json
import re
import subprocess
import typing
from typing import Any

import attrs
import pytest
from conftest import Project

PREFIX = "pipekit: error: "
# The backends installed in this environment (file, and redis where
# pipekit-backend-redis is installed), as unknown-backend errors list them.
BACKENDS = ", ".join(__import__("pipekit").load_registry().backend_names())


def probe_stage(project: Project) -> dict[str, Any]:
    return {
        "name": "probe",
        "uses": "side-effect",
        "inputs": ["in.txt"],
        "outputs": ["work/probe.txt"],
        "params": {"log": str(project.root / "ran.log")},
    }


def upper_stage(**extra: Any) -> dict[str, Any]:
    st: dict[str, Any] = {
        "name": "upper",
        "uses": "upper",
        "inputs": ["work/probe.txt"],
        "outputs": ["out/upper.txt"],
    }
    st.update(extra)
    return {k: v for k, v in st.items() if v is not None}


def error_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """Assert the shape every config error shares; return the messages."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == "", proc.stdout
    lines = proc.stderr.splitlines()
    assert lines, "no message on stderr"
    for line in lines:
        assert line.startswith(PREFIX), line
    return [line[len(PREFIX) :] for line in lines]


def assert_nothing_ran(project: Project) -> None:
    assert not (project.root / "ran.log").exists(), "a stage ran"
    assert not (project.root / ".pipekit").exists(), "a state folder appeared"
    assert not (project.root / "work").exists()
    assert not (project.root / "out").exists()


@pytest.fixture
def proj(project: Project) -> Project:
    project.write("in.txt", "alpha\nbeta\n")
    return project


def stage_label(name: str, index: int, field: str) -> str:
    return f"stage {name!r} (stages[{index}]), field {field!r}"


# -- one bad field of one stage ----------------------------------------------

STAGE_CASES = [
    pytest.param(
        {"retry": {"attempts": "three"}},
        [("retry.attempts", "expected an integer, got a string 'three'")],
        id="retry-attempts-string",
    ),
    pytest.param(
        {"retry": {"attempts": True}},
        [("retry.attempts", "expected an integer, got a boolean True")],
        id="retry-attempts-bool",
    ),
    pytest.param(
        {"retry": {"attempts": 0}},
        [("retry.attempts", "must be greater than 0, got 0")],
        id="retry-attempts-zero",
    ),
    pytest.param(
        {"retry": {"backoff": -0.5}},
        [("retry.backoff", "must be 0 or more, got -0.5")],
        id="retry-backoff-negative",
    ),
    pytest.param(
        {"timeout": -1},
        [("timeout", "must be greater than 0, got -1")],
        id="timeout-negative",
    ),
    pytest.param(
        {"timeout": "soon"},
        [("timeout", "expected a number, got a string 'soon'")],
        id="timeout-string",
    ),
    pytest.param(
        {"inputs": "work/probe.txt"},
        [("inputs", "expected a list, got a string 'work/probe.txt'")],
        id="inputs-string",
    ),
    pytest.param(
        {"outputs": ["out/a.txt", 3]},
        [("outputs[1]", "expected a string, got an integer 3")],
        id="outputs-item-int",
    ),
    pytest.param(
        {"params": 3},
        [("params", "expected a table, got an integer 3")],
        id="params-not-a-table",
    ),
    pytest.param(
        {"retry": 3},
        [("retry", "expected a table, got an integer 3")],
        id="retry-not-a-table",
    ),
    pytest.param(
        {"input": ["work/probe.txt"]},
        [("input", "unknown field (did you mean 'inputs'?)")],
        id="unknown-stage-key-typo",
    ),
    pytest.param(
        {"colour": "red"},
        [
            (
                "colour",
                "unknown field; known fields: name, uses, inputs, outputs, params, "
                "after, retry, timeout, checkpoint, allow_network, network, record_retry, max_failures",
            )
        ],
        id="unknown-stage-key",
    ),
    pytest.param(
        {"retry": {"attempt": 3}},
        [("retry.attempt", "unknown field (did you mean 'attempts'?)")],
        id="unknown-retry-key",
    ),
    pytest.param(
        {"checkpoint": {"every_record": 10}},
        [("checkpoint.every_record", "unknown field (did you mean 'every_records'?)")],
        id="unknown-checkpoint-key",
    ),
    pytest.param(
        {"checkpoint": {"every_records": 0}},
        [("checkpoint.every_records", "must be greater than 0, got 0")],
        id="checkpoint-zero",
    ),
    pytest.param(
        {"record_retry": {"attempts": 0, "jitter": -1}},
        [
            ("record_retry.attempts", "must be greater than 0, got 0"),
            ("record_retry.jitter", "must be 0 or more, got -1"),
        ],
        id="record-retry-range",
    ),
    pytest.param(
        {"record_retry": {"attempt": 2}},
        [("record_retry.attempt", "unknown field (did you mean 'attempts'?)")],
        id="unknown-record-retry-key",
    ),
    pytest.param(
        {"max_failures": 1.5},
        [
            (
                "max_failures",
                "a fraction must be at least 0 and below 1, got 1.5 (write a count as an "
                'integer, e.g. 5, or a percentage as "5%")',
            )
        ],
        id="max-failures-fraction-too-big",
    ),
    pytest.param(
        {"max_failures": -2},
        [("max_failures", "a count must be 0 or more, got -2")],
        id="max-failures-negative",
    ),
    pytest.param(
        {"max_failures": "five"},
        [
            (
                "max_failures",
                'expected a count (e.g. 10), a fraction (e.g. 0.01) or a percentage (e.g. "1%"), '
                "got 'five'",
            )
        ],
        id="max-failures-bad-string",
    ),
    pytest.param(
        {"max_failures": True},
        [
            (
                "max_failures",
                "expected a count (integer), a fraction (number below 1) or a percentage "
                '(string such as "5%"), got a boolean True',
            )
        ],
        id="max-failures-bool",
    ),
    pytest.param(
        {"uses": None},
        [("uses", "required field missing")],
        id="uses-missing",
    ),
    pytest.param(
        {"uses": "filter", "params": {"pattern": 1}},
        [("params.pattern", "expected a string, got an integer 1")],
        id="filter-param-wrong-type",
    ),
    pytest.param(
        {"uses": "filter", "params": {"patern": "x"}},
        [
            ("params.pattern", "required field missing"),
            ("params.patern", "unknown field (did you mean 'pattern'?)"),
        ],
        id="filter-param-typo",
    ),
    pytest.param(
        {"uses": "filter", "params": {"pattern": "(unclosed"}},
        [
            (
                "params.pattern",
                "not a valid regular expression: missing ), unterminated subpattern at position 0",
            )
        ],
        id="filter-param-bad-regex",
    ),
    pytest.param(
        {"uses": "filter", "params": {"pattern": "x", "keep": "yes"}},
        [("params.keep", "expected true or false, got a string 'yes'")],
        id="filter-param-bool",
    ),
    pytest.param(
        {"params": {"foo": 1, "bar": 2}},
        [("params", "this processor takes no params; remove 'bar', 'foo'")],
        id="params-for-processor-without-params",
    ),
    pytest.param(
        {"inputs": ["nowhere.txt"]},
        [("inputs", "'nowhere.txt' does not exist and no stage produces it")],
        id="missing-input",
    ),
    pytest.param(
        {"inputs": ["in.txt"], "outputs": ["work/probe.txt"]},
        [
            (
                "outputs",
                "'work/probe.txt' is also written by stage 'probe' (stages[0]); "
                "each output must have one writer",
            )
        ],
        id="two-writers",
    ),
    pytest.param(
        {"inputs": ["in.txt"], "outputs": ["./work/../work/probe.txt"]},
        [
            (
                "outputs",
                "'work/probe.txt' is also written by stage 'probe' (stages[0]); "
                "each output must have one writer",
            )
        ],
        id="two-writers-spelled-differently",
    ),
    pytest.param(
        {"after": ["prob"]},
        [("after", "unknown stage 'prob' (did you mean 'probe'?); stages: probe, upper")],
        id="unknown-after",
    ),
    pytest.param(
        {"after": ["upper"]},
        [("after", "a stage cannot run after itself")],
        id="after-itself",
    ),
    pytest.param(
        {"outputs": ["out/a.txt", "out/b.txt"]},
        [("outputs", "record stage 'upper' needs exactly one output, got 2")],
        id="record-stage-two-outputs",
    ),
]


@pytest.mark.parametrize(("extra", "expected"), STAGE_CASES)
def test_a_bad_stage_field_is_one_line_naming_file_stage_and_field(
    proj: Project, extra: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    proj.pipeline([probe_stage(proj), upper_stage(**extra)])
    messages = error_lines(proj.cli("run", "--json"))
    file = proj.file.resolve()
    assert messages == [
        f"{file}: {stage_label('upper', 1, field)}: {msg}" for field, msg in expected
    ]
    assert_nothing_ran(proj)


def test_unknown_processor_lists_the_registered_ones_and_suggests_a_close_match(
    proj: Project,
) -> None:
    proj.pipeline([probe_stage(proj), upper_stage(uses="uper")])
    [message] = error_lines(proj.cli("run"))
    head = f"{proj.file.resolve()}: {stage_label('upper', 1, 'uses')}: "
    assert message.startswith(
        head + "unknown stage processor 'uper' (did you mean 'upper'?); registered: "
    ), message
    registered = message.rpartition("registered: ")[2].split(", ")
    assert registered == sorted(registered)
    # built-ins, the third-party plugin and the test plugin alike
    assert {
        "copy",
        "concat",
        "upper",
        "lower",
        "filter",
        "replace",
        "shell",
        "reverse",
        "linecount",
        "side-effect",
    } <= set(registered)
    assert_nothing_ran(proj)


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("bad name", "'bad name' is not a valid stage name (letters, digits, '-', '_')"),
        ("upper/1", "'upper/1' is not a valid stage name (letters, digits, '-', '_')"),
        ("", "'' is not a valid stage name (letters, digits, '-', '_')"),
    ],
)
def test_invalid_stage_name_characters(proj: Project, name: str, why: str) -> None:
    proj.pipeline([probe_stage(proj), upper_stage(name=name)])
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label(name, 1, 'name')}: {why}"
    ]
    assert_nothing_ran(proj)


def test_duplicate_stage_names(proj: Project) -> None:
    proj.pipeline([probe_stage(proj), upper_stage(name="probe")])
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('probe', 1, 'name')}: duplicate stage name: "
        "stages[0] is also named 'probe'; stage names must be unique"
    ]
    assert_nothing_ran(proj)


def test_dependency_cycle_names_the_stages_in_it(proj: Project) -> None:
    proj.pipeline(
        [
            probe_stage(proj),
            {"name": "a", "uses": "copy", "inputs": ["c.txt"], "outputs": ["a.txt"]},
            {"name": "b", "uses": "copy", "inputs": ["a.txt"], "outputs": ["b.txt"]},
            {
                "name": "c",
                "uses": "copy",
                "inputs": ["in.txt"],
                "outputs": ["c.txt"],
                "after": ["b"],
            },
        ]
    )
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('a', 1, 'inputs')}: dependency cycle "
        "a -> b -> c -> a ('b' reads 'a.txt' from 'a'; 'c' runs after 'b'; "
        "'a' reads 'c.txt' from 'c')"
    ]
    assert_nothing_ran(proj)


def test_a_cycle_made_only_of_after_edges(proj: Project) -> None:
    proj.pipeline(
        [
            probe_stage(proj),
            {
                "name": "x",
                "uses": "copy",
                "inputs": ["in.txt"],
                "outputs": ["x.txt"],
                "after": ["y"],
            },
            {
                "name": "y",
                "uses": "copy",
                "inputs": ["in.txt"],
                "outputs": ["y.txt"],
                "after": ["x"],
            },
        ]
    )
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('x', 1, 'after')}: dependency cycle "
        "x -> y -> x ('y' runs after 'x'; 'x' runs after 'y')"
    ]


# -- top level -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("top", "expected"),
    [
        pytest.param(
            {"nmae": "demo"},
            "field 'nmae': unknown field (did you mean 'name'?)",
            id="unknown-top-level-typo",
        ),
        pytest.param(
            {"workers": 4},
            "field 'workers': unknown field; known fields: stages, name, state_dir, backend, network",
            id="unknown-top-level",
        ),
        pytest.param(
            {"state_dir": 3},
            "field 'state_dir': expected a string, got an integer 3",
            id="state-dir-int",
        ),
        pytest.param(
            {"backend": {"name": "file", "option": {}}},
            "field 'backend.option': unknown field (did you mean 'options'?)",
            id="unknown-backend-key",
        ),
        pytest.param(
            {"backend": {"name": "nope"}},
            f"field 'backend.name': unknown backend 'nope'; registered: {BACKENDS}",
            id="unknown-backend-in-file",
        ),
        pytest.param(
            {"backend": {"name": "fil"}},
            "field 'backend.name': unknown backend 'fil' (did you mean 'file'?); "
            f"registered: {BACKENDS}",
            id="backend-typo-in-file",
        ),
    ],
)
def test_top_level_errors(proj: Project, top: dict[str, Any], expected: str) -> None:
    proj.pipeline([probe_stage(proj), upper_stage()], **top)
    assert error_lines(proj.cli("run")) == [f"{proj.file.resolve()}: {expected}"]
    assert_nothing_ran(proj)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('name = "x"\n', "no stages: add at least one [[stages]] table"),
        ("stages = []\n", "no stages: add at least one [[stages]] table"),
        ('stages = "copy"\n', "field 'stages': expected a list, got a string 'copy'"),
        ("stages = [1]\n", "stages[0]: expected a table, got an integer 1"),
        ('[[stages]]\nuses = "upper"\n', "stages[0], field 'name': required field missing"),
    ],
)
def test_shape_of_the_stages_list(proj: Project, text: str, expected: str) -> None:
    proj.file.write_text(text)
    assert error_lines(proj.cli("run")) == [f"{proj.file.resolve()}: {expected}"]
    assert_nothing_ran(proj)


def test_every_problem_is_reported_at_once_in_file_order(proj: Project) -> None:
    proj.pipeline(
        [
            probe_stage(proj),
            upper_stage(retry={"attempts": "three", "backoff": -1}, timeout=-1),
            {
                "name": "bad name",
                "uses": "lower",
                "inputs": ["in.txt"],
                "outputs": ["l.txt"],
                "timeout": 0,
            },
        ],
        nmae="demo",
    )
    file = proj.file.resolve()
    assert error_lines(proj.cli("run")) == [
        f"{file}: field 'nmae': unknown field (did you mean 'name'?)",
        f"{file}: {stage_label('upper', 1, 'retry.attempts')}: "
        "expected an integer, got a string 'three'",
        f"{file}: {stage_label('upper', 1, 'retry.backoff')}: must be 0 or more, got -1",
        f"{file}: {stage_label('upper', 1, 'timeout')}: must be greater than 0, got -1",
        f"{file}: {stage_label('bad name', 2, 'name')}: "
        "'bad name' is not a valid stage name (letters, digits, '-', '_')",
        f"{file}: {stage_label('bad name', 2, 'timeout')}: must be greater than 0, got 0",
    ]
    assert_nothing_ran(proj)


def test_semantic_problems_are_reported_together(proj: Project) -> None:
    proj.pipeline(
        [
            probe_stage(proj),
            upper_stage(uses="uppr"),
            {"name": "probe", "uses": "copy", "inputs": ["in.txt"], "outputs": ["c.txt"]},
            {
                "name": "f",
                "uses": "filter",
                "inputs": ["gone.txt"],
                "outputs": ["work/probe.txt"],
                "params": {"pattern": "["},
                "after": ["nobody"],
            },
            {
                "name": "g",
                "uses": "copy",
                "inputs": ["gone.txt"],
                "outputs": ["work/probe.txt"],
                "after": ["nobody"],
            },
        ],
        backend={"name": "nope"},
    )
    file = proj.file.resolve()
    messages = error_lines(proj.cli("run"))
    assert len(messages) == 7, messages
    assert messages[0] == (
        f"{file}: field 'backend.name': unknown backend 'nope'; registered: {BACKENDS}"
    )
    assert messages[1].startswith(
        f"{file}: {stage_label('upper', 1, 'uses')}: "
        "unknown stage processor 'uppr' (did you mean 'upper'?)"
    )
    assert messages[2].startswith(f"{file}: {stage_label('probe', 2, 'name')}: duplicate")
    assert messages[3] == (
        f"{file}: {stage_label('f', 3, 'params.pattern')}: not a valid "
        "regular expression: unterminated character set at position 0"
    )
    assert messages[4:] == [
        f"{file}: {stage_label('g', 4, 'outputs')}: 'work/probe.txt' is also written by stage "
        "'probe' (stages[0]); each output must have one writer",
        f"{file}: {stage_label('g', 4, 'inputs')}: 'gone.txt' does not exist and no stage "
        "produces it",
        f"{file}: {stage_label('g', 4, 'after')}: unknown stage 'nobody'; "
        "stages: probe, upper, f, g",
    ]
    assert_nothing_ran(proj)


# -- syntax errors and finding the file ----------------------------------------


def test_toml_syntax_error(proj: Project) -> None:
    proj.file.write_text('[[stages]]\nname = "a"\nuses = \n')
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: not valid TOML: Invalid value (at line 3, column 8)"
    ]
    assert_nothing_ran(proj)


def test_json_syntax_error(proj: Project) -> None:
    file = proj.root / "pipeline.json"
    file.write_text('{"stages": [\n  {"name": "a",}\n]}\n')
    [message] = error_lines(proj.cli("run"))
    assert message.startswith(f"{file.resolve()}: not valid JSON: "), message
    assert re.search(r"line 2 column \d+", message), message
    assert_nothing_ran(proj)


def test_json_pipeline_reports_schema_errors_like_toml(proj: Project) -> None:
    file = proj.root / "pipeline.json"
    file.write_text(
        json.dumps(
            {
                "stages": [
                    probe_stage(proj),
                    upper_stage(timeout="soon", inputz=["x"]),
                ]
            }
        )
    )
    assert error_lines(proj.cli("run")) == [
        f"{file.resolve()}: {stage_label('upper', 1, 'timeout')}: "
        "expected a number, got a string 'soon'",
        f"{file.resolve()}: {stage_label('upper', 1, 'inputz')}: "
        "unknown field (did you mean 'inputs'?)",
    ]
    assert_nothing_ran(proj)


def test_json_top_level_must_be_an_object(proj: Project) -> None:
    file = proj.root / "pipeline.json"
    file.write_text("[1, 2]")
    assert error_lines(proj.cli("run")) == [
        f"{file.resolve()}: the top level must be a table/object"
    ]


def test_no_pipeline_file_in_the_folder(proj: Project) -> None:
    assert error_lines(proj.cli("run")) == [
        f"no pipeline file in {proj.root}: looked for pipekit.toml, pipeline.toml, "
        "pipeline.json; name one with -f FILE"
    ]
    assert_nothing_ran(proj)


@pytest.mark.parametrize("command", ["run", "status"])
def test_dash_f_naming_a_missing_file(proj: Project, command: str) -> None:
    assert error_lines(proj.cli(command, "-f", "elsewhere.toml")) == [
        f"{proj.root.resolve() / 'elsewhere.toml'}: no such pipeline file"
    ]
    assert_nothing_ran(proj)


def test_dash_f_naming_a_folder(proj: Project) -> None:
    (proj.root / "sub").mkdir()
    assert error_lines(proj.cli("run", "-f", "sub")) == [
        f"{proj.root.resolve() / 'sub'}: is a folder, not a pipeline file"
    ]


# -- command-line options ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "top", "expected"),
    [
        pytest.param(
            ["--backend", "nope"],
            {},
            f"--backend: unknown backend 'nope'; registered: {BACKENDS}",
            id="backend-flag",
        ),
        pytest.param(
            ["--backend", "nope"],
            {"backend": {"name": "file"}},
            f"--backend: unknown backend 'nope'; registered: {BACKENDS}",
            id="backend-flag-overrides-file",
        ),
        pytest.param(
            ["--force", "uper"],
            {},
            "--force: unknown stage 'uper' (did you mean 'upper'?); stages: probe, upper",
            id="force-unknown",
        ),
        pytest.param(["--jobs", "0"], {}, "--jobs must be 1 or more", id="jobs-zero"),
    ],
)
def test_bad_command_line_options(
    proj: Project, args: list[str], top: dict[str, Any], expected: str
) -> None:
    proj.pipeline([probe_stage(proj), upper_stage()], **top)
    assert error_lines(proj.cli("run", *args)) == [expected]
    assert_nothing_ran(proj)


def test_status_reports_config_errors_the_same_way(proj: Project) -> None:
    proj.pipeline([probe_stage(proj), upper_stage(timeout=-1)])
    assert error_lines(proj.cli("status", "--json")) == [
        f"{proj.file.resolve()}: {stage_label('upper', 1, 'timeout')}: "
        "must be greater than 0, got -1"
    ]
    assert_nothing_ran(proj)


def test_a_valid_pipeline_after_fixing_runs(proj: Project) -> None:
    """The probe stage is a real one: once the error is fixed, it runs."""
    proj.pipeline([probe_stage(proj), upper_stage(timeout=-1)])
    error_lines(proj.cli("run"))
    proj.pipeline([probe_stage(proj), upper_stage(timeout=30)])
    summary = proj.run_json()
    assert summary["status"] == "ok"
    assert proj.read("out/upper.txt") == "ALPHA\nBETA\n"
    assert len(proj.read("ran.log").splitlines()) == 1


# -- in-process: the same messages from the API ---------------------------------


def test_load_pipeline_raises_config_error_with_the_same_lines(proj: Project) -> None:
    import pipekit
    from pipekit.plan._pipeline import load_pipeline
    from pipekit.plugins._manager import load_registry

    proj.pipeline([probe_stage(proj), upper_stage(retry={"attempts": "three"})])
    with pytest.raises(pipekit.ConfigError) as info:
        load_pipeline(proj.file, load_registry())
    assert str(info.value) == (
        f"{proj.file.resolve()}: {stage_label('upper', 1, 'retry.attempts')}: "
        "expected an integer, got a string 'three'"
    )
    assert info.value.exit_code == 2


def test_structure_params_names_the_field(proj: Project) -> None:
    import pipekit
    from pipekit.plan._config import structure_params
    from pipekit_stages.records import FilterParams

    assert structure_params(FilterParams, {"pattern": "a"}) == FilterParams(pattern="a")
    with pytest.raises(pipekit.ConfigError, match=r"^params, field 'pattern': not a valid"):
        structure_params(FilterParams, {"pattern": "("})
    with pytest.raises(pipekit.ConfigError, match=r"takes no params; remove 'x'"):
        structure_params(None, {"x": 1})


def test_validators_are_on_again_after_a_load(proj: Project) -> None:
    """Loading switches attrs validators off while it structures; they must
    be back on afterwards, whatever happened."""
    import attrs
    from pipekit.plan._config import RetryPolicy
    from pipekit.plan._pipeline import load_pipeline
    from pipekit.plugins._manager import load_registry

    proj.pipeline([probe_stage(proj), upper_stage(timeout=-1)])
    with pytest.raises(Exception):
        load_pipeline(proj.file, load_registry())
    assert attrs.validators.get_disabled() is False
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)


# -- outputs that would destroy the pipeline itself (issue 20 item 5) ---------


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        pytest.param(
            "pipekit.toml", "'pipekit.toml' would overwrite the pipeline file", id="pipeline-file"
        ),
        pytest.param(
            "./sub/../pipekit.toml",
            "'pipekit.toml' would overwrite the pipeline file",
            id="pipeline-file-spelled-differently",
        ),
        pytest.param(
            ".pipekit/state.json",
            "'.pipekit/state.json' is inside the state folder '.pipekit'",
            id="state-file",
        ),
        pytest.param(
            ".pipekit/runs/x.json",
            "'.pipekit/runs/x.json' is inside the state folder '.pipekit'",
            id="inside-state-dir",
        ),
        pytest.param(
            ".pipekit", "'.pipekit' is inside the state folder '.pipekit'", id="the-state-dir"
        ),
    ],
)
def test_an_output_that_would_overwrite_the_pipeline_or_its_state(
    proj: Project, output: str, expected: str
) -> None:
    original = proj.pipeline([probe_stage(proj), upper_stage(outputs=[output])]).read_text()
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('upper', 1, 'outputs')}: {expected}"
    ]
    assert_nothing_ran(proj)
    assert proj.file.read_text() == original


def test_an_output_inside_a_state_dir_set_in_the_file(proj: Project) -> None:
    proj.pipeline(
        [probe_stage(proj), upper_stage(outputs=["var/state/state.json"])], state_dir="var/state"
    )
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('upper', 1, 'outputs')}: "
        "'var/state/state.json' is inside the state folder 'var/state'"
    ]
    assert_nothing_ran(proj)
    assert not (proj.root / "var").exists()


# -- mistakes once caught late or not at all (issue 20 item 14) ---------------

LATE_CASES = [
    pytest.param(
        ["outdir/keep.txt"],
        {"outputs": ["outdir"]},
        [
            (
                "outputs",
                "'outdir' is a folder: write it as 'outdir/' (a folder's path ends with '/')",
            )
        ],
        id="output-existing-folder",
    ),
    pytest.param(
        [],
        {"outputs": ["."]},
        [("outputs", "'.' is the pipeline's folder; an output is a file")],
        id="output-dot",
    ),
    pytest.param(
        [],
        {"outputs": [""]},
        [("outputs", "an empty path")],
        id="output-empty",
    ),
    pytest.param(
        [],
        {"outputs": ["in.txt/x.txt"]},
        [("outputs", "'in.txt/x.txt' is under 'in.txt', which is a file")],
        id="output-under-a-file",
    ),
    pytest.param(
        [],
        {"outputs": ["work/probe.txt/x.txt"]},
        [
            (
                "outputs",
                "'work/probe.txt/x.txt' is inside 'work/probe.txt', "
                "an output of stage 'probe' (stages[0])",
            )
        ],
        id="output-inside-another-stages-output",
    ),
    pytest.param(
        [],
        {"inputs": [""]},
        [("inputs", "an empty path")],
        id="input-empty",
    ),
    pytest.param(
        ["indir/a.txt"],
        {"inputs": ["indir"]},
        [("inputs", "'indir' is a folder: write it as 'indir/' (a folder's path ends with '/')")],
        id="input-folder",
    ),
    *[
        pytest.param(
            [],
            extra,
            [(field, "must be a finite number of seconds, got " + shown)],
            id=f"{field}-{shown}",
        )
        for extra, field, shown in [
            ({"timeout": float("nan")}, "timeout", "nan"),
            ({"timeout": float("inf")}, "timeout", "inf"),
            ({"checkpoint": {"every_seconds": float("nan")}}, "checkpoint.every_seconds", "nan"),
            ({"checkpoint": {"every_seconds": float("inf")}}, "checkpoint.every_seconds", "inf"),
            ({"retry": {"backoff": float("nan")}}, "retry.backoff", "nan"),
            ({"retry": {"backoff": float("inf")}}, "retry.backoff", "inf"),
            ({"retry": {"jitter": float("nan")}}, "retry.jitter", "nan"),
            ({"retry": {"jitter": float("-inf")}}, "retry.jitter", "-inf"),
            ({"retry": {"max_backoff": float("inf")}}, "retry.max_backoff", "inf"),
            ({"record_retry": {"backoff": float("nan")}}, "record_retry.backoff", "nan"),
            ({"record_retry": {"jitter": float("inf")}}, "record_retry.jitter", "inf"),
        ]
    ],
    *[
        pytest.param(
            [],
            extra,
            [(field, "must be at most 1000000000 seconds (about 31 years), got 1e+300")],
            id=f"{field}-overflow",
        )
        for extra, field in [
            ({"timeout": 1e300}, "timeout"),
            ({"checkpoint": {"every_seconds": 1e300}}, "checkpoint.every_seconds"),
            ({"retry": {"backoff": 1e300}}, "retry.backoff"),
            ({"retry": {"jitter": 1e300}}, "retry.jitter"),
        ]
    ],
    pytest.param(
        [],
        {"timeout": 10**400},
        [("timeout", "expected a number, got an integer of 401 digits (too large)")],
        id="timeout-integer-too-large-for-a-float",
    ),
    pytest.param(
        [],
        {"checkpoint": {"every_seconds": -5}},
        [("checkpoint.every_seconds", "must be greater than 0, got -5")],
        id="every-seconds-negative",
    ),
]


@pytest.mark.parametrize(("files", "extra", "expected"), LATE_CASES)
def test_a_mistake_once_caught_late_is_a_config_error_at_load(
    proj: Project, files: list[str], extra: dict[str, Any], expected: list[tuple[str, str]]
) -> None:
    for name in files:
        proj.write(name, "x\n")
    proj.pipeline([probe_stage(proj), upper_stage(**extra)])
    messages = error_lines(proj.cli("run", "--json"))
    file = proj.file.resolve()
    assert messages == [
        f"{file}: {stage_label('upper', 1, field)}: {msg}" for field, msg in expected
    ]
    assert_nothing_ran(proj)


def test_an_output_holding_another_stages_output_is_reported_on_the_inner_one(
    proj: Project,
) -> None:
    proj.pipeline([probe_stage(proj), upper_stage(inputs=["in.txt"], outputs=["work"])])
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('probe', 0, 'outputs')}: 'work/probe.txt' is "
        "inside 'work', an output of stage 'upper' (stages[1])"
    ]
    assert_nothing_ran(proj)


def test_an_output_listed_twice_in_one_stage_is_one_clear_line(proj: Project) -> None:
    probe = probe_stage(proj)
    probe["outputs"] = ["work/probe.txt", "./work/probe.txt"]
    proj.pipeline([probe, upper_stage()])
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('probe', 0, 'outputs')}: "
        "'work/probe.txt' is listed twice"
    ]
    assert_nothing_ran(proj)


@pytest.mark.parametrize(
    ("files", "state_dir", "expected"),
    [
        pytest.param(["statefile"], "statefile", "'statefile' is a file, not a folder", id="file"),
        pytest.param(
            [], "in.txt/state", "'in.txt/state' is under 'in.txt', which is a file", id="under-file"
        ),
        pytest.param(
            [], ".", "'.' is the pipeline's folder; the state needs a folder of its own", id="dot"
        ),
    ],
)
def test_a_state_dir_that_cannot_be_a_folder(
    proj: Project, files: list[str], state_dir: str, expected: str
) -> None:
    for name in files:
        proj.write(name, "x\n")
    proj.pipeline([probe_stage(proj), upper_stage()], state_dir=state_dir)
    assert error_lines(proj.cli("run")) == [f"{proj.file.resolve()}: field 'state_dir': {expected}"]
    assert_nothing_ran(proj)


def test_toml_nested_too_deep_names_the_stage_and_field(proj: Project) -> None:
    proj.pipeline([probe_stage(proj), upper_stage()])
    depth = 1000
    text = proj.file.read_text() + "params = { x = " + "[" * depth + "]" * depth + " }\n"
    proj.file.write_text(text)
    line = text.count("\n")
    assert error_lines(proj.cli("run")) == [
        f"{proj.file.resolve()}: {stage_label('upper', 1, 'params')}: not valid TOML: "
        f"arrays or tables nested more than 400 levels deep (at line {line})"
    ]
    assert_nothing_ran(proj)


def test_toml_nested_too_deep_over_many_lines_names_the_line(proj: Project) -> None:
    """Brackets in strings and comments do not count; the line named is the
    one where the nesting goes past the parser's limit."""
    proj.pipeline([probe_stage(proj), upper_stage()])
    depth = 1000
    head = proj.file.read_text() + 'note = "[[[[" # [[[[\n'
    text = head + "params = { x = " + "[\n" * depth + "]" * depth + " }\n"
    proj.file.write_text(text)
    lines = error_lines(proj.cli("run"))
    assert len(lines) == 1 and lines[0].startswith(f"{proj.file.resolve()}: stage 'upper'")
    line = int(lines[0].rsplit("at line ", 1)[1].rstrip(")"))
    assert head.count("\n") + 300 < line < head.count("\n") + depth
    assert_nothing_ran(proj)


def test_json_nested_too_deep(proj: Project) -> None:
    file = proj.root / "pipeline.json"
    # deeper than any Python's JSON parser goes (3.13's parses 5,000 levels)
    file.write_text('{"stages": [' + "[" * 100_000 + "]" * 100_000 + "]}")
    [message] = error_lines(proj.cli("run"))
    assert message.startswith(f"{file.resolve()}: not valid JSON: "), message
    assert_nothing_ran(proj)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '{"stages": [PROBE, {"name": "upper", "uses": "upper", "inputs": ["work/probe.txt"],'
            ' "outputs": ["a.txt"], "outputs": ["b.txt"]}]}',
            "stage 'upper' (stages[1]), field 'outputs': given twice",
            id="in-a-stage",
        ),
        pytest.param(
            '{"name": "a", "stages": [PROBE], "name": "b"}',
            "field 'name': given twice",
            id="top-level",
        ),
        pytest.param(
            '{"stages": [PROBE, {"name": "upper", "uses": "upper", "inputs": ["work/probe.txt"],'
            ' "outputs": ["a.txt"], "retry": {"attempts": 2, "attempts": 3}}]}',
            "stage 'upper' (stages[1]), field 'retry.attempts': given twice",
            id="nested",
        ),
    ],
)
def test_a_json_key_given_twice(proj: Project, text: str, expected: str) -> None:
    file = proj.root / "pipeline.json"
    file.write_text(text.replace("PROBE", json.dumps(probe_stage(proj))))
    assert error_lines(proj.cli("run")) == [f"{file.resolve()}: {expected}"]
    assert_nothing_ran(proj)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("nan", "must be a finite number of seconds, got nan"),
        ("inf", "must be a finite number of seconds, got inf"),
        ("-1", "must be 0 or more, got -1"),
        ("1e300", "must be at most 1000000000 seconds (about 31 years), got 1e+300"),
    ],
)
def test_bad_lock_timeout(proj: Project, value: str, expected: str) -> None:
    proj.pipeline([probe_stage(proj), upper_stage()])
    assert error_lines(proj.cli("run", "--lock-timeout", value)) == [f"--lock-timeout: {expected}"]
    assert_nothing_ran(proj)


# -- values come out with the types their fields declare -----------------------
# (behaviour once checked in tests/core/test_exact_structure.py, which went
# with the second structuring engine: cattrs alone structures config now)


def test_values_are_structured_into_their_declared_types() -> None:
    from pipekit.plan import _config as config
    from pipekit_stages.shell import ShellParams

    raw = {
        "name": "s",
        "uses": "shell",
        "inputs": ["a"],
        "outputs": ["b"],
        "params": {"cmd": "cp {input} {output}", "env": {"A": "1"}},
        "retry": {"attempts": 3, "backoff": 1},
        "timeout": 5,
        "max_failures": "5%",
    }
    stage = config.structure_valid(raw, config.StageConfig)
    assert type(stage.timeout) is float and stage.timeout == 5.0  # an integer for a float
    assert type(stage.retry.backoff) is float and stage.retry == config.RetryPolicy(3, 1.0)
    assert stage.inputs == ["a"] and stage.outputs == ["b"]
    assert stage.max_failures == "5%"
    params = config.structure_params(ShellParams, stage.params)
    assert params == ShellParams(cmd="cp {input} {output}", env={"A": "1"})
    assert config.unstructure_params(params) == {
        "cmd": "cp {input} {output}",
        "env": {"A": "1"},
        "env_pass": [],
    }


@attrs.define
class Odd:
    pair: tuple[int, int] = (0, 0)
    tags: frozenset[str] = frozenset()
    mode: typing.Literal["a", "b"] = "a"


def test_params_may_use_other_collection_types() -> None:
    import pipekit
    from pipekit import _json
    from pipekit.plan import _config as config

    odd = config.structure_params(Odd, {"pair": [1, 2], "tags": ["b", "a"], "mode": "b"})
    assert odd == Odd((1, 2), frozenset({"a", "b"}), "b")
    assert _json.canonical(config.unstructure_params(odd)) == (
        b'{"mode":"b","pair":[1,2],"tags":["a","b"]}'
    )
    with pytest.raises(pipekit.ConfigError, match=r"^params, field 'pair': expected a list of 2"):
        config.structure_params(Odd, {"pair": [1, 2, 3]})


def test_a_table_of_strings_refuses_a_number() -> None:
    import pipekit
    from pipekit.plan import _config as config
    from pipekit_stages.shell import ShellParams

    with pytest.raises(pipekit.ConfigError) as info:
        config.structure_params(ShellParams, {"cmd": "x", "env": {"A": 1}})
    assert str(info.value) == "params, field 'env.A': expected a string, got an integer 1"
