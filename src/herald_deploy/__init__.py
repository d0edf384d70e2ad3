"""Herald's deploy steps: the backend image, the migrations, `sam deploy`, and the web app.

Every Makefile deploy target calls this package (``herald-deploy``), and so does every
pipeline: CodeBuild, Jenkins and people run the same commands. ``--dry-run`` prints each
AWS CLI, docker, sam and npm command with its arguments instead of running it.
"""
