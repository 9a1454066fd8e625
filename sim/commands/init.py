"""``servesim init``: write a commented starter scenario for a model, a GPU and a load."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from sim.commands.args import positive_int


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "init",
        help="write a commented starter scenario for a model, a GPU and an arrival rate",
        description="Write a starter scenario (every field commented) for one model on one GPU type "
        "at a given arrival rate, check that it loads, and say what to run next. The tensor-parallel "
        "size is the smallest that fits the model in the GPU's memory.",
    )
    p.add_argument("--model", required=True, help="a model or diffusion pipeline of the catalog (servesim catalog)")
    p.add_argument("--gpu", required=True, help="a GPU of the catalog (servesim catalog gpus)")
    p.add_argument("--rate", type=_positive_float, default=5.0, help="arrival rate, requests per second (default 5)")
    p.add_argument("--replicas", type=positive_int, default=1, help="replicas in the pool (default 1)")
    p.add_argument(
        "-o", "--out", default="scenario.yaml", help="file to write, '-' for standard output (default scenario.yaml)"
    )
    p.add_argument("--force", action="store_true", help="overwrite the file if it exists")
    p.set_defaults(handler=run)
    return p


HEAD = """\
# {name}: {model} on {replicas} x {gpu} at {rate:g} requests/s (written by servesim init).
# Run it:        servesim run {path} -o results/{name}
# Check it only: servesim validate-scenario {path}
# Every field is described in docs/reference/scenario.md.
name: {name}
description: {model} on {gpu}, Poisson arrivals at {rate:g}/s.
seed: 0
replications: 3              # independent seeded runs: the summary's 95 % intervals come from them
duration_s: 300              # simulated seconds of arrivals
warmup_s: 30                 # left out of every statistic (the fleet starts empty)

pools:
  - name: {pool}
    model: {model}
    gpu: {gpu}
    replicas: {replicas}
"""

TEXT = """\
    tensor_parallel_size: {tp}      # GPUs per replica: the fewest whose KV cache holds 64 requests
    router: least_outstanding       # or round_robin, jsq_tokens, random
    engine:                         # vLLM's knobs, vLLM's names and defaults
      max_num_seqs: 256
      max_num_batched_tokens: 8192
      gpu_memory_utilization: 0.9
      enable_chunked_prefill: true
      enable_prefix_caching: true
    cost_model:
      kind: roofline                # FLOPs and bytes over the GPU's peaks; or profile (measured)

classes:
  - name: chat
    pool: {pool}
    arrival: {{process: poisson, rate: {rate:g}}}   # or gamma (cv), piecewise, closed (users)
    prompt_tokens: {{dist: lognormal, mean: 1000, cv: 1.0, max: 8000}}
    output_tokens: {{dist: lognormal, mean: 250, cv: 0.8, max: 2000}}
    # trace: {{path: builtin:azure_conv_2023.csv, format: azure}}   # replay a trace instead

slo:                         # what "good" means: the summary reports attainment and goodput
  ttft_s: 0.5
  tpot_s: 0.05
  percentile: 99
"""

IMAGE = """\
    batching:
      max_batch_size: 4            # requests denoised together (static batches)
      max_wait_s: 0.0              # how long a free replica waits for a batch to fill

classes:
  - name: images
    pool: {pool}
    arrival: {{process: poisson, rate: {rate:g}}}
    image: {{}}                      # the pipeline's default size, steps and guidance; e.g. {{width: 1024, height: 1024, steps: 30}}

slo:
  e2e_s: 10.0
  percentile: 99
"""


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


KV_REQUESTS = 64
"""The starter's TP holds the KV cache of this many requests of its mean length at once."""
MEAN_TOKENS = 1000 + 250


def _fitting_tp(model: str, gpu: str, replicas: int) -> int:
    """The smallest tensor-parallel size whose KV cache holds KV_REQUESTS mean requests (or,
    failing that, the largest that fits at all)."""
    from sim.config import PoolConfig
    from sim.errors import ConfigError, ServesimError
    from sim.fleet.pools import pool_kv_budget

    last: ServesimError | None = None
    fits = None
    for tp in (1, 2, 4, 8):
        try:
            budget = pool_kv_budget(
                PoolConfig(name="p", model=model, gpu=gpu, replicas=replicas, tensor_parallel_size=tp)
            )
        except ServesimError as exc:
            last = exc
            continue
        fits = tp
        if budget.capacity_tokens >= KV_REQUESTS * MEAN_TOKENS:
            return tp
    if fits is None:
        raise ConfigError(f"{model} does not fit on 8 x {gpu} either: {last}")
    return fits


def run(args) -> int:
    import yaml

    from sim import catalog
    from sim.config import parse_scenario
    from sim.errors import ConfigError

    llm = args.model in catalog.models()
    if not llm and args.model not in catalog.diffusion_models():
        names = ", ".join([*catalog.models(), *catalog.diffusion_models()])
        raise ConfigError(f"--model: unknown model {args.model!r}; allowed: {names}")
    if args.gpu not in catalog.gpus():
        raise ConfigError(f"--gpu: unknown GPU {args.gpu!r}; allowed: {', '.join(catalog.gpus())}")
    out = None if args.out == "-" else Path(args.out)
    if out is not None and out.exists() and not args.force:
        raise ConfigError(f"{out}: already exists; choose another -o or add --force to overwrite it")
    name = _slug(f"{args.model}-{args.gpu}")
    fields = dict(
        name=name,
        model=args.model,
        gpu=args.gpu,
        rate=args.rate,
        replicas=args.replicas,
        pool=_slug(args.model.split("-")[0]) or "pool",
        path=args.out if out is not None else "scenario.yaml",
    )
    if llm:
        fields["tp"] = _fitting_tp(args.model, args.gpu, args.replicas)
        text = HEAD.format(**fields) + TEXT.format(**fields)
    else:
        text = HEAD.format(**fields) + IMAGE.format(**fields)
    parse_scenario(yaml.safe_load(text), source="servesim init")  # what it writes must load
    if out is None:
        sys.stdout.write(text)
        return 0
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}: {args.model} on {args.replicas} x {args.gpu} at {args.rate:g} requests/s")
    print(f"next: servesim run {out} -o results/{name}")
    return 0
