"""The one exception a user can fix. ``snn-delays export/verify`` print its message and exit 2."""

__all__ = ["ExportError"]


class ExportError(Exception):
    """Missing or corrupt checkpoint, unknown target or format, a chip limit broken: the message
    names the problem and, where there is one, the fix."""
