"""The ``servesim`` sub-commands, one module each: ``add_parser(subparsers)`` declares its
arguments (and sets the handler), ``run(args)`` does the work and prints. Only these modules
parse arguments and print; the study modules they call (``sim.run``, ``sim.plan``,
``sim.price``, ``sim.sweep``, ``sim.report``) return values and blocks of text
(``sim.console``)."""
