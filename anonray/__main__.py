"""``python -m anonray`` (the form ``ray job submit`` uses)."""

from anonray.cli import main

main()
