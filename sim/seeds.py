"""The seed layout: how a scenario's one ``seed`` becomes every random stream of a run.

``SeedSequence(seed)`` spawns one child per replication (spawn key ``(r,)``); replication r's
child spawns one child per request class, in the scenario's order (key ``(r, c)``: that class's
arrivals, lengths and shapes), then one more for the fault injector (key ``(r, C)`` with C
classes). A replica that speculates draws its acceptances from its own stream, keyed by the
replication and the replica's index (``speculation_rng``), beside this tree. Same seed, same numbers; a class's stream does not depend on the other classes'
settings, so the planner can draw one pool's classes alone (common random numbers) and still
match what ``servesim run`` draws for them. Every module that draws takes its generators here.
"""

from __future__ import annotations

import random

import numpy as np


def replication_seeds(seed: int, replications: int) -> list[np.random.SeedSequence]:
    """Each replication's seed, as a run spawns them."""
    return np.random.SeedSequence(seed).spawn(replications)


def replication_seed(seed: int, rep: int, num_classes: int) -> np.random.SeedSequence:
    """Replication ``rep``'s seed with its class children already taken: what ``simulate``
    needs when its request streams were drawn elsewhere (``class_rng``), so that the fault
    injector still gets the child a run would give it."""
    return np.random.SeedSequence(seed, spawn_key=(rep,), n_children_spawned=num_classes)


def class_rngs(rep_seed: np.random.SeedSequence, num_classes: int) -> list[np.random.Generator]:
    """One generator per request class, spawned from the replication's seed."""
    return [np.random.default_rng(s) for s in rep_seed.spawn(num_classes)]


def class_rng(seed: int, rep: int, class_index: int) -> np.random.Generator:
    """Class ``class_index``'s generator in replication ``rep``, without drawing the others."""
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(rep, class_index)))


def speculation_rng(rep_seed: np.random.SeedSequence, replica: int) -> random.Random:
    """A replica's generator of speculative-decoding acceptances (per-request rates, per-step
    draws): keyed by the replication's seed and the replica's index, without spawning from the
    replication's seed (its children stay the classes' and the fault injector's). A
    ``random.Random``: the engine draws a few scalars per step, where numpy's per-call cost
    would show."""
    key = (*rep_seed.spawn_key, 0x5EC, replica)
    state = np.random.SeedSequence(rep_seed.entropy, spawn_key=key).generate_state(2)
    return random.Random(int(state[0]) << 32 | int(state[1]))


def fault_rng(rep_seed: np.random.SeedSequence) -> np.random.Generator:
    """The fault injector's generator: the child after the classes' (spawn them first)."""
    return np.random.default_rng(rep_seed.spawn(1)[0])
