"""Calibration: real kernels timed on a device, fitted step costs, profiles.

Modules, in the order a calibration runs them:

* ``configs`` / ``diffusion_configs`` and ``models``: random-weight replicas of catalog models
  (a Llama-family decoder; UNet, MMDiT and DiT denoisers, text encoders, VAE decoders);
* ``harness``: timing on CPU (pinned threads, perf_counter) or CUDA (events, rotation);
* ``grids`` and ``measure``: the batch shapes swept, and the sweep writing raw timings;
* ``fit``: the cost forms fitted to them, written as a ``servesim-profile/1`` file;
* ``report``: the fit table and plots of ``servesim profile show``;
* ``vidur``: profiles imported from Vidur's published H100/A100 operator timings;
* ``engine`` and ``validate``: real serving loops on the device, and ``servesim validate``;
  ``models.runner`` runs the LLM's steps as a GPU engine does (varlen attention, CUDA graphs);
* ``device``: the one-shot kit for a briefly lent GPU (calibrate and serve both shapes inside a
  budget); ``home`` turns what it brings back into profiles and a report, and
  ``device_estimate`` predicts its budget on a catalog GPU.

``measure``, ``device`` and everything they import run with torch, numpy, pandas and pyyaml
alone (what a bare GPU machine has); ``fit`` and ``report`` also need scipy and matplotlib and run where the
simulator is installed. ``sim`` imports this package only for ``servesim calibrate``, ``profile show`` and
``validate``.
"""
