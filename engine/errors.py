"""User-facing errors: the command-line edges print their message (no traceback) and exit with code 2."""


class UserError(Exception):
    """Bad input from the user (params, data, checkpoint, command line). The message must say what, where, what was
    expected and what was found; it is printed as is."""


def run_command(main) -> int:
    """The exit code of a command-line entry point: a UserError is printed as ``error: …`` (exit 2, no traceback),
    Ctrl-C exits with 130."""
    import sys

    try:
        return main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
