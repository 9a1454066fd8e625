"""Sweeps: a grid of scenario variants, run in parallel, each finished point saved as it lands.

    servesim sweep SCENARIO --grid pools.chat.replicas=1,2,4 --grid classes.chat.arrival.rate=5,10,20 -o DIR

A grid maps ``--set`` key paths to the values each takes; its points are the cartesian product,
and a point is exactly ``servesim run SCENARIO --set BASE... --set KEY=VALUE...``. A point's id
is a hash of its canonical JSON, so it does not depend on the order of ``--grid`` options.

The output directory holds two files:

* ``sweep.json``: what was swept (scenario, base overrides, a hash of the base scenario, the
  grid, the servesim version); written before any point runs.
* ``results.jsonl``: one JSON line per finished point (its overrides, id, wall time, host, and
  the flat planning metrics of ``flat_metrics``), appended, flushed and fsynced as each point
  completes.

A re-run in the same directory skips the points already in ``results.jsonl`` (a truncated last
line, left by a kill in the middle of a write, is cut off and its point runs again) and refuses a
different base scenario, or a different grid unless told to extend it. Points run on a local
process pool (``concurrent.futures``) or as Ray tasks. Workers only simulate and return a record;
the driver is the only process that writes to the directory.

Module-level imports stay light: the CLI imports this module to build its parser.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sim import __version__, journal
from sim.console import plain_number, yaml_text
from sim.errors import ConfigError, ServesimError
from sim.parallel import Failure, run_local, run_ray

if TYPE_CHECKING:
    import pandas as pd

    from sim.config import Scenario

SWEEP_FILE = "sweep.json"
RESULTS_FILE = "results.jsonl"
LOCK_FILE = ".sweep.lock"

Grid = dict[str, list[Any]]
"""Key path (as for ``--set``) -> the values it takes, in order."""
ProgressFn = Callable[[int, int, "dict | None"], None]
"""``progress(done, total, record)``: once at the start with the points already finished
(record None), then after each point is written, with its results line."""


class SweepError(ServesimError):
    """Points failed for a reason other than their input (a worker crashed or raised)."""


# --------------------------------------------------------------------------- grid


def parse_grid(specs: Sequence[str] = (), grid_file: str | os.PathLike | None = None) -> Grid:
    """Build a grid from ``--grid KEY.PATH=V1,V2,...`` options and a YAML grid file.

    Values are read as a YAML flow sequence, ``[V1,V2,...]``: ``1,2,4`` are integers,
    ``poisson,gamma`` strings, ``{process: gamma, rate: 5, cv: 2},{process: poisson, rate: 5}``
    two mappings; a value that holds a comma is quoted or bracketed. A grid file is a mapping
    ``KEY.PATH: [values]`` (a single value needs no list). A key given twice, an empty value
    list or a repeated value is a one-line ConfigError."""
    from sim.config import parse_yaml_text, read_yaml

    grid: Grid = {}
    if grid_file is not None:
        path = Path(grid_file)
        raw = read_yaml(path, "grid file")
        if not isinstance(raw, dict) or not raw:
            raise ConfigError(f"{path}: a grid file must be a YAML mapping of KEY.PATH: [V1, V2, ...]")
        for key, values in raw.items():
            _add_axis(grid, str(key), values if isinstance(values, list) else [values], f"{path}: {key}")
    for spec in specs:
        key, sep, text = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--grid {spec!r}: expected KEY.PATH=V1,V2,...")
        try:
            values = parse_yaml_text(f"[{text}]", f"--grid {key}")
        except ConfigError:
            raise ConfigError(
                f"--grid {key}: values are not valid YAML: {text!r} (write V1,V2,...; quote a value that holds a comma)"
            ) from None
        _add_axis(grid, key, values, f"--grid {key}")
    return grid


def _add_axis(grid: Grid, key: str, values: list[Any], where: str) -> None:
    if not all(key.split(".")):
        raise ConfigError(f"{where}: a key path is names or indices joined by dots (pools.chat.replicas)")
    if key in grid:
        raise ConfigError(f"{where}: the key is given twice (by --grid or --grid-file)")
    if not values:
        raise ConfigError(f"{where}: no values")
    seen = set()
    for value in values:
        try:
            text = _canonical(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"{where}: value {value!r} is not a number, string, boolean, null, list or mapping"
            ) from None
        if text in seen:
            raise ConfigError(f"{where}: value {yaml_text(value)} is given twice")
        seen.add(text)
    grid[key] = list(values)


def expand_grid(grid: Grid) -> list[dict[str, Any]]:
    """The cartesian product of a grid, in order: the last key varies fastest."""
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_id(point: dict[str, Any]) -> str:
    """A stable id for a point: the same overrides give the same id whatever their order."""
    return hashlib.sha256(_canonical(point).encode()).hexdigest()[:16]


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Point:
    """One grid point: the overrides it applies on top of the base scenario."""

    id: str
    overrides: dict[str, Any]

    @property
    def set_args(self) -> list[str]:
        """The point as ``--set`` strings."""
        return [f"{k}={yaml_text(v)}" for k, v in self.overrides.items()]

    @property
    def label(self) -> str:
        return " ".join(self.set_args)


@dataclass
class SweepPlan:
    """A validated sweep: the base scenario, and every point's scenario."""

    scenario_path: Path
    base_dir: Path
    overrides: list[str]
    grid: Grid
    base_sha256: str
    points: list[Point]
    scenarios: dict[str, Scenario]


def plan_sweep(scenario_path: str | os.PathLike, grid: Grid, overrides: Sequence[str] = ()) -> SweepPlan:
    """Load the base scenario (with ``overrides``, as ``--set``), then apply and validate every
    point, including the checks a run makes before simulating (model fits its GPU, trace and
    profile files exist). The first bad point is a one-line ConfigError naming it and the field."""
    from sim.config import load_scenario
    from sim.costs.factory import check_cost_models
    from sim.fleet.pools import check_pool_fits
    from sim.workload.stream import check_trace_files

    if not grid:
        raise ConfigError("a sweep needs a grid: --grid KEY.PATH=V1,V2,... (repeatable) or --grid-file FILE")
    checked: Grid = {}  # a grid built in Python gets the checks parse_grid makes
    for key, values in grid.items():
        _add_axis(checked, key, list(values) if isinstance(values, list | tuple) else [values], f"grid {key}")
    grid = checked
    path = Path(scenario_path)
    base, base_dir = load_scenario(path, list(overrides))
    base_dir = base_dir.resolve()  # workers may run elsewhere (a Ray node, another cwd)
    points, scenarios = [], {}
    for values in expand_grid(grid):
        point = Point(point_id(values), values)
        try:
            scenario, _ = load_scenario(path, [*overrides, *point.set_args])
            for pool in scenario.pools:
                check_pool_fits(pool)
            check_trace_files(scenario, base_dir)
            check_cost_models(scenario, base_dir)
        except ServesimError as exc:
            # Base overrides were valid on their own, so a "--set KEY" here names a grid key.
            raise ConfigError(f"grid point {point.label}: {str(exc).removeprefix('--set ')}") from None
        points.append(point)
        scenarios[point.id] = scenario
    digest = hashlib.sha256(base.model_dump_json().encode()).hexdigest()
    return SweepPlan(path, base_dir, list(overrides), grid, digest, points, scenarios)


# --------------------------------------------------------------------------- metrics

_CLASS_METRICS = (
    "throughput_rps",
    "goodput_rps",
    "slo_attainment",
    "rejected_fraction",
    "failed_fraction",
    "overloaded",
    "output_tokens_per_s",
    "images_per_s",
    "video_seconds_per_s",
    "cost_per_1m_output_tokens_usd",
    "cost_per_image_usd",
    "cost_per_video_second_usd",
    "request_cost_usd_mean",
)
_LATENCY = {"text": ("ttft_s", "tpot_s", "e2e_s")}  # image, pipeline, mixed: e2e_s


def flat_metrics(summary: dict, kinds: dict[str, str]) -> tuple[dict[str, Any], dict[str, float]]:
    """The planning metrics of a run summary as flat ``{name: mean}`` and ``{name: ci95}``
    (the second only where there is a CI: two or more replications). ``kinds`` maps each class
    (and ``all``) to text, image, pipeline or mixed.

    Per class ``C``: ``C.ttft_s_p50``, ``_p90``, ``_p99`` (and the SLO's percentile), the same for
    ``tpot_s`` and ``e2e_s`` (image, pipeline and mixed classes: ``e2e_s`` only), throughput,
    goodput, SLO attainment and ``C.slo_met`` (None without an SLO), overload, rejected and
    failed fractions, tokens or images per second, cost per 1M output tokens, per image, per
    video second, per request. Per pool ``P``: ``pool.P.replicas``, ``num_gpus``,
    ``usd_per_hour``, ``busy_fraction``, ``mean_batch``, ``mean_kv_util`` (LLM) or
    ``mean_memory_util`` (diffusion). Fleet: ``fleet.num_gpus``, ``fleet.usd_per_hour``.
    Simulation: ``sim.requests``, ``sim.engine_steps``, ``sim.simulated_s``. NaN is None."""
    means: dict[str, Any] = {}
    ci95: dict[str, float] = {}

    def put(key: str, value: Any) -> None:
        if isinstance(value, dict):  # an Estimate: mean, ci95, n
            means[key] = plain_number(value["mean"])
            hw = plain_number(value["ci95"])
            if hw is not None:
                ci95[key] = hw
        else:
            means[key] = plain_number(value)

    for cls, st in summary["classes"].items():
        slo = summary["slo"].get(cls)
        percentiles = ["50", "90", "99"]
        if slo and f"{slo['percentile']:g}" not in percentiles:
            percentiles.append(f"{slo['percentile']:g}")
        for metric in _LATENCY.get(kinds.get(cls, "mixed"), ("e2e_s",)):
            for p in percentiles:
                if f"{metric}_p{p}" in st:
                    put(f"{cls}.{metric}_p{p}", st[f"{metric}_p{p}"])
        for name in _CLASS_METRICS:
            if name in st:
                put(f"{cls}.{name}", st[name])
        means[f"{cls}.slo_met"] = summary["slo_met"].get(cls)
    gpus = usd = 0.0
    for name, pool in summary["pools"].items():
        n = pool["replicas"] * pool["tensor_parallel_size"]
        gpus += n
        usd += n * pool["price_per_gpu_hour"]
        put(f"pool.{name}.replicas", pool["replicas"])
        put(f"pool.{name}.num_gpus", n)
        put(f"pool.{name}.usd_per_hour", n * pool["price_per_gpu_hour"])
        for key in ("busy_fraction", "mean_batch", "mean_kv_util", "mean_memory_util"):
            if key in pool:
                put(f"pool.{name}.{key}", pool[key])
    put("fleet.num_gpus", int(gpus))
    put("fleet.usd_per_hour", usd)
    for key in ("requests", "engine_steps", "simulated_s"):
        put(f"sim.{key}", summary["simulation"][key])
    return means, ci95


def class_kinds(scenario: Scenario) -> dict[str, str]:
    kinds = {c.name: c.kind for c in scenario.classes}
    uniform = set(kinds.values())
    kinds["all"] = uniform.pop() if len(uniform) == 1 else "mixed"
    return kinds


# --------------------------------------------------------------------------- workers


def run_point(task: tuple[str, Scenario, str]) -> dict[str, Any]:
    """Simulate one point in a worker (a top-level function: spawn- and Ray-safe). Returns
    the point's results (without its overrides, which the driver adds). A user error, such as
    a warm-up past a trace's last arrival, is a result too: it would recur on a re-run."""
    from sim.run import run_scenario

    pid, scenario, base_dir = task
    t0 = time.perf_counter()
    out: dict[str, Any] = {"id": pid}
    try:
        result = run_scenario(scenario, Path(base_dir))
    except ServesimError as exc:
        out["error"] = str(exc)
    else:
        out["metrics"], out["ci95"] = flat_metrics(result.summary, class_kinds(scenario))
    out["wall_s"] = round(time.perf_counter() - t0, 6)
    out["host"] = socket.gethostname()
    out["servesim_version"] = __version__
    return out


Task = tuple[str, "Scenario", str]


# --------------------------------------------------------------------------- the output directory


def read_results(out_dir: str | os.PathLike) -> list[dict]:
    """The records in ``out_dir/results.jsonl``, in file order. Lines that are not complete
    JSON objects (a write cut short by a kill) are skipped; a point seen twice keeps its first."""
    return journal.read_records(Path(out_dir) / RESULTS_FILE, "id")


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One driver per output directory. The lock goes with the process (a killed sweep leaves
    none behind)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks here; one writer is the user's to ensure
        yield
        return
    with (out_dir / LOCK_FILE).open("w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{out_dir}: another sweep is running in this directory") from None
        yield


def _manifest(plan: SweepPlan) -> dict[str, Any]:
    return {
        "servesim_version": __version__,
        "scenario": str(plan.scenario_path),
        "overrides": plan.overrides,
        "scenario_sha256": plan.base_sha256,
        "grid": plan.grid,
        "points": len(plan.points),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _check_manifest(out_dir: Path, plan: SweepPlan, extend: bool) -> None:
    """Write sweep.json for a new sweep; for a re-run, check that it is the same sweep."""
    path = out_dir / SWEEP_FILE
    for name in (SWEEP_FILE, RESULTS_FILE):
        if (out_dir / name).is_symlink():
            raise ConfigError(
                f"{out_dir / name}: is a symbolic link; servesim writes its own files, never through a link"
            )
    if not path.exists():
        if (out_dir / RESULTS_FILE).exists():
            raise ConfigError(f"{out_dir}: holds {RESULTS_FILE} but no {SWEEP_FILE}; use another output directory")
        _write_json(path, _manifest(plan))
        return
    try:
        old = json.loads(path.read_text())
        old_grid, old_sha = old["grid"], old["scenario_sha256"]
    except (ValueError, KeyError, TypeError, OSError):
        raise ConfigError(f"{path}: not a servesim sweep file; use another output directory") from None
    if old_sha != plan.base_sha256:
        sets = " ".join(f"--set {o}" for o in old.get("overrides", []))
        raise ConfigError(
            f"{out_dir}: holds a sweep of a different base scenario (there: {old.get('scenario')}{' ' + sets if sets else ''}; "
            f"the scenario file or the --set options differ); use another output directory"
        )
    same = {point_id(p) for p in expand_grid(old_grid)} == {p.id for p in plan.points}
    if not same:
        if not extend:
            raise ConfigError(
                f"{out_dir}: holds a sweep over another grid ({_grid_diff(old_grid, plan.grid)}); "
                f"pass --extend to run this grid there too (finished points are reused), or use another output directory"
            )
        _write_json(
            path,
            {
                **_manifest(plan),
                "created": old.get("created"),
                "extended": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )


def _grid_diff(old: Grid, new: Grid) -> str:
    def shown(values: list | None) -> str:
        return "absent" if values is None else ",".join(yaml_text(v) for v in values)

    parts = [
        f"{key}: {shown(old.get(key))} there, {shown(new.get(key))} here"
        for key in dict.fromkeys([*old, *new])
        if _canonical(old.get(key)) != _canonical(new.get(key))
    ]
    return "; ".join(parts)


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    journal.fsync_dir(path.parent)


# --------------------------------------------------------------------------- the driver


def run_sweep(
    scenario_path: str | os.PathLike,
    grid: Grid,
    out_dir: str | os.PathLike,
    *,
    overrides: Sequence[str] = (),
    backend: str = "local",
    workers: int | None = None,
    address: str | None = None,
    extend: bool = False,
    progress: ProgressFn | None = None,
) -> pd.DataFrame:
    """Run every point of ``grid`` over the scenario (with ``overrides`` applied first, as
    ``--set``) that ``out_dir/results.jsonl`` does not hold yet, and return one row per point
    of the grid (see ``results_frame``).

    ``backend``: ``local`` (a process pool of ``workers`` processes, default all usable cores)
    or ``ray`` (one task per point; ``ray.init(address)`` unless Ray is initialised already, at
    most ``workers`` in flight if given). Every point is validated before anything runs or is
    written. Bad input raises ConfigError; points whose worker failed for another reason raise
    SweepError at the end, after every other point has run and been saved."""
    if backend not in ("local", "ray"):
        raise ConfigError(f"backend: expected local or ray, got {backend!r}")
    if workers is not None and workers < 1:
        raise ConfigError(f"workers: expected a positive integer, got {workers!r}")
    from sim.run import check_output_dir

    plan = plan_sweep(scenario_path, grid, overrides)
    out = Path(out_dir)
    check_output_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE
    with _locked(out):
        _check_manifest(out, plan, extend)
        journal.cut_partial_line(results_path)
        done = {r["id"]: r for r in read_results(out)}
        pending = [p for p in plan.points if p.id not in done]
        total, finished = len(plan.points), len(plan.points) - len(pending)
        if progress is not None:
            progress(finished, total, None)
        failures: list[Failure] = []
        by_id = {p.id: p for p in pending}
        if pending:
            tasks = [(p.id, plan.scenarios[p.id], str(plan.base_dir)) for p in pending]
            if backend == "local":
                records = run_local(tasks, workers, failures, run_point)
            else:
                records = run_ray(tasks, workers, address, failures, run_point)
            journal.refuse_link(results_path)
            try:
                for result in records:
                    point = by_id[result.pop("id")]
                    version = result.pop("servesim_version")
                    if version != __version__:
                        raise ConfigError(
                            f"point {point.label} ran on {result['host']} with servesim {version}, this driver has "
                            f"{__version__}: install the same servesim everywhere"
                        )
                    record = {
                        "id": point.id,
                        "point": point.overrides,
                        "finished_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
                        "wall_s": result.pop("wall_s"),
                        "host": result.pop("host"),
                        **result,  # error, or metrics and ci95
                    }
                    journal.append(results_path, record)
                    done[point.id] = record
                    finished += 1
                    if progress is not None:
                        progress(finished, total, record)
            finally:
                records.close()  # stops the workers if the loop above was interrupted
        if failures:
            first, exc = failures[0]
            text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            if type(exc).__name__ == "BrokenProcessPool":
                text += (
                    " (a worker process died: out of memory, killed, or it could not start; a script that calls "
                    "run_sweep needs `if __name__ == '__main__':`)"
                )
            raise SweepError(
                f"{len(failures)} of {total} points failed (first: {by_id[first].label}: {type(exc).__name__}: {text}); "
                f"the {finished} finished points are in {results_path}; run the sweep again to retry the others"
            ) from exc
    return results_frame([done[p.id] for p in plan.points], list(plan.grid))


def results_frame(records: Sequence[dict], grid_keys: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per record: ``id``, the grid keys, ``error`` (when a point has one), the flat
    metrics (means; see ``flat_metrics``), ``wall_s``. ``grid_keys`` default: every key of
    every record's point, in order of first appearance."""
    import pandas as pd

    if grid_keys is None:
        grid_keys = list(dict.fromkeys(k for r in records for k in r["point"]))
    metric_keys = list(dict.fromkeys(k for r in records for k in r.get("metrics", {})))
    errors = any("error" in r for r in records)
    rows = []
    for r in records:
        row = {"id": r["id"], **{k: r["point"].get(k) for k in grid_keys}}
        if errors:
            row["error"] = r.get("error")
        row.update(r.get("metrics", {}))
        row["wall_s"] = r.get("wall_s")
        rows.append(row)
    columns = ["id", *grid_keys, *(["error"] if errors else []), *metric_keys, "wall_s"]
    return pd.DataFrame(rows, columns=columns)


# --------------------------------------------------------------------------- the command


MAX_TABLE_ROWS = 60


def sweep_table(df: pd.DataFrame, base: Scenario, grid_keys: list[str]):
    """A table (``sim.console.Table``): one row per point (the first ``MAX_TABLE_ROWS``), the grid
    values then a few key metrics: per class, latency at its SLO's percentile (or p99) and
    whether the SLO is met, plus throughput and cost when there is one class; the fleet's GPUs
    and $/hour."""
    from sim.console import Table

    def num(scale: float = 1.0) -> Callable[[Any], str]:
        def fmt(v: Any) -> str:
            if v is None or v != v:
                return "-"
            x = v * scale
            return f"{x:,.0f}" if abs(x) >= 1000 else f"{x:.3g}"  # 134,000, not 1.34e+05

        return fmt

    def met(v: Any) -> str:
        return "-" if v is None or v != v else ("met" if v else "missed")

    cols: list[tuple[str, str, Callable[[Any], str]]] = []
    full = len(base.classes) == 1  # several classes: latency and SLO each, or it cannot fit
    for cls in base.classes:
        who = "" if full else f"{cls.name} "
        slo = base.slo_for(cls)
        p = f"{slo.percentile:g}" if slo else "99"
        if cls.kind == "text":
            cols.append((f"{cls.name}.ttft_s_p{p}", f"{who}TTFT p{p} ms", num(1e3)))
            if full:
                cols.append((f"{cls.name}.tpot_s_p{p}", f"TPOT p{p} ms", num(1e3)))
        else:
            cols.append((f"{cls.name}.e2e_s_p{p}", f"{who}E2E p{p} s", num()))
        if full:
            cols.append((f"{cls.name}.throughput_rps", "req/s", num()))
        if slo:
            cols.append((f"{cls.name}.slo_met", f"{who}SLO", met))
        if full and cls.kind == "text":
            cols.append((f"{cls.name}.cost_per_1m_output_tokens_usd", "$/1M out tok", num()))
        elif full and cls.kind == "image":
            cols.append((f"{cls.name}.cost_per_image_usd", "$/1k images", num(1e3)))
    cols += [("fleet.num_gpus", "GPUs", num()), ("fleet.usd_per_hour", "$/hour", num())]
    cols = [c for c in cols if c[0] in df.columns]
    from sim.console import term

    table = Table(
        title=f"sweep of {term(base.name)}: {len(df)} points over {' x '.join(grid_keys)}", title_justify="left"
    )
    rows = [dict(zip(df.columns, row)) for row in df.head(MAX_TABLE_ROWS).itertuples(index=False)]
    cells = [[yaml_text(plain_number(r[k])) for k in grid_keys] + [fmt(r[key]) for key, _, fmt in cols] for r in rows]
    for header in _short_keys(grid_keys) + [label for _, label, _ in cols]:  # fold, never cut a value
        table.add_column(header, justify="right", overflow="fold")
    errors = "error" in df.columns
    if errors:  # one line each; `servesim sweep` prints the first in full under the table
        table.add_column("error")
    for r, row_cells in zip(rows, cells):
        if errors:
            text = r["error"] if isinstance(r["error"], str) else ""
            row_cells.append(text if len(text) <= 32 else text[:31] + "…")
        table.add_row(*row_cells)
    if len(df) > MAX_TABLE_ROWS:
        table.add_row(f"... {len(df) - MAX_TABLE_ROWS} more", *[""] * (len(table.columns) - 1))
    return table


def _short_keys(keys: list[str]) -> list[str]:
    """The shortest dotted suffix of each key (two parts at least, not starting at a list index)
    that no other key ends with: pools.chat.replicas -> chat.replicas,
    classes.chat.arrival.rate -> arrival.rate, pools.1.replicas stays whole."""
    out = []
    for key in keys:
        parts = key.split(".")
        for n in range(min(2, len(parts)), len(parts) + 1):
            tail = ".".join(parts[-n:])
            if parts[-n].lstrip("-").isdigit() and n < len(parts):
                continue  # 1.replicas says less than pools.1.replicas
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                break
        out.append(tail)
    return out
