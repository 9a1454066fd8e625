"""Real serving loops on a device, recorded for validating the simulator against.

``llm``: continuous batching of the random-weight Llama replica, with a scheduler that makes the
simulator's vLLM v1 decisions (``run_llm_engine``; ``load_replica`` to load the model once for
several runs; ``schedule_only`` for the decisions alone);
``diffusion``: the static-batching diffusion loop (imported from its module).
Runs with torch, numpy, pandas and pyyaml alone; torch is imported only when a loop runs.
"""

from calibration.engine.llm import EngineConfig, LoadedReplica, WorkItem, load_replica, run_llm_engine, schedule_only

__all__ = ["EngineConfig", "LoadedReplica", "WorkItem", "load_replica", "run_llm_engine", "schedule_only"]
