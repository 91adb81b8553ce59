"""The ``bertkit`` command line. One command → one library function; every flag is a config field.

Errors that users can cause (bad data, a bad flag value, a broken model folder) print one line and exit 2.
The commands live in :mod:`bertkit.cli.run_commands` (the main job) and :mod:`bertkit.cli.tool_commands`.
"""

from __future__ import annotations

import sys

from bertkit.cli import run_commands, tool_commands  # noqa: F401  (registers the commands on ``app``)
from bertkit.cli._common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
