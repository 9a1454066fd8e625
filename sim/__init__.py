"""servesim: a discrete-event simulator of generative-AI inference serving.

The package holds the simulator (pure Python: SimPy, numpy, pandas). It never imports torch,
and the ``calibration`` package only from the ``calibrate``, ``profile show`` and
``validate`` commands;
profile files are the link between the two.
"""

__version__ = "0.1.0"
