"""Studies that write pages of the docs from simulations (``python -m sim.studies.two_shapes``):
generators of documentation, not part of the ``servesim`` command."""
