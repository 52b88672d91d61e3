"""The one exception type that means "the user asked for something we cannot do", and the range checks
that raise it for a command's numeric settings (the same line from the CLI and from Python)."""


class UserError(Exception):
    """A mistake in the user's input: the CLI prints the message on one line and exits 2.

    The message names the offending file, flag or value and says what to do instead.
    """


def flag(name: str) -> str:
    """The command-line flag of a setting: ``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def require_positive(**values: float | None) -> None:
    """UserError for the first setting that is not > 0, named by its flag: ``--lr 0.0: must be > 0``."""
    for name, value in values.items():
        if value is None or value <= 0:
            raise UserError(f"{flag(name)} {value}: must be > 0")


def require_fraction(name: str, value: float, *, zero: bool = False, hint: str = "") -> None:
    """UserError unless ``value`` lies in (0, 1] (``zero``: in [0, 1]); ``hint`` follows the range in the message."""
    if not (0 <= value <= 1 if zero else 0 < value <= 1):
        raise UserError(f"{flag(name)} {value}: must be in {'[0' if zero else '(0'}, 1]{hint}")
