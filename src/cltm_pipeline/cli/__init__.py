"""The ``cltm`` command: one subcommand per workflow stage, each a thin call into the library.

Each module of this package adds the subcommands of one layer (``register``); heavy libraries (torch,
transformers, plotly) are imported inside the commands that use them, so ``cltm status`` or ``cltm ready``
start in a fraction of a second.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from cltm_pipeline.cli import analysis, data, report, train
from cltm_pipeline.errors import ConfigError, CorpusError, ModelError, ResultsError, SubsetError

__all__ = ["main", "build_parser", "watch_parent"]

#: Errors the user can fix from the message alone: printed as one line, no traceback.
USER_ERRORS = (ConfigError, CorpusError, SubsetError, ModelError, ResultsError)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``cltm``."""
    p = argparse.ArgumentParser(prog="cltm", description="Cross-Lingual Transfer Matrix pipeline stages.")
    sub = p.add_subparsers(dest="command", required=True)
    for module in (report, data, analysis, train):
        module.register(sub)
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
    args = build_parser().parse_args(argv)
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

