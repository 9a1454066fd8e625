"""Profile step cost: fitted per-op forms read from a ``servesim-profile/1`` file.

A profile (``docs/profile-format.md``) holds what calibration measured for one (device, model,
dtype, tensor-parallel shard): a table over tokens for the token-parallel layers, a table over
sequences or a linear form for the LM head, linear forms for attention, all-reduce and the whole
step's host overhead. ``load_profile`` reads and validates one file (any problem is a one-line
``ConfigError`` naming the file and the field); ``ProfileCostModel`` and
``DiffusionProfileCost`` evaluate it per step.

The simulator calls ``step_s`` once per engine step, so the forms are compiled to plain floats
and Python lists when the model is built; per-token-count and per-sequence-count terms are
memoised. A step whose feature lies beyond ``extrapolation_limit`` x the measured maximum raises
``ProfileRangeError``.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, NoReturn

from sim import catalog
from sim.config import read_yaml, short_repr, yaml_type
from sim.costs.base import StepLine, StepShape
from sim.errors import ConfigError, ServesimError

FORMAT = "servesim-profile/1"

#: Ops of an LLM profile: the forms each may take, with the form's features (a linear form's
#: exact feature set; a table's one implied feature) (``docs/profile-format.md``, "LLM").
LLM_OPS: dict[str, dict[str, tuple[str, ...]]] = {
    "lin_layer": {"table": ("num_tokens",)},
    "attn_decode": {"linear": ("const", "num_decode", "decode_ctx_sum")},
    "attn_prefill": {
        "linear": ("const", "prefill_attn_pairs", "prefill_ctx_sum", "num_prefill_seqs", "num_prefill_tokens")
    },
    "allreduce": {"linear": ("const", "num_tokens")},
    "lm_head": {"linear": ("const", "num_seqs"), "table": ("num_seqs",)},
    "step": {"linear": ("ops_sum", "const", "num_seqs")},
}
#: Ops of a diffusion profile (``docs/profile-format.md``, "Diffusion").
DIFFUSION_OPS: dict[str, dict[str, tuple[str, ...]]] = {
    "denoise_step": {"linear": ("const", "rows", "row_tokens", "row_tokens_sq")},
    "text_encode": {"linear": ("const", "prompts")},
    "vae_decode": {"linear": ("const", "images", "pixels")},
}

# Fields the format defines. Readers ignore other keys (writers may add their own metadata);
# only op names are a closed set, so a misspelt op is an error, not a silently missing cost.
_TOP_FIELDS = ("format", "kind", "model", "dtype", "tp", "layers", "device", "source", "extrapolation_limit", "ops")
_DEVICE_FIELDS = ("type", "name", "gpu", "torch", "cuda", "driver", "threads")
_SOURCE_FIELDS = ("tool", "created", "raw", "git_sha", "quick", "notes")
_FIT_FIELDS = ("median_rel", "max_rel", "points", "held_out")
_LINEAR_FIELDS = ("form", "features", "coef", "range", "source", "fit_error")
_TABLE_FIELDS = ("form", "x", "y_s", "slope_s", "source", "fit_error")
_OP_SOURCES = ("measured", "roofline", "vidur")
_DTYPES = ("float32", "bfloat16", "float16")


_HINTS = {
    "llm": "e.g. a lower max_num_batched_tokens or max_num_seqs",
    "diffusion": "e.g. a lower max_batch_size, or smaller images",
}


class ProfileRangeError(ServesimError):
    """A step asks a profile for a feature beyond its extrapolation limit."""


# --------------------------------------------------------------------------- the file's contents


@dataclass(frozen=True, slots=True)
class LinearOp:
    """seconds = sum(coef[i] * feature[i]); ``range`` is the measured [min, max] per feature."""

    name: str
    features: tuple[str, ...]
    coef: tuple[float, ...]
    range: MappingProxyType
    """Non-const feature -> (min, max) measured."""
    source: str
    fit_error: MappingProxyType

    def coef_of(self, feature: str) -> float:
        return self.coef[self.features.index(feature)]

    def seconds(self, **values: float) -> float:
        """The op at the given feature values (``const`` is 1); slow, for tests and reports."""
        return sum(c * (1.0 if f == "const" else values[f]) for f, c in zip(self.features, self.coef))


@dataclass(frozen=True, slots=True)
class TableOp:
    """Seconds at measured points, linear in between, flat below, ``slope_s`` per unit above."""

    name: str
    feature: str
    """The one feature the op is a table over (implied by the op: num_tokens, num_seqs)."""
    x: tuple[float, ...]
    y_s: tuple[float, ...]
    slope_s: float
    source: str
    fit_error: MappingProxyType

    def seconds(self, value: float) -> float:
        return _interpolate(list(self.x), list(self.y_s), self.slope_s, value)


@dataclass(frozen=True, slots=True)
class Device:
    type: str
    name: str
    gpu: str | None
    """Catalog GPU key when the device is one; None for a CPU (or an uncatalogued device)."""
    torch: str | None = None
    cuda: str | None = None
    driver: str | None = None
    threads: int | None = None


@dataclass(frozen=True, slots=True)
class Profile:
    """A validated profile file."""

    path: Path
    kind: str
    """llm or diffusion."""
    model: str
    dtype: str
    tp: int
    layers: int | None
    """LLM: the model's layer count (per-layer ops are multiplied by it); diffusion: None."""
    device: Device
    source: MappingProxyType
    extrapolation_limit: float
    ops: MappingProxyType
    """Op name -> LinearOp or TableOp."""


def _interpolate(xs: list[float], ys: list[float], slope: float, value: float) -> float:
    if value <= xs[0]:
        return ys[0]
    if value >= xs[-1]:
        return ys[-1] + slope * (value - xs[-1])
    i = bisect.bisect_right(xs, value)
    x0, x1 = xs[i - 1], xs[i]
    y0 = ys[i - 1]
    return y0 + (ys[i] - y0) * (value - x0) / (x1 - x0)


# --------------------------------------------------------------------------- loading


def load_profile(path: str | os.PathLike) -> Profile:
    """Read and validate a profile. Raises ConfigError (one line: file, field, what is allowed)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a profile file")
    if not path.is_file():
        raise ConfigError(f"{path}: profile file not found")
    stat = path.stat()
    return _load_cached(str(path.resolve()), stat.st_mtime_ns, stat.st_size, str(path))


@functools.lru_cache(maxsize=32)
def _load_cached(resolved: str, mtime_ns: int, size: int, shown: str) -> Profile:
    # Keyed on the file's mtime and size: replications and pools reuse one parse, an edited
    # file is read again.
    path = Path(shown)
    raw = read_yaml(Path(resolved), "profile file", path)
    return _Reader(path).profile(raw)


class _Reader:
    """Validates a parsed profile; every failure names the file and the field path."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, where: str, msg: str) -> NoReturn:
        raise ConfigError(" ".join(f"{self.path}: {where}: {msg}".splitlines()))

    # -- scalars
    def mapping(
        self, value: Any, where: str, fields: tuple[str, ...], required: tuple[str, ...], closed: bool = False
    ) -> dict:
        """Check a mapping's required fields. Other keys are a writer's extensions (a fit's
        roofline efficiencies, measured peaks ...) and are ignored, unless ``closed``."""
        if not isinstance(value, dict):
            self.fail(where, f"expected a mapping of fields, got {yaml_type(value)}")
        prefix = "" if where == "(top level)" else f"{where}."
        for key in value if closed else ():
            if key not in fields:
                self.fail(f"{prefix}{key}", f"unknown field; allowed: {', '.join(fields)}")
        for key in required:
            if key not in value:
                self.fail(f"{prefix}{key}", "required field is missing")
        return value

    def choice(self, value: Any, where: str, allowed: tuple[str, ...]) -> str:
        if value not in allowed or not isinstance(value, str):
            self.fail(where, f"expected one of {', '.join(allowed)} (got {short_repr(value)})")
        return value

    def text(self, value: Any, where: str, nullable: bool = False) -> str | None:
        if value is None and nullable:
            return None
        if isinstance(value, datetime.date):  # an unquoted YAML timestamp (source.created)
            return value.isoformat()
        if isinstance(value, bool) or not isinstance(value, str | int | float) or value == "":
            self.fail(
                where, f"expected {'a string or null' if nullable else 'a non-empty string'} (got {short_repr(value)})"
            )
        return str(value)

    def integer(self, value: Any, where: str, minimum: int, nullable: bool = False) -> int | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            self.fail(where, f"expected an integer >= {minimum} (got {short_repr(value)})")
        return value

    def number(self, value: Any, where: str, minimum: float = 0.0, nullable: bool = False) -> float | None:
        if value is None and nullable:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
            self.fail(where, f"expected a finite number >= {minimum:g} (got {short_repr(value)})")
        return float(value)

    def numbers(self, value: Any, where: str, length: int | None = None) -> tuple[float, ...]:
        if not isinstance(value, list) or not value:
            self.fail(where, f"expected a non-empty list of numbers (got {yaml_type(value)})")
        if length is not None and len(value) != length:
            self.fail(where, f"expected {length} values, one per entry of features/x (got {len(value)})")
        return tuple(self.number(v, f"{where}[{i}]") for i, v in enumerate(value))

    # -- the file
    def profile(self, raw: Any) -> Profile:
        if raw is None:
            self.fail("(top level)", "profile file is empty; expected a servesim-profile/1 mapping")
        if not isinstance(raw, dict):
            self.fail("(top level)", f"a profile must be a YAML mapping of fields (got {yaml_type(raw)})")
        if raw.get("format") != FORMAT:
            self.fail("format", f"expected {FORMAT!r} (got {short_repr(raw.get('format'))})")
        kind = self.choice(raw.get("kind"), "kind", ("llm", "diffusion"))
        required = [f for f in _TOP_FIELDS if f != "layers"] + (["layers"] if kind == "llm" else [])
        self.mapping(raw, "(top level)", _TOP_FIELDS, tuple(required))
        known = catalog.models() if kind == "llm" else catalog.diffusion_models()
        model = self.text(raw["model"], "model")
        if model not in known:
            self.fail("model", f"unknown {kind} model {model!r}; allowed: {', '.join(known)}")
        dtype = self.choice(raw["dtype"], "dtype", _DTYPES)
        tp = self.integer(raw["tp"], "tp", 1)
        layers = self.integer(raw["layers"], "layers", 1) if kind == "llm" else None
        limit = self.number(raw["extrapolation_limit"], "extrapolation_limit", 1.0)
        device = self.device(raw["device"])
        source = self.source(raw["source"])
        ops = self.ops(raw["ops"], kind, tp)
        return Profile(
            self.path, kind, model, dtype, tp, layers, device, MappingProxyType(source), limit, MappingProxyType(ops)
        )

    def device(self, raw: Any) -> Device:
        d = self.mapping(raw, "device", _DEVICE_FIELDS, ("type", "name"))
        gpu = self.text(d.get("gpu"), "device.gpu", nullable=True)
        if gpu is not None and gpu not in catalog.gpus():
            self.fail(
                "device.gpu", f"unknown gpu {gpu!r}; allowed: {', '.join(catalog.gpus())} or null (not a catalog GPU)"
            )
        return Device(
            type=self.choice(d["type"], "device.type", ("cpu", "cuda")),
            name=self.text(d["name"], "device.name"),
            gpu=gpu,
            torch=self.text(d.get("torch"), "device.torch", nullable=True),
            cuda=self.text(d.get("cuda"), "device.cuda", nullable=True),
            driver=self.text(d.get("driver"), "device.driver", nullable=True),
            threads=self.integer(d.get("threads"), "device.threads", 1, nullable=True),
        )

    def source(self, raw: Any) -> dict:
        s = self.mapping(raw, "source", _SOURCE_FIELDS, ("tool",))
        out = {"tool": self.text(s["tool"], "source.tool")}
        for key in ("created", "raw", "git_sha"):
            out[key] = self.text(s.get(key), f"source.{key}", nullable=True)
        quick = s.get("quick", False)
        if not isinstance(quick, bool):
            self.fail("source.quick", f"expected true or false (got {short_repr(quick)})")
        notes = s.get("notes", [])
        if not isinstance(notes, list) or not all(isinstance(n, str) for n in notes):
            self.fail("source.notes", "expected a list of strings")
        out["quick"], out["notes"] = quick, tuple(notes)
        return out

    def ops(self, raw: Any, kind: str, tp: int) -> dict:
        spec = LLM_OPS if kind == "llm" else DIFFUSION_OPS
        names = tuple(spec)
        required = tuple(n for n in names if n != "allreduce" or tp > 1)
        ops = self.mapping(raw, "ops", names, required, closed=True)
        if kind == "llm" and tp == 1 and "allreduce" in ops:
            self.fail("ops.allreduce", "only a profile with tp > 1 has an allreduce op")
        out = {}
        for name in names:
            if name in ops:
                out[name] = self.op(ops[name], f"ops.{name}", name, spec[name])
        return out

    def op(self, raw: Any, where: str, name: str, forms: dict[str, tuple[str, ...]]):
        if not isinstance(raw, dict):
            self.fail(where, f"expected a mapping of fields, got {yaml_type(raw)}")
        form = raw.get("form")
        if not isinstance(form, str) or form not in forms:
            allowed = " or ".join(repr(f) for f in forms)
            self.fail(f"{where}.form", f"{name} must be form {allowed} (got {short_repr(form)})")
        features = forms[form]
        if form == "table":
            self.mapping(raw, where, _TABLE_FIELDS, _TABLE_FIELDS)
            x = self.numbers(raw["x"], f"{where}.x")
            if any(b <= a for a, b in zip(x, x[1:])):
                self.fail(f"{where}.x", "points must be strictly increasing")
            y = self.numbers(raw["y_s"], f"{where}.y_s", len(x))
            slope = self.number(raw["slope_s"], f"{where}.slope_s")
            return TableOp(
                name, features[0], x, y, slope, self.op_source(raw, where), self.fit_error(raw["fit_error"], where)
            )
        self.mapping(raw, where, _LINEAR_FIELDS, _LINEAR_FIELDS)
        got = raw["features"]
        if not isinstance(got, list) or sorted(map(str, got)) != sorted(features) or len(set(got)) != len(got):
            what = ""
            if isinstance(got, list):
                missing = [f for f in features if f not in got]
                unknown = [str(f) for f in got if f not in features]
                what = "".join(
                    f"; {label}: {', '.join(names)}"
                    for label, names in (("missing", missing), ("not a feature of this op", unknown))
                    if names
                )
            self.fail(
                f"{where}.features",
                f"expected the features {list(features)} in any order{what} (got {short_repr(got)})",
            )
        coef = self.numbers(raw["coef"], f"{where}.coef", len(got))
        return LinearOp(
            name,
            tuple(got),
            coef,
            MappingProxyType(self.ranges(raw["range"], f"{where}.range", got)),
            self.op_source(raw, where),
            self.fit_error(raw["fit_error"], where),
        )

    def ranges(self, raw: Any, where: str, features: list[str]) -> dict[str, tuple[float, float]]:
        names = [f for f in features if f != "const"]
        if isinstance(raw, list):
            # Also accepted: one [min, max] per non-const feature, in the order of `features`.
            if len(raw) != len(names):
                self.fail(where, f"expected one [min, max] per non-const feature {names} (got {len(raw)})")
            raw = dict(zip(names, raw))
        if not isinstance(raw, dict):
            self.fail(where, f"expected a mapping feature: [min, max] (got {yaml_type(raw)})")
        out = {}
        for key in raw:
            if key not in names:
                self.fail(f"{where}.{key}", f"not a non-const feature of this op; allowed: {', '.join(names)}")
        for f in names:
            if f not in raw:
                self.fail(f"{where}.{f}", "required field is missing (the measured [min, max])")
            pair = raw[f]
            if not isinstance(pair, list) or len(pair) != 2:
                self.fail(f"{where}.{f}", f"expected [min, max] (got {short_repr(pair)})")
            lo = self.number(pair[0], f"{where}.{f}[0]")
            hi = self.number(pair[1], f"{where}.{f}[1]")
            if lo > hi:
                self.fail(f"{where}.{f}", f"min ({lo:g}) must be <= max ({hi:g})")
            out[f] = (lo, hi)
        return out

    def op_source(self, raw: dict, where: str) -> str:
        return self.choice(raw["source"], f"{where}.source", _OP_SOURCES)

    def fit_error(self, raw: Any, where: str) -> MappingProxyType:
        where = f"{where}.fit_error"
        fe = self.mapping(raw, where, _FIT_FIELDS, _FIT_FIELDS)
        return MappingProxyType(
            {
                "median_rel": self.number(fe["median_rel"], f"{where}.median_rel", nullable=True),
                "max_rel": self.number(fe["max_rel"], f"{where}.max_rel", nullable=True),
                "points": self.integer(fe["points"], f"{where}.points", 0),
                "held_out": self.integer(fe["held_out"], f"{where}.held_out", 0),
            }
        )


# --------------------------------------------------------------------------- evaluation


class _Limits:
    """Extrapolation checks of one profile: feature -> largest value answered."""

    __slots__ = ("profile", "limit")

    def __init__(self, profile: Profile):
        self.profile = profile
        self.limit: dict[tuple[str, str], float] = {}
        lim = profile.extrapolation_limit
        for name, op in profile.ops.items():
            if isinstance(op, TableOp):
                self.limit[name, op.feature] = lim * op.x[-1]
            else:
                for feature, (_, hi) in op.range.items():
                    self.limit[name, feature] = lim * hi

    def get(self, op: str, feature: str) -> float:
        return self.limit.get((op, feature), math.inf)

    def check(self, op: str, feature: str, value: float) -> None:
        if value > self.limit.get((op, feature), math.inf):
            self.fail(op, feature, value)

    def fail(self, op: str, feature: str, value: float) -> NoReturn:
        p = self.profile
        o = p.ops[op]
        lo, hi = (o.x[0], o.x[-1]) if isinstance(o, TableOp) else o.range[feature]
        raise ProfileRangeError(
            f"{p.path}: op {op}: {feature} = {value:g} is beyond the profile's extrapolation limit "
            f"({p.extrapolation_limit:g} x the measured range [{lo:g}, {hi:g}]); profile a wider range or "
            f"keep the scenario inside it ({_HINTS[p.kind]})"
        )


class ProfileCostModel:
    """LLM step time from a profile::

        ops_sum = layers x (lin_layer(num_tokens) + attn_decode + attn_prefill + allreduce)
                  + lm_head(num_seqs)
        step_s  = step.coef . [ops_sum, 1, num_seqs]

    ``attn_decode`` applies when the step has decodes, ``attn_prefill`` when it has prefill
    tokens, ``allreduce`` when tp > 1; ``lm_head`` is a table over num_seqs or linear in it.
    Decode-only steps are evaluated through ``decode_line``, so the two agree exactly.
    """

    name = "profile"

    def __init__(self, profile: Profile):
        if profile.kind != "llm":
            raise ConfigError(f"{profile.path}: kind: an LLM pool needs an llm profile (got {profile.kind!r})")
        self.profile = profile
        self.limits = _Limits(profile)
        ops = profile.ops
        self._L = float(profile.layers)
        lin = ops["lin_layer"]
        self._xs, self._ys, self._slope = list(lin.x), list(lin.y_s), lin.slope_s
        ad, ap, head, step = ops["attn_decode"], ops["attn_prefill"], ops["lm_head"], ops["step"]
        self._ad = (ad.coef_of("const"), ad.coef_of("num_decode"), ad.coef_of("decode_ctx_sum"))
        self._ap = tuple(ap.coef_of(f) for f in LLM_OPS["attn_prefill"]["linear"])
        ar = ops.get("allreduce") if profile.tp > 1 else None
        self._ar = (ar.coef_of("const"), ar.coef_of("num_tokens")) if ar is not None else None
        # lm_head over num_seqs: a table (x, y_s, slope_s) or const + per-sequence coefficients.
        self._head_table = (list(head.x), list(head.y_s), head.slope_s) if isinstance(head, TableOp) else None
        self._head = (0.0, 0.0) if self._head_table else (head.coef_of("const"), head.coef_of("num_seqs"))
        self._step = (step.coef_of("ops_sum"), step.coef_of("const"), step.coef_of("num_seqs"))
        lim = self.limits.get
        self._lim_tokens = min(
            lim("lin_layer", "num_tokens"), lim("allreduce", "num_tokens") if ar is not None else math.inf
        )
        self._lim_seqs = min(lim("lm_head", "num_seqs"), lim("step", "num_seqs"))
        self._lim_ops = lim("step", "ops_sum")
        self._lim_dec = lim("attn_decode", "num_decode")
        self._lim_ctx = lim("attn_decode", "decode_ctx_sum")
        self._lim_pre = tuple(lim("attn_prefill", f) for f in LLM_OPS["attn_prefill"]["linear"][1:])
        self._per_tokens: dict[int, float] = {}
        self._per_seqs: dict[int, float] = {}
        self._decode: dict[int, tuple[float, float, float, float, float]] = {}
        """num_decode -> (intercept, slope, largest context answered, ops_sum intercept, slope)."""
        self._lines: dict[int, StepLine] = {}

    def _tokens_s(self, n: int) -> float:
        """layers x (lin_layer + allreduce) at n tokens (range-checked once per n, memoised)."""
        t = self._per_tokens.get(n)
        if t is None:
            if n > self._lim_tokens:
                self.limits.check("lin_layer", "num_tokens", n)
                self.limits.check("allreduce", "num_tokens", n)
            t = _interpolate(self._xs, self._ys, self._slope, n)
            if self._ar is not None:
                t += self._ar[0] + self._ar[1] * n
            t = self._per_tokens[n] = self._L * t
        return t

    def _seqs_s(self, n: int) -> float:
        """lm_head at n sequences (lm_head's and step's num_seqs range-checked once per n, memoised)."""
        t = self._per_seqs.get(n)
        if t is None:
            if n > self._lim_seqs:
                self.limits.check("lm_head", "num_seqs", n)
                self.limits.check("step", "num_seqs", n)
            if self._head_table is not None:
                t = _interpolate(*self._head_table, n)
            else:
                t = self._head[0] + self._head[1] * n
            self._per_seqs[n] = t
        return t

    def decode_line(self, num_decode: int) -> StepLine:
        line = self._lines.get(num_decode)
        if line is None:
            if num_decode <= 0:
                return StepLine([(0.0, 0.0)])
            n = num_decode
            if n > self._lim_dec:
                self.limits.check("attn_decode", "num_decode", n)
            head = self._seqs_s(n)
            d0, d1, d2 = self._ad
            ops_a = self._tokens_s(n) + self._L * (d0 + d1 * n) + head
            ops_s = self._L * d2
            if ops_a > self._lim_ops:
                self.limits.check("step", "ops_sum", ops_a)
            c_ops, c0, c_seq = self._step
            a, s = c_ops * ops_a + c0 + c_seq * n, c_ops * ops_s
            # The largest summed context this line answers: attn_decode's own limit, or where
            # ops_sum (affine in the context too) reaches step's.
            ctx_max = self._lim_ctx
            if ops_s > 0:
                ctx_max = min(ctx_max, (self._lim_ops - ops_a) / ops_s)
            self._decode[n] = (a, s, ctx_max, ops_a, ops_s)
            line = self._lines[n] = StepLine([(a, s)])
        return line

    def step_s(self, shape: StepShape) -> float:
        n = shape.num_tokens
        if n == 0:
            return 0.0
        nd = shape.num_decode
        num_seqs = shape.num_seqs
        if not shape.num_prefill_tokens and num_seqs == nd:
            entry = self._decode.get(nd)
            if entry is None:
                self.decode_line(nd)
                entry = self._decode[nd]
            a, s, ctx_max, ops_a, ops_s = entry
            ctx = shape.decode_ctx_sum
            if ctx > ctx_max:
                self.limits.check("attn_decode", "decode_ctx_sum", ctx)
                self.limits.check("step", "ops_sum", ops_a + ops_s * ctx)
            return a + s * ctx
        L = self._L
        check = self.limits.check
        ops = self._per_tokens.get(n)
        if ops is None:
            ops = self._tokens_s(n)
        head = self._per_seqs.get(num_seqs)
        ops += self._seqs_s(num_seqs) if head is None else head
        if nd:
            ctx = shape.decode_ctx_sum
            if nd > self._lim_dec or ctx > self._lim_ctx:
                check("attn_decode", "num_decode", nd)
                check("attn_decode", "decode_ctx_sum", ctx)
            d0, d1, d2 = self._ad
            ops += L * (d0 + d1 * nd + d2 * ctx)
        ptok = shape.num_prefill_tokens
        if ptok:
            pairs, pctx, pseqs = shape.prefill_attn_pairs, shape.prefill_ctx_sum, num_seqs - nd
            lim = self._lim_pre
            if pairs > lim[0] or pctx > lim[1] or pseqs > lim[2] or ptok > lim[3]:
                check("attn_prefill", "prefill_attn_pairs", pairs)
                check("attn_prefill", "prefill_ctx_sum", pctx)
                check("attn_prefill", "num_prefill_seqs", pseqs)
                check("attn_prefill", "num_prefill_tokens", ptok)
            p0, p_pairs, p_ctx, p_seqs, p_tok = self._ap
            ops += L * (p0 + p_pairs * pairs + p_ctx * pctx + p_seqs * pseqs + p_tok * ptok)
        if ops > self._lim_ops:
            check("step", "ops_sum", ops)
        c_ops, c0, c_seq = self._step
        return c_ops * ops + c0 + c_seq * num_seqs


class DiffusionProfileCost:
    """Diffusion stage times from a profile: ``denoise_step`` over (rows, rows x tokens,
    rows x tokens^2), ``text_encode`` over prompts, ``vae_decode`` over (images, pixels)."""

    name = "profile"

    def __init__(self, profile: Profile):
        if profile.kind != "diffusion":
            raise ConfigError(
                f"{profile.path}: kind: a diffusion pool needs a diffusion profile (got {profile.kind!r})"
            )
        self.profile = profile
        self.limits = _Limits(profile)
        ops = profile.ops
        self._den = tuple(ops["denoise_step"].coef_of(f) for f in DIFFUSION_OPS["denoise_step"]["linear"])
        self._text = tuple(ops["text_encode"].coef_of(f) for f in DIFFUSION_OPS["text_encode"]["linear"])
        self._vae = tuple(ops["vae_decode"].coef_of(f) for f in DIFFUSION_OPS["vae_decode"]["linear"])
        self._steps: dict[tuple[int, int], float] = {}

    def text_encode_s(self, num_prompts: int) -> float:
        if num_prompts <= 0:
            return 0.0
        self.limits.check("text_encode", "prompts", num_prompts)
        return self._text[0] + self._text[1] * num_prompts

    def denoise_step_s(self, rows: int, tokens: int) -> float:
        if rows <= 0:
            return 0.0
        t = self._steps.get((rows, tokens))
        if t is None:
            row_tokens, row_tokens_sq = rows * tokens, rows * tokens * tokens
            check = self.limits.check
            check("denoise_step", "rows", rows)
            check("denoise_step", "row_tokens", row_tokens)
            check("denoise_step", "row_tokens_sq", row_tokens_sq)
            c0, c_rows, c_tok, c_sq = self._den
            t = self._steps[rows, tokens] = c0 + c_rows * rows + c_tok * row_tokens + c_sq * row_tokens_sq
        return t

    def vae_decode_s(self, num_images: int, width: int, height: int, frames: int) -> float:
        if num_images <= 0:
            return 0.0
        pixels = num_images * width * height * frames
        self.limits.check("vae_decode", "images", num_images)
        self.limits.check("vae_decode", "pixels", pixels)
        return self._vae[0] + self._vae[1] * num_images + self._vae[2] * pixels


# --------------------------------------------------------------------------- a pool's profile


def check_profile_for_pool(profile: Profile, pool_name: str, model: str, gpu: str, tp: int, diffusion: bool) -> None:
    """Raise ConfigError (one line) unless ``profile`` describes the pool's model, kind, TP
    degree and (when the profile names one) GPU. A profile with ``device.gpu`` null (a CPU
    profile) is accepted on any GPU; the pool's GPU still sets memory, KV capacity and price."""
    where = f"{profile.path}: pool {pool_name!r}"
    kind = "diffusion" if diffusion else "llm"
    if profile.kind != kind:
        raise ConfigError(
            f"{where}: profile is kind {profile.kind!r}, the pool serves a{'n' * (kind == 'llm')} {kind} model ({model})"
        )
    if profile.model != model:
        raise ConfigError(f"{where}: profile is for model {profile.model}, the pool runs {model}")
    if profile.tp != tp:
        raise ConfigError(f"{where}: profile has tp {profile.tp}, the pool's tensor_parallel_size is {tp}")
    if profile.device.gpu is not None and profile.device.gpu != gpu:
        raise ConfigError(f"{where}: profile was measured on {profile.device.gpu}, the pool runs on {gpu}")
    if kind == "llm":
        layers = catalog.get_model(model).num_layers
        if profile.layers != layers:
            raise ConfigError(f"{where}: profile has layers {profile.layers}, {model} has {layers} in the catalog")
