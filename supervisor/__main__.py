"""``python -m supervisor`` is ``cc-task``."""

from supervisor.cli import main

raise SystemExit(main())
