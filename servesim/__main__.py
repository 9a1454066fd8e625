"""``python -m servesim`` is the ``servesim`` command."""

from sim.cli import main

raise SystemExit(main())
