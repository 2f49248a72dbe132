"""Errors the user can fix. The command line prints their message (no traceback) and exits 2."""


class UserError(Exception):
    """Bad input, missing file, invalid option: the message names the problem and the fix."""


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint is kept."""
