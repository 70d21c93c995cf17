"""The README's code runs as written: its Python names exist, and its three-command CLI path and its first Python
example train and load a LenVM offline (on a tiny random model standing in for the embedded default)."""

from __future__ import annotations

import ast
import importlib
import re
import shlex
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(), flags=re.S)


def section_block(heading: str, lang: str) -> str:
    text = README.read_text()
    assert heading in text, f"README has no section {heading!r}"
    return re.search(rf"```{lang}\n(.*?)```", text[text.index(heading) :], flags=re.S).group(1)


def test_readme_python_imports_exist():
    names = []
    for code in blocks("python"):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module.split(".")[0] == "lenvm_rl":
                names += [(node.module, alias.name) for alias in node.names]
    assert ("lenvm_rl.defaults", "resolve_model") in names  # the examples load the embedded default, not the hub
    for module, name in names:
        assert hasattr(importlib.import_module(module), name), f"README imports {module}.{name}, which does not exist"
    assert not any("HuggingFaceTB/" in code and "from_pretrained(" in code for code in blocks("python"))


def offline_default(monkeypatch, tiny_dir: Path) -> None:
    """Every ``resolve_model`` of the package resolves the embedded default to ``tiny_dir``."""
    import lenvm_rl.defaults as defaults

    real = defaults.resolve_model

    def fake(name):
        return str(tiny_dir) if name is None or str(name) == defaults.DEFAULT_MODEL else real(name)

    for module in [m for n, m in sys.modules.items() if n.startswith("lenvm_rl") and m is not None]:
        if getattr(module, "resolve_model", None) is real:
            monkeypatch.setattr(module, "resolve_model", fake)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.slow  # over ~5 s on 2 cores
def test_readme_cli_path_and_python_example_run_offline(tiny_causal_dir, tmp_path, monkeypatch, capsys):
    from lenvm_rl.cli import main

    offline_default(monkeypatch, tiny_causal_dir)
    monkeypatch.chdir(tmp_path)
    lines = [line for line in section_block("## From the command line", "bash").splitlines() if line.strip()]
    assert [shlex.split(line)[:2] for line in lines] == [
        ["lenvm", "rollouts"],
        ["lenvm", "train"],
        ["lenvm", "predict"],
    ]
    for line in lines:
        argv = shlex.split(line, comments=True)[1:]
        if argv[0] == "rollouts":
            argv += ["--limit", "4"]  # four prompts, not 400
        if argv[0] == "train":
            argv += ["--report_to", "none"]
        assert main(argv) == 0, line
    assert "tokens" in capsys.readouterr().out  # predict printed a length per prompt
    assert (tmp_path / "my-lenvm" / "lenvm_config.json").is_file()

    # The first Python example, on the rollouts the CLI path just sampled, into a fresh folder.
    code = section_block("### In a few lines of Python", "python").replace('"my-lenvm"', '"my-lenvm-py"')
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    predicted = scope["LengthCritic"].from_pretrained("my-lenvm-py").predict_length(["Write a haiku about rain."])
    assert len(predicted) == 1 and float(predicted[0]) >= 0
