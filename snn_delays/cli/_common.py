"""What several command modules share: the exporter's errors as user errors, argparse types."""

from __future__ import annotations

import argparse
import functools

from neuromorphic_export.errors import ExportError

from ..errors import UserError

__all__ = ["Interrupted", "export_errors", "count"]


class Interrupted(Exception):
    """Ctrl-C during a command; the message says what was kept."""


def export_errors(fn):
    """Re-raise the exporter's :class:`ExportError` and unreadable/unwritable files as
    :class:`UserError` (one line, exit status 2)."""

    @functools.wraps(fn)
    def wrapper(args):
        try:
            return fn(args)
        except ExportError as e:
            raise UserError(str(e)) from None
        except OSError as e:  # a file that cannot be read or written (permissions, full disk)
            where = f" {e.filename}" if e.filename else ""
            raise UserError(f"cannot read or write{where}: {e.strerror or e}") from None

    return wrapper


def count(text: str) -> int:
    """argparse type: an integer >= 0 (a number of samples)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0 (0: all), got {value}")
    return value
