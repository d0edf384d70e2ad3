"""Herald's core library, imported by the Lambda task runner and the ECS service.

It holds the task contract (``contracts``), the errors every part understands
(``errors``), the ports the logic depends on (``ports``) and their AWS adapters
(``adapters``), the task registry (``registry``, ``tasks``), the runner logic
(``task_runner``), settings and observability. It never imports ``handlers`` or
``ecs_service``.
"""
