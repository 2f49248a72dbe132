"""The ``snn-delays`` command line: one module per sub-command, each parsing its arguments and
calling library functions (training in :mod:`snn_delays`, export and simulation in
:mod:`neuromorphic_export`); this package is the only place that orchestrates both.

Every module here has ``add_parser(subparsers)`` (registers the command and sets ``func``) and a
``run_*`` function that takes the parsed arguments and returns the exit status. The options that
build a config are in :mod:`snn_delays.cli.config_args`. No library module imports this package.
Errors the user can fix (:class:`UserError` and its kin) end with one clear message and exit
status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

from .. import __version__, allocator
from ..errors import UserError
from . import ablate, bench, cv, data, encode_audio, evaluate, export, finetune, plot, train, tune, verify
from ._common import Interrupted

__all__ = ["main", "build_parser"]

# in the order `snn-delays --help` lists them
COMMANDS = (train, evaluate, data, encode_audio, ablate, cv, tune, plot, export, verify, finetune, bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="snn-delays", description="Learn synaptic delays in SNNs (DCLS).")
    parser.add_argument("--version", action="version", version=f"snn-delays {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


# OS errors a user fixes outside the program (permissions, space, a read-only disk): one line, exit 2
_ENVIRONMENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EROFS, errno.EDQUOT}


def _silence_stdout() -> None:
    """Point stdout at os.devnull so that the flush at exit does not fail on a closed pipe again."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor (captured output)
        sys.stdout = open(os.devnull, "w")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "malloc", None) == "reuse" or allocator.requested():  # bench --malloc reuse, SNN_DELAYS_MALLOC=reuse
        allocator.reuse_freed_memory()  # freed tensors reused between steps, not faulted in again
    try:
        return int(args.func(args) or 0)
    except UserError as e:
        print(f"snn-delays {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (| head): no traceback, the shell's code
        _silence_stdout()
        return 128 + 13  # as if killed by SIGPIPE
    except OSError as e:
        if e.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f": {e.filename}" if e.filename else ""
        print(f"snn-delays {args.command}: error: {e.strerror}{where}", file=sys.stderr)
        return 2
    except Interrupted as e:
        print(f"snn-delays {args.command}: interrupted; {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print(f"snn-delays {args.command}: interrupted", file=sys.stderr)
        return 130
    except SystemExit as e:  # SIGTERM/SIGHUP during an encoding end as exit 143/129 after cleaning up
        if e.code in (128 + 15, 128 + 1):
            print(f"snn-delays {args.command}: terminated", file=sys.stderr)
        raise
