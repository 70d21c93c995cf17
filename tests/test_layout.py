"""Package layout: no import cycle between modules, and the commands take shared helpers from the core modules."""

import ast
from pathlib import Path

import lenvm_rl

PACKAGE = Path(lenvm_rl.__file__).parent


def module_name(path: Path) -> str:
    parts = ("lenvm_rl", *path.relative_to(PACKAGE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports, lazy (in-function) imports included."""
    files = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {m: set() for m in files}
    for m, path in files.items():
        package = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:  # from . / .. / ...X import
                    base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[m] |= {t for t in targets if t in files and t != m}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on_stack.discard(comp[-1])
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "lenvm_rl.vlm" in graph["lenvm_rl.modeling"]  # module level, relative
    assert "lenvm_rl.vlm" in graph["lenvm_rl.data"]  # inside build_examples
    assert "lenvm_rl.rl.rewards" in graph["lenvm_rl.grpo_script"]  # two levels down
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle():
    assert cycles(import_graph()) == []


HELPERS = (
    "load_critic",
    "load_generator",
    "guided",
    "answers_nll",
    "answer_nll",
    "repeated_ngram_share",
    "setup_threads",
)


def helper_imports(module: str) -> dict[str, str]:
    """Helper name -> the module ``module`` imports it from (by ``from X import name``)."""
    path = PACKAGE.joinpath(*module.split(".")[1:]).with_suffix(".py")
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            out.update({a.name: "." * node.level + (node.module or "") for a in node.names if a.name in HELPERS})
    return out


def test_commands_take_shared_helpers_from_the_core_module():
    from lenvm_rl import generation
    from lenvm_rl.evaluation import common

    for command, used in (("lenvm_rl.cli", {"answers_nll"}), ("lenvm_rl.demo", {"load_critic", "setup_threads"})):
        imports = helper_imports(command)
        assert used <= set(imports), (command, imports)
        assert set(imports.values()) == {".generation"}, (command, imports)
    for name in HELPERS:
        assert getattr(common, name) is getattr(generation, name), name  # the evaluations' imports keep working


def imported_names(path: Path) -> set[str]:
    """The absolute module names a file imports, lazy (in-function) imports included."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level:
            out.add(node.module or "")
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
    return out


def test_the_library_does_not_import_the_experiments():
    """evals/ holds the project's own bookkeeping (goals, earlier draws): the library must work without it."""
    assert "evals.lifebench_goals" in imported_names(PACKAGE.parent / "evals/experiments/paired_rule.py")
    for path in PACKAGE.rglob("*.py"):
        found = {m for m in imported_names(path) if m == "evals" or m.startswith("evals.")}
        assert not found, (path, found)


def test_the_projects_goals_live_in_evals():
    """No goal thresholds or verdicts in the library (the project's goals are evals/lifebench_goals.py's and
    evals/tradeoff_goals.py's)."""

    def assigned(path: Path) -> set[str]:
        out = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    out |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
            elif isinstance(node, ast.FunctionDef):
                out.add(node.name)
        return out

    assert {"GOAL_BOUND_LS", "bound_goal_met"} <= assigned(PACKAGE.parent / "evals/lifebench_goals.py")
    assert {"GOAL_BUDGET_RATIO", "goal", "result_goal"} <= assigned(PACKAGE.parent / "evals/tradeoff_goals.py")
    for path in PACKAGE.rglob("*.py"):
        names = assigned(path)
        assert not {n for n in names if n.startswith("GOAL_")}, path
        if path.name.startswith(("lifebench", "tradeoff")):
            assert not names & {"goal", "result_goal", "bound_goal_met"}, path
        # the tradeoff verdict's keys: neither written nor read by the library
        assert not {"met_with_ci", "ci_checks", "above_eos_bonus_ci"} & set(path.read_text().split('"')), path
