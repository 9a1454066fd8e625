"""servesim: a discrete-event simulator of generative-AI inference serving.

The package holds the simulator (pure Python: SimPy, numpy, pandas). It never imports torch
or the ``calibration`` package; profiles are the only link between the two.
"""

__version__ = "0.1.0"
