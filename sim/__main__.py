"""``python -m sim`` runs the servesim command."""

from sim.cli import main

raise SystemExit(main())
