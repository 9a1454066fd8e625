"""Generators of documentation pages from simulations (``python -m sim.docgen.two_shapes``),
not part of the ``servesim`` command."""
