"""Generators of documentation from code and simulations, not part of the ``servesim`` command:
the reference pages (``python -m sim.docgen.reference``), the JSON Schema of scenario files
(``python -m sim.docgen.schema``) and the two-shapes page (``python -m sim.docgen.two_shapes``)."""
