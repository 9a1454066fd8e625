"""The declared interfaces hold: both schedulers are a ``BatchScheduler``, both replica kinds a
``Replica`` (members of the same names, so a pool and its router treat them alike)."""

from sim.config import parse_scenario
from sim.fleet.pools import DiffusionPool, LLMPool, Replica
from sim.fleet.timers import Environment
from sim.llm.scheduler import BatchScheduler
from sim.metrics.recorder import Recorder

LENGTHS = dict(prompt_tokens=dict(dist="fixed", value=10), output_tokens=dict(dist="fixed", value=10))


def test_both_schedulers_and_both_replicas_meet_their_interfaces():
    sc = parse_scenario(
        dict(
            name="i",
            seed=1,
            num_requests=10,
            pools=[
                dict(name="c", model="llama-3.2-1b", gpu="l40s", replicas=1),
                dict(name="s", model="llama-3.2-1b", gpu="l40s", replicas=1, engine=dict(scheduler="static")),
                dict(name="d", model="sdxl", gpu="h100-sxm", replicas=1),
            ],
            classes=[
                dict(name="a", pool="c", arrival=dict(process="poisson", rate=1), **LENGTHS),
                dict(name="b", pool="s", arrival=dict(process="poisson", rate=1), **LENGTHS),
                dict(name="i", pool="d", arrival=dict(process="poisson", rate=1), image=dict(steps=4)),
            ],
        )
    )
    env, rec = Environment(), Recorder(["a", "b", "i"])
    pools = [
        LLMPool(env, sc.pools[0], rec, {}),
        LLMPool(env, sc.pools[1], rec, {}),
        DiffusionPool(env, sc.pools[2], rec, {}),
    ]
    replicas = [p.replicas[0] for p in pools]
    assert all(isinstance(r, Replica) for r in replicas)
    schedulers = [r.scheduler for r in replicas[:2]]
    assert {type(s).__name__ for s in schedulers} == {"Scheduler", "StaticBatchScheduler"}
    assert all(isinstance(s, BatchScheduler) for s in schedulers)
    # the protocols check what they say: an object without the members is neither
    assert not isinstance(object(), Replica) and not isinstance(object(), BatchScheduler)
