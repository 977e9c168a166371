"""User-facing errors: the command-line edges print their message (no traceback) and exit with code 2."""


class UserError(Exception):
    """Bad input from the user (params, data, checkpoint, command line). The message must say what, where, what was
    expected and what was found; it is printed as is."""
