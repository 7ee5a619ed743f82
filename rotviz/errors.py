"""The one exception type for problems a user can act on."""


class RotvizError(Exception):
    """A user-facing problem; its message says what to do. The CLI and app show it without a traceback."""

    exit_code = 2  # the command's exit status when it stops on this problem
