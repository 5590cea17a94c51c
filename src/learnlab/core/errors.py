"""Error types that the command line turns into clear one-line messages."""


class UserError(Exception):
    """A mistake in the user's input (unknown name, bad value, missing path).

    The CLI prints the message as one line on stderr and exits with code 2.
    """


class DivergenceError(RuntimeError):
    """Training produced a NaN or infinite loss; the run is recorded as failed with this reason."""
