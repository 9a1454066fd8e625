"""The Vidur importer: shipped profiles are what the copied data gives, its table is Vidur's sums,
and its step times stay near the roofline's."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from calibration import vidur

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "profiles" / "vidur"
H100_7B = SHIPPED / "llama-2-7b-h100-sxm-float16-tp1.yaml"
#: Fields that say when and from which servesim commit a file was generated.
STAMPS = ("created", "git_sha")


def unstamped(text: str) -> dict:
    raw = yaml.safe_load(text)
    for key in STAMPS:
        raw["source"].pop(key)
    return raw


def test_the_importer_reproduces_the_shipped_profiles(tmp_path):
    written = vidur.write_all(tmp_path)
    names = sorted(p.name for p in written)
    assert names == sorted(p.name for p in SHIPPED.iterdir() if p.suffix in (".yaml", ".csv"))
    for path in written:
        shipped = (SHIPPED / path.name).read_text()
        if path.suffix == ".csv":
            assert path.read_text() == shipped, f"{path.name} differs from the shipped raw points"
        else:
            assert unstamped(path.read_text()) == unstamped(shipped), f"{path.name} differs from the shipped profile"


def test_h100_llama2_7b_table_is_the_summed_medians_of_the_copied_csv():
    csv = vidur.mlp_path(vidur.DATA, vidur.NODES[0], "meta-llama/Llama-2-7b-hf")
    assert vidur.NODES[0].gpu == "h100-sxm"
    df = pd.read_csv(csv)
    medians = [c for c in df.columns if c.endswith(".median")]
    assert len(medians) == 9  # the per-block ops Vidur sums; `emb` was not copied
    tp1 = df[df["num_tensor_parallel_workers"] == 1]
    lin = yaml.safe_load(H100_7B.read_text())["ops"]["lin_layer"]
    for n in (1, 4096):
        rows = tp1[tp1["num_tokens"] == n]
        assert len(rows) >= 1
        want_s = rows[medians].sum(axis=1).mean() * 1e-3  # ms -> s; 4096 is measured twice: averaged
        got_s = lin["y_s"][lin["x"].index(n)]
        assert got_s == pytest.approx(want_s, rel=1e-9)
    assert lin["source"] == "vidur" and lin["fit_error"]["held_out"] == len(lin["x"]) - 2


def test_tensor_parallel_profiles_include_the_measured_allreduce():
    for path in sorted(SHIPPED.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        ops = raw["ops"]
        if raw["tp"] == 1:
            assert "allreduce" not in ops, path.name
            continue
        ar = ops["allreduce"]
        assert ar["source"] == "vidur" and ar["features"] == ["const", "num_tokens"], path.name
        assert all(c > 0 for c in ar["coef"]), path.name
        assert any("all_reduce.csv" in note for note in raw["source"]["notes"]), path.name


def test_every_shipped_profile_loads_and_names_its_sources():
    pytest.importorskip("pydantic")  # the simulator's loader (absent on bare GPU machines)
    from sim.costs import load_profile

    paths = sorted(SHIPPED.glob("*.yaml"))
    assert H100_7B in paths
    for path in paths:
        profile = load_profile(path)
        assert profile.device.gpu in ("h100-sxm", "a100-80gb") and profile.dtype == "float16"
        assert (path.parent / profile.source["raw"]).is_file()
        notes = " ".join(profile.source["notes"])
        assert vidur.VIDUR_COMMIT in notes and "roofline" in notes
        sources = {name: op.source for name, op in profile.ops.items()}
        assert sources["lin_layer"] == "vidur" and sources["attn_decode"] == sources["attn_prefill"] == "roofline"


def _shape(decodes=(), prefills=()):
    from sim.costs import StepShape

    s = StepShape()
    for ctx in decodes:
        s.add_decode(ctx)
    for new, cached in prefills:
        s.add_prefill(new, cached)
    return s


@pytest.mark.parametrize("batch", [1, 8, 32, 64, 128, 256])
@pytest.mark.parametrize("ctx", [128, 500])  # 256 x 500 tokens of KV still fit one H100
def test_llama2_7b_h100_decode_steps_agree_with_the_roofline_within_1_5x(batch, ctx):
    pytest.importorskip("pydantic")
    from sim import catalog
    from sim.costs import ProfileCostModel, RooflineCostModel, load_profile

    profile = ProfileCostModel(load_profile(H100_7B))
    roofline = RooflineCostModel(catalog.get_model("llama-2-7b"), catalog.get_gpu("h100-sxm"))
    shape = _shape([ctx] * batch)
    p, r = profile.step_s(shape), roofline.step_s(shape)
    print(f"llama-2-7b h100 decode batch {batch} ctx {ctx}: profile {p * 1e3:.3f} ms, roofline {r * 1e3:.3f} ms")
    assert 1 / 1.5 <= p / r <= 1.5


PREFILL_SHAPES = {
    "prefill 512": ((), [(512, 0)]),
    "prefill 2048": ((), [(2048, 0)]),
    "32 decodes + 512-token chunk": ([500] * 32, [(512, 0)]),
    "32 decodes + 512-token chunk after 1536 cached": ([500] * 32, [(512, 1536)]),
}


@pytest.mark.parametrize("name", list(PREFILL_SHAPES))
def test_llama2_7b_h100_prefill_steps_agree_with_the_roofline_within_1_5x(name):
    pytest.importorskip("pydantic")
    from sim import catalog
    from sim.costs import ProfileCostModel, RooflineCostModel, load_profile

    profile = ProfileCostModel(load_profile(H100_7B))
    roofline = RooflineCostModel(catalog.get_model("llama-2-7b"), catalog.get_gpu("h100-sxm"))
    shape = _shape(*PREFILL_SHAPES[name])
    p, r = profile.step_s(shape), roofline.step_s(shape)
    print(f"llama-2-7b h100 {name}: profile {p * 1e3:.3f} ms, roofline {r * 1e3:.3f} ms, ratio {p / r:.3f}")
    assert 1 / 1.5 <= p / r <= 1.5


@pytest.mark.parametrize("name", list(PREFILL_SHAPES))
def test_roofline_made_prefill_attention_sums_the_rooflines_compute_and_kv_terms(name):
    """attn_prefill charges roofline.py's FLOPs of the causal pairs and its KV bytes, the cached
    prefix read and the chunk's own K/V write, summed where the roofline takes their max."""
    pytest.importorskip("pydantic")
    from sim import catalog
    from sim.costs import RooflineCostModel, load_profile

    prof = load_profile(H100_7B)
    roofline = RooflineCostModel(catalog.get_model("llama-2-7b"), catalog.get_gpu("h100-sxm"))
    s = _shape(*PREFILL_SHAPES[name])
    op = prof.ops["attn_prefill"]
    got = prof.layers * op.seconds(
        prefill_attn_pairs=s.prefill_attn_pairs,
        prefill_ctx_sum=s.prefill_ctx_sum,
        num_prefill_seqs=s.num_seqs - s.num_decode,
        num_prefill_tokens=s.num_prefill_tokens,
    )
    flops = roofline._attn_flop_s_per_pair * s.prefill_attn_pairs
    kv = roofline._kv_s_per_token * (s.prefill_ctx_sum + s.num_prefill_tokens)
    assert got == pytest.approx(flops + kv, rel=1e-9)
