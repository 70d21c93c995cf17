"""The lazy public API of `lenvm_rl` and a light `lenvm --help`: neither imports torch, transformers nor trl.

The import checks run in fresh subprocesses, since this test process has torch loaded already (conftest).
"""

from __future__ import annotations

import inspect
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import lenvm_rl

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "trl", "peft", "datasets", "accelerate")


def _python(code: str, **env) -> str:
    full_env = {**os.environ, "PYTHONPATH": str(REPO), **env}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env=full_env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _heavy_loaded(code_before: str) -> list[str]:
    """Heavy top-level packages present in ``sys.modules`` after running ``code_before`` in a fresh process."""
    out = _python(code_before + f"\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    return json.loads(out.strip().splitlines()[-1])


def test_every_public_name_resolves():
    assert lenvm_rl.__all__ and len(set(lenvm_rl.__all__)) == len(lenvm_rl.__all__)
    for name in lenvm_rl.__all__:
        assert getattr(lenvm_rl, name) is not None, name
        assert name in dir(lenvm_rl)
    from lenvm_rl.critic import LengthCritic
    from lenvm_rl.returns import gae

    assert lenvm_rl.LengthCritic is LengthCritic and lenvm_rl.gae is gae  # the same objects, not copies
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        lenvm_rl.not_a_name  # noqa: B018


def test_star_import_gives_all_names():
    namespace: dict = {}
    exec("from lenvm_rl import *", namespace)
    assert set(lenvm_rl.__all__) <= set(namespace)


def test_every_reward_function_is_exported():
    """Reward functions added to lenvm_rl.rl.rewards must be added to the lazy map in lenvm_rl/__init__.py too."""
    from lenvm_rl.rl import rewards

    defined = [
        name
        for name, f in inspect.getmembers(rewards, inspect.isfunction)
        if f.__module__ == rewards.__name__
        and not name.startswith("_")
        and ("completions" in inspect.signature(f).parameters or "completion_ids" in inspect.signature(f).parameters)
    ]
    assert {"critic_length_return", "group_length_reward"} <= set(defined)
    missing = sorted(set(defined) - set(lenvm_rl.__all__))
    assert not missing, f"add {missing} to _IMPORT_STRUCTURE['rl.rewards'] in lenvm_rl/__init__.py"


def test_import_lenvm_rl_is_light():
    assert _heavy_loaded("import lenvm_rl\nassert lenvm_rl.__version__\ndir(lenvm_rl)") == []
    # Touching a public name imports what it needs, then.
    assert "torch" in _heavy_loaded("import lenvm_rl\nlenvm_rl.remaining_to_value")


def test_cli_help_imports_no_heavy_package():
    code = """
from lenvm_rl.cli import main
assert main(["--help"]) == 0
assert main(["eval", "--help"]) == 0
"""
    assert _heavy_loaded(code) == []


def test_subcommand_help_imports_only_trls_parser():
    """`lenvm SUB --help` builds SUB's TrlParser: TRL's own HfArgumentParser, without torch or transformers."""
    code = """
import json, sys
from lenvm_rl.cli import main
for cmd in ("rollouts", "predict", "generate", "merge"):
    try:
        main([cmd, "--help"])
    except SystemExit as e:
        assert e.code == 0, (cmd, e.code)
print(json.dumps(sorted(m for m in sys.modules if m.startswith("trl."))))
"""
    assert _heavy_loaded(code) == ["trl"]
    trl_modules = json.loads(_python(code).strip().splitlines()[-1])
    assert all(m.startswith(("trl.scripts", "trl._", "trl.import_utils")) for m in trl_modules), trl_modules


def test_lenvm_script_help_runs_without_torch():
    script = shutil.which("lenvm", path=str(Path(sys.executable).parent))
    cmd = [script, "--help"] if script else [sys.executable, "-m", "lenvm_rl.cli", "--help"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: lenvm" in done.stdout and "quickstart" in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "lenvm_rl.cli" in imported  # the import-time profile was collected
    assert not imported & set(HEAVY), sorted(imported & set(HEAVY))
