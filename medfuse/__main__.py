"""``python -m medfuse`` runs the command line."""

from medfuse.cli import main

main()
