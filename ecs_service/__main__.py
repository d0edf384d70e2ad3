"""``python -m ecs_service`` is the ``herald`` command."""

from ecs_service.cli import main

raise SystemExit(main())
