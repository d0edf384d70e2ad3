"""``python -m herald_local`` is the ``herald-local`` command."""

from herald_local.cli import main

raise SystemExit(main())
