"""Calibration: real kernels timed on a device, fitted step costs, profiles (uses torch).

Only the profile files it writes link it to ``sim``; ``sim`` never imports this package.
The kernels, sweeps and fits arrive with the calibration issue.
"""
