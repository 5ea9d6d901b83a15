"""``python -m sharedrec`` runs the ``sharedrec`` command."""

from sharedrec.cli import main

main()
