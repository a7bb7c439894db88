"""The ``cltm`` command: one subcommand per workflow stage, each a thin call into the library.

Each module of this package adds the subcommands of one layer (``register``). A run imports only the module
of its command (:data:`COMMANDS`), and heavy libraries (torch, transformers, plotly) are imported inside the
commands that use them, so ``cltm ingest`` or ``cltm ready`` start without scipy, scikit-learn or torch.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import threading
import time

from cltm_pipeline.errors import ConfigError, CorpusError, ModelError, ResultsError, SubsetError

__all__ = ["main", "build_parser", "watch_parent"]

#: Errors the user can fix from the message alone: printed as one line, no traceback.
USER_ERRORS = (ConfigError, CorpusError, SubsetError, ModelError, ResultsError)


#: The module of this package that defines each subcommand (tests/test_layers.py checks it against them).
COMMANDS = {
    "validate-config": "report", "status": "report", "ready": "report", "report": "report",
    "demo-corpus": "data", "ingest": "data", "eval-sets": "data", "subsets": "data", "task-artifact": "data",
    "probe-set": "data",
    "matrix": "analysis", "analyse": "analysis", "typology": "analysis", "learning-curve": "analysis",
    "complete": "analysis", "plan": "analysis",
    "prepare-model": "train", "train": "train", "train-cells": "train", "embed": "train",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser of ``cltm``: every subcommand, or only those of ``command``'s module."""
    p = argparse.ArgumentParser(prog="cltm", description="Cross-Lingual Transfer Matrix pipeline stages.")
    sub = p.add_subparsers(dest="command", required=True)
    modules = [COMMANDS[command]] if command in COMMANDS else ["report", "data", "analysis", "train"]
    for name in modules:
        importlib.import_module(f"cltm_pipeline.cli.{name}").register(sub)
    return p


def watch_parent(env: str = "CLTM_PARENT_PID", every_s: float = 1.0) -> int | None:
    """If ``$CLTM_PARENT_PID`` names a live process (the Snakemake that started this job), exit as soon as
    it is gone: a `kill -9` of Snakemake would otherwise leave its jobs training on as orphans. Every
    output is written atomically, so exiting mid-write leaves nothing that looks done. Returns the pid."""
    try:
        pid = int(os.environ.get(env, ""))
    except ValueError:
        return None
    if pid <= 1 or pid == os.getpid():
        return None

    def alive() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def watch() -> None:
        while alive():
            time.sleep(every_s)
        print(f"cltm: parent process {pid} ({env}) is gone; exiting (rerun the workflow to resume)", file=sys.stderr, flush=True)
        os._exit(143)

    if not alive():  # gone already (killed while this process was starting): do not start work as an orphan
        watch()
    threading.Thread(target=watch, name="cltm-parent-watch", daemon=True).start()
    return pid

def _one_line(exc: BaseException) -> str:
    """An OS error (disk full, permission, missing file) in one line, naming the file."""
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

def main(argv: list[str] | None = None) -> int:
    """Entry point: run one subcommand; user errors (and OS errors such as a full disk) print one line, exit 2."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv[0] if argv else None).parse_args(argv)
    watch_parent()
    try:
        args.func(args)
    except USER_ERRORS as exc:
        print(f"cltm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"cltm {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    return 0

