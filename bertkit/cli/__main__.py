"""``python -m bertkit.cli``: the same as the ``bertkit`` console script."""

from bertkit.cli import main

main()
