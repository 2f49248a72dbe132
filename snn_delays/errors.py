"""Errors the user can fix. The command line prints their message (no traceback) and exits 2."""


class UserError(Exception):
    """Bad input, missing file, invalid option: the message names the problem and the fix."""


class TrainingDiverged(UserError):
    """The loss became NaN/inf; the last good checkpoint is kept."""


def check_option_bounds(bounds, positive=()) -> None:
    """Refuse command-line values out of range: ``bounds`` of (flag, value, lowest allowed) and
    ``positive`` of (flag, value, unit) that must be > 0; a value of None (not given) passes."""
    for flag, value, low in bounds:
        if value is not None and value < low:
            raise UserError(f"{flag} must be >= {low}; got {value}")
    for flag, value, unit in positive:
        if value is not None and not value > 0:
            raise UserError(f"{flag} must be > 0{unit}; got {value}")
