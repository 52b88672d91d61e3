"""The one exception type that means "the user asked for something we cannot do"."""


class UserError(Exception):
    """A mistake in the user's input: the CLI prints the message on one line and exits 2.

    The message names the offending file, flag or value and says what to do instead.
    """
