"""``python -m herald_deploy``: the same as the ``herald-deploy`` command."""

from herald_deploy.cli import main

raise SystemExit(main())
