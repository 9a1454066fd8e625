"""The seed layout: a class's or the fault injector's generator drawn alone (the planner) equals
the one a whole run spawns (``servesim run``)."""

import numpy as np

from sim.seeds import class_rng, class_rngs, fault_rng, replication_seed, replication_seeds


def draws(rng: np.random.Generator) -> list[float]:
    return rng.random(4).tolist()


def test_a_class_drawn_alone_matches_the_run():
    seed, reps, classes = 1234, 3, 4
    for r, rep_seed in enumerate(replication_seeds(seed, reps)):
        run = [draws(g) for g in class_rngs(rep_seed, classes)]
        assert run == [draws(class_rng(seed, r, c)) for c in range(classes)]
        assert draws(fault_rng(rep_seed)) == draws(fault_rng(replication_seed(seed, r, classes)))
    # and the streams differ from one another
    first = replication_seeds(seed, 1)[0]
    assert len({tuple(d) for d in (draws(g) for g in class_rngs(first, classes))}) == classes
