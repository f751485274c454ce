"""The agent action runner against real step processes (spec section 1)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from localnode.cluster import AGENT_PYPKG, HOST_VENV
from localnode.runner import ActionRun, AgentSpec


def step(path: Path, body: str, executable: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(body).lstrip())
    path.chmod(0o755 if executable else 0o644)


@pytest.fixture
def agent(tmp_path: Path) -> AgentSpec:
    base, mod, state = tmp_path / "base", tmp_path / "module", tmp_path / "state"
    for d in (base, mod, state):
        d.mkdir()
    (state / "environment").write_text("MODULE_ID=test1\n")
    env = {"PATH": f"{HOST_VENV / 'bin'}:/usr/bin:/bin", "PYTHONPATH": str(AGENT_PYPKG),
           "AGENT_STATE_DIR": str(state), "FROM_PROCESS": "process", "MODULE_ID": "overridden"}
    return AgentSpec("module/test1", state, [base, mod], env=env)


def run(agent: AgentSpec, action: str, data: object = None, progress: list | None = None):
    events = progress if progress is not None else []
    return ActionRun(agent, action, data, "tid-1", user="admin", progress=lambda s, p: events.append((s, p))).run()


def test_steps_merge_sort_override_and_skip(agent: AgentSpec) -> None:
    base, mod = agent.actions_dirs
    step(base / "act" / "10base", "#!/bin/sh\necho base10\n")
    step(base / "act" / "50over", "#!/bin/sh\necho base50\n")
    step(mod / "act" / "50over", "#!/bin/sh\necho module50\n")  # later dir wins
    step(mod / "act" / "20mod", "#!/bin/sh\necho mod20\n")
    step(mod / "act" / "30noexec", "#!/bin/sh\necho never\n", executable=False)
    step(mod / "act" / "9last", "#!/bin/sh\necho nine\n")  # byte order: "9" > "5"
    res = run(agent, "act")
    assert res.status == "completed" and res.exit_code == 0
    assert res.output.split() == ["base10", "mod20", "module50", "nine"]


def test_cwd_stdin_null_and_agent_variables(agent: AgentSpec) -> None:
    step(agent.actions_dirs[1] / "act" / "10show", """
        #!/bin/sh
        pwd
        cat
        echo
        echo "$AGENT_TASK_ID $AGENT_TASK_ACTION $AGENT_TASK_USER $AGENT_COMFD $FROM_PROCESS $MODULE_ID"
        """)
    res = run(agent, "act")
    lines = res.output.splitlines()
    assert lines[0] == str(agent.state_dir)
    assert lines[1] == "null"
    # environment file values override the process environment
    assert lines[2] == "tid-1 act admin 3 process test1"


def test_environment_reread_before_each_step(agent: AgentSpec) -> None:
    step(agent.actions_dirs[1] / "act" / "10set", """
        #!/usr/bin/env python3
        import os, agent
        agent.set_env("COLOR", "blue")
        print("step1 sees", os.environ.get("COLOR"))
        """)
    step(agent.actions_dirs[1] / "act" / "20get", """
        #!/bin/sh
        echo "step2 sees $COLOR"
        """)
    res = run(agent, "act")
    assert res.output.splitlines() == ["step1 sees None", "step2 sees blue"], res.error


def test_fd3_progress_and_weights(agent: AgentSpec) -> None:
    step(agent.actions_dirs[1] / "act" / "10a", """
        #!/bin/sh
        echo "set-weight 10a 0" >&3
        echo "set-weight 20b 3" >&3
        """)
    step(agent.actions_dirs[1] / "act" / "20b", """
        #!/bin/sh
        echo "set-progress 50" >&3
        """)
    events: list = []
    res = run(agent, "act", progress=events)
    assert res.status == "completed"
    # 20b carries all the weight: half of it done is 50 % overall
    assert ("running", 50) in events


def test_failure_stops_the_action_and_keeps_output(agent: AgentSpec) -> None:
    step(agent.actions_dirs[1] / "act" / "10ok", "#!/bin/sh\necho one; echo err1 >&2\n")
    step(agent.actions_dirs[1] / "act" / "20fail", "#!/bin/sh\necho two; echo err2 >&2; exit 7\n")
    step(agent.actions_dirs[1] / "act" / "30never", "#!/bin/sh\necho three\n")
    res = run(agent, "act")
    assert (res.status, res.exit_code) == ("aborted", 7)
    assert res.output.split() == ["one", "two"]
    assert res.error.split() == ["err1", "err2"]


def test_input_schema_errors_have_the_ns8_shape(agent: AgentSpec) -> None:
    schema = {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}}
    (agent.actions_dirs[1] / "act").mkdir(parents=True)
    (agent.actions_dirs[1] / "act" / "validate-input.json").write_text(json.dumps(schema))
    step(agent.actions_dirs[1] / "act" / "10never", "#!/bin/sh\necho ran\n")
    res = run(agent, "act", {"name": "Bad1"})
    assert (res.status, res.exit_code) == ("validation-failed", 10)
    errors = json.loads(res.output)
    assert errors == [{"parameter": "name", "error": "name_pattern", "value": "Bad1", "field": "name"}]
    assert res.error.startswith("Validation errors: [name: ")
    res = run(agent, "act", {})
    assert json.loads(res.output)[0]["error"] == "(root)_required"
    assert json.loads(res.output)[0]["field"] == "(root)"


def test_custom_validation_failed_exit_zero_becomes_10(agent: AgentSpec) -> None:
    step(agent.actions_dirs[1] / "act" / "10check", """
        #!/bin/sh
        echo "set-status validation-failed" >&3
        echo '[{"field":"x","parameter":"x","value":"","error":"x_bad"}]'
        """)
    step(agent.actions_dirs[1] / "act" / "20never", "#!/bin/sh\necho ran\n")
    res = run(agent, "act")
    assert (res.status, res.exit_code) == ("validation-failed", 10)
    assert "ran" not in res.output


def test_output_schema_failure_aborts_with_1(agent: AgentSpec) -> None:
    (agent.actions_dirs[1] / "act").mkdir(parents=True)
    (agent.actions_dirs[1] / "act" / "validate-output.json").write_text(json.dumps({"type": "object"}))
    step(agent.actions_dirs[1] / "act" / "10list", "#!/bin/sh\necho '[]'\n")
    res = run(agent, "act")
    assert (res.status, res.exit_code) == ("aborted", 1)
    assert "Validation errors" in res.error
    step(agent.actions_dirs[1] / "act" / "10list", "#!/bin/sh\necho not json\n")
    res = run(agent, "act")
    assert (res.status, res.exit_code) == ("aborted", 1)
    assert "JSON unmarshal error" in res.error


def test_undefined_action(agent: AgentSpec) -> None:
    res = run(agent, "nothing-here")
    assert (res.status, res.exit_code) == ("aborted", 8)
    assert res.error == "Action nothing-here is not defined\n"
