"""What the Snakefile imports at parse time (config, workflow, the task and architecture registries) loads no
torch, transformers or speechbrain: every `snakemake -n` (a login node, CI) validates a config in well under a
second instead of loading CUDA torch. Registered tasks and architectures reach their torch modules only inside
the functions that build a model or a cell: the "lazy edges" of pyproject's import-linter contract."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
HEAVY = ("torch", "torchaudio", "transformers", "speechbrain")
#: every module workflow/rules/common.smk imports from the package, and the registries behind them
SNAKEFILE_IMPORTS = ("cltm_pipeline.layout", "cltm_pipeline.config", "cltm_pipeline.errors", "cltm_pipeline.protocol",
                     "cltm_pipeline.tasks", "cltm_pipeline.workflow", "cltm_pipeline.models")


def _fresh(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True,
                          cwd=ROOT).stdout.strip()


def test_what_the_snakefile_imports_loads_no_torch():
    """A fresh interpreter imports what common.smk imports; the registries are full, and no heavy library is loaded."""
    code = ("import sys; " + "; ".join(f"import {m}" for m in SNAKEFILE_IMPORTS)
            + "; from cltm_pipeline.models import ARCHITECTURES; from cltm_pipeline.tasks import TASKS"
            + f"; print(sorted(ARCHITECTURES), sorted(TASKS), sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert _fresh(code) == "['ecapa', 'mhubert', 'siamese', 'speechllm'] ['asr', 'gender', 'sv'] []"


def test_building_a_model_does_load_torch():
    """The check above can fail: the lazy edges do lead to torch once a model is built."""
    code = ("import sys; from cltm_pipeline.models import get_architecture; "
            "get_architecture('siamese').load_sv"  # a bound classmethod: nothing imported yet
            "; before = 'torch' in sys.modules; import cltm_pipeline.models.siamese_nn"
            "; print(before, 'torch' in sys.modules)")
    assert _fresh(code) == "False True"


def _lazy_edges() -> list[tuple[str, str]]:
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]
    (light,) = [c for c in contracts if c["type"] == "forbidden" and "cltm_pipeline.config" in c["source_modules"]]
    assert set(HEAVY) <= set(light["forbidden_modules"])
    edges = [tuple(e.replace(" ", "").split("->")) for e in light["ignore_imports"]]
    acyclic = [c for c in contracts if c["type"] == "acyclic_siblings"]
    for c in acyclic:  # the cycle contract may ignore only lazy edges
        assert {tuple(e.replace(" ", "").split("->")) for e in c.get("ignore_imports", [])} <= set(edges)
    return edges


def _imports_of(tree: ast.Module, importer: str, imported: str) -> list[tuple[int, bool]]:
    """(line, inside a function) of each import of ``imported`` in ``importer``'s syntax tree."""
    inside: set[int] = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            inside |= {id(n) for n in ast.walk(fn)}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        if any(n == imported or n.startswith(imported + ".") for n in names):
            found.append((node.lineno, id(node) in inside))
    return found


def test_every_registered_implementation_resolves():
    """Architectures reach their torch module by name (``impl``) and tasks their cell (``cell``): each name must
    import and hold what it promises, or a cell would fail only when it runs."""
    from cltm_pipeline.models import ARCHITECTURES
    from cltm_pipeline.tasks import TASKS, TaskCell

    for name, arch in ARCHITECTURES.items():
        assert arch.impl.startswith("cltm_pipeline.models.") and arch.nn().__name__ == arch.impl, name
    for name, task in TASKS.items():
        module, _, cls = task.cell.partition(":")
        assert issubclass(getattr(importlib.import_module(module), cls), TaskCell), name


def test_each_lazy_edge_is_a_function_local_import():
    """The contract ignores these edges, so this test holds them to what the contract's comment says: the
    importer has the import, and only inside functions (a module-level one would load torch at parse time)."""
    offences = []
    for importer, imported in _lazy_edges():
        path = SRC / (importer.replace(".", "/") + ".py")
        found = _imports_of(ast.parse(path.read_text(encoding="utf-8")), importer, imported)
        if not found:
            offences.append(f"{importer} -> {imported}: no such import (drop it from pyproject)")
        offences += [f"{path.relative_to(ROOT)}:{line}: module-level import of {imported}" for line, lazy in found if not lazy]
    assert not offences, offences
