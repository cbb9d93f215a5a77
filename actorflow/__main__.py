"""``python -m actorflow`` is the ``actorflow`` command."""

from actorflow.cli import main

raise SystemExit(main())
