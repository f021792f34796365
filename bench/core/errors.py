"""The one exception type the CLI turns into a single 'error: …' line and exit code 2."""


class BenchError(Exception):
    """A problem with the user's input or environment, reported without a traceback."""
