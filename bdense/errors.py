"""One exception type for refusals the user can fix; the CLI prints it as a single line and exits 2."""


class BdenseError(Exception):
    """A problem with the user's input or environment, stated with its fix."""
