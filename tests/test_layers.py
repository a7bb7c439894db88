"""The package's structure as tests: import layers, no private names across modules, lazy imports explained,
short functions. See the README's "Layout" section and pyproject's [tool.importlinter]."""

from __future__ import annotations

import ast
from pathlib import Path

from importlinter import cli as importlinter_cli

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "cltm_pipeline"
#: A function longer than this needs a comment in its first lines saying why (``# long: ...``).
MAX_FUNCTION_LINES = 80


def _modules() -> list[tuple[Path, ast.Module]]:
    return [(p, ast.parse(p.read_text(encoding="utf-8"))) for p in sorted(PACKAGE.rglob("*.py"))]


def test_import_linter_contracts_hold(monkeypatch):
    monkeypatch.chdir(ROOT)  # the contracts live in pyproject.toml
    assert importlinter_cli.lint_imports(no_cache=True) == 0


def test_no_module_imports_another_modules_private_names():
    offences = []
    for path, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cltm_pipeline"):
                offences += [f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{a.name}"
                             for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
    assert not offences, offences


def _explained(lines: list[str], lineno: int) -> bool:
    """A comment on the import's line, or above its block of imports (blank lines and imports between)."""
    if "#" in lines[lineno - 1]:
        return True
    k = lineno - 2
    while k >= 0 and (not lines[k].strip() or lines[k].strip().startswith(("import ", "from ", ")"))):
        k -= 1
    return k >= 0 and lines[k].strip().startswith("#")


def test_every_function_local_import_says_why():
    """A lazy import is only for keeping a heavy dependency out of a light command, and says so in a comment on
    its line or the line above."""
    offences = []
    for path, tree in _modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)) and not _explained(lines, node.lineno):
                    offences.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not offences, "function-local imports without a reason:\n" + "\n".join(sorted(set(offences)))


def test_functions_are_short_unless_a_comment_says_why():
    offences = []
    for path, tree in _modules():
        lines = path.read_text(encoding="utf-8").splitlines()
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = fn.end_lineno - fn.lineno + 1
                head = "\n".join(lines[fn.lineno - 2: fn.lineno + 8])
                if length >= MAX_FUNCTION_LINES and "# long:" not in head:
                    offences.append(f"{path.relative_to(ROOT)}:{fn.lineno} {fn.name} ({length} lines)")
    assert not offences, offences


def test_each_cli_command_loads_only_its_module():
    """`cltm <command>` imports one cli module (cli.COMMANDS); the table names exactly the registered commands."""
    import subprocess
    import sys

    from cltm_pipeline import cli

    full = cli.build_parser()
    registered = set(next(a for a in full._actions if a.dest == "command").choices)
    assert registered == set(cli.COMMANDS)
    code = ("import sys; from cltm_pipeline import cli; cli.build_parser('ingest'); "
            "print(sorted(m for m in ('scipy', 'sklearn', 'torch', 'plotly') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
