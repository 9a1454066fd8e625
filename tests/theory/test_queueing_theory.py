"""Queueing-theory oracles with the constant cost model, checked inside confidence intervals.

Every step costs the same, so a replica with ``max_num_seqs = 1`` is a single server whose
service time is (output tokens) x (step time), and one with ``max_num_seqs = c`` is c parallel
servers fed by one FIFO queue. Each check runs K seeded replications and asks that the closed
form lies inside the 99 % Student-t interval of the replication means — never a pinned number.
"""

import math
from pathlib import Path

import numpy as np
from scipy import stats

from sim.config import parse_scenario
from sim.run import run_scenario

REPS = 10


def run(max_num_seqs, rate, output, step_s, n, warmup_s):
    sc = parse_scenario(
        dict(
            name="theory",
            seed=2024,
            replications=REPS,
            num_requests=n,
            warmup_s=warmup_s,
            pools=[
                dict(
                    name="s",
                    model="llama-3.2-1b",
                    gpu="h100-sxm",
                    replicas=1,
                    engine=dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max(64, max_num_seqs)),
                    cost_model=dict(kind="constant", step_s=step_s),
                )
            ],
            classes=[
                dict(
                    name="q",
                    pool="s",
                    arrival=dict(process="poisson", rate=rate),
                    prompt_tokens=dict(dist="fixed", value=16),
                    output_tokens=output,
                )
            ],
        )
    )
    res = run_scenario(sc, Path("."))
    df = res.requests
    return df[df["arrival_s"] >= warmup_s]


def ci99(values):
    values = np.asarray(values, dtype=float)
    half = stats.t.ppf(0.995, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return values.mean(), half


def test_md1_mean_wait_matches_pollaczek_khinchine():
    step, tokens, rate = 0.002, 50, 7.0
    service = step * tokens  # deterministic: 0.1 s
    rho = rate * service
    theory = rho * service / (2 * (1 - rho))  # Pollaczek-Khinchine, M/D/1
    df = run(1, rate, dict(dist="fixed", value=tokens), step, 5000, 50.0)
    mean, half = ci99(df.groupby("replication")["queue_s"].mean())
    assert abs(mean - theory) <= half, f"M/D/1 wait {mean:.4f} ± {half:.4f} vs P-K {theory:.4f}"
    # Service is deterministic, so E2E - wait is exactly the service time.
    np.testing.assert_allclose(df["e2e_s"] - df["queue_s"], service, rtol=1e-9)


def erlang_c_wait(c, lam, mu):
    a = lam / mu
    rho = a / c
    top = a**c / math.factorial(c) / (1 - rho)
    p_wait = top / (sum(a**k / math.factorial(k) for k in range(c)) + top)
    return p_wait / (c * mu - lam)


def test_mmc_mean_wait_matches_erlang_c():
    c, step, mean_tokens = 4, 0.001, 200
    mu = 1.0 / (step * mean_tokens)  # geometric tokens x fixed step: memoryless up to 1/200
    rate = 0.75 * c * mu
    theory = erlang_c_wait(c, rate, mu)
    df = run(c, rate, dict(dist="exponential", mean=mean_tokens), step, 6000, 30.0)
    mean, half = ci99(df.groupby("replication")["queue_s"].mean())
    assert abs(mean - theory) <= half, f"M/M/{c} wait {mean:.4f} ± {half:.4f} vs Erlang C {theory:.4f}"


def test_littles_law_with_pasta_samples():
    # L is measured from what arrivals see (Poisson arrivals see time averages), W from the
    # request records: two independent paths through the simulator.
    c, step, mean_tokens = 3, 0.001, 150
    rate = 0.8 * c / (step * mean_tokens)
    df = run(c, rate, dict(dist="exponential", mean=mean_tokens), step, 5000, 30.0)
    ratios = []
    for _, g in df.groupby("replication"):
        lam = (len(g) - 1) / (g["arrival_s"].max() - g["arrival_s"].min())
        ratios.append(g["seen_in_system"].mean() / (lam * g["e2e_s"].mean()))
    mean, half = ci99(ratios)
    assert abs(mean - 1.0) <= half, f"L / (lambda W) = {mean:.4f} ± {half:.4f}"


def run_diffusion(max_batch_size, rate, n, warmup_s, steps=20):
    sc = parse_scenario(
        dict(
            name="theory-diffusion",
            seed=77,
            replications=REPS,
            num_requests=n,
            warmup_s=warmup_s,
            pools=[
                dict(
                    name="d",
                    model="sdxl",
                    gpu="h100-sxm",
                    replicas=1,
                    batching=dict(max_batch_size=max_batch_size),
                    cost_model=dict(kind="constant", step_s=0.004, text_encode_s=0.01, vae_decode_s=0.03),
                )
            ],
            classes=[
                dict(
                    name="img", pool="d", arrival=dict(process="poisson", rate=rate), image=dict(steps=steps, cfg=False)
                )
            ],
        )
    )
    df = run_scenario(sc, Path(".")).requests
    return df[df["arrival_s"] >= warmup_s]


def test_diffusion_replica_at_batch_size_one_is_md1():
    # Static batches of one image: service = text encode + steps x step + VAE decode, fixed.
    service = 0.01 + 20 * 0.004 + 0.03
    rate = 0.7 / service
    theory = rate * service * service / (2 * (1 - rate * service))
    df = run_diffusion(1, rate, 5000, 30.0)
    mean, half = ci99(df.groupby("replication")["queue_s"].mean())
    assert abs(mean - theory) <= half, f"diffusion M/D/1 wait {mean:.4f} ± {half:.4f} vs P-K {theory:.4f}"
    np.testing.assert_allclose(df["e2e_s"] - df["queue_s"], service, rtol=1e-9)


def test_littles_law_holds_for_static_diffusion_batches():
    # Static batches of up to 4 images (a bulk-service queue; one VAE decode per image):
    # arrivals see L, the records give W; L / (lambda W) is 1 whatever the batching.
    service = 0.01 + 20 * 0.004 + 4 * 0.03
    rate = 0.9 * 4 / service
    df = run_diffusion(4, rate, 4000, 20.0)
    ratios = []
    for _, g in df.groupby("replication"):
        lam = (len(g) - 1) / (g["arrival_s"].max() - g["arrival_s"].min())
        ratios.append(g["seen_in_system"].mean() / (lam * g["e2e_s"].mean()))
    mean, half = ci99(ratios)
    assert abs(mean - 1.0) <= half, f"L / (lambda W) = {mean:.4f} ± {half:.4f}"
