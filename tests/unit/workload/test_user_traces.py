"""Readers for the request files users have: BurstGPT, a CSV of one's own, a vllm bench result,
ShareGPT-style conversations and ServeGen client fits (sim.workload.readers, .servegen)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sim.config import parse_scenario
from sim.errors import TraceError
from sim.workload.readers import SESSION_BLOCK_TOKENS, ReadOptions, read_records
from sim.workload.servegen import _weibull_shape, generate
from sim.workload.traces import read_lengths, read_trace, sample_path

BURST = sample_path("burstgpt_format_example.csv")
LOG = sample_path("requests_log_example.csv")
BENCH = sample_path("vllm_bench_example.json")
SHARE = sample_path("sharegpt_example.json")
SERVEGEN = sample_path("servegen_deepseek_r1_chunk-70-trace.csv")
LOG_COLUMNS = {"arrival": "sent_at_ms", "prompt": "input_tokens", "output": "output_tokens"}


def test_burstgpt_drops_failed_rows_and_filters():
    raw = pd.read_csv(BURST)
    ok = raw[raw["Response tokens"] > 0]
    t = read_trace(BURST, "burstgpt")
    assert len(t) == len(ok) < len(raw)  # the sample has failures (0 response tokens)
    assert t.duration_s == ok["Timestamp"].max() - ok["Timestamp"].min()
    assert sorted(t.prompt_tokens.tolist()) == sorted(ok["Request tokens"].tolist())
    gpt4 = read_trace(BURST, "burstgpt", options=ReadOptions(where={"Model": ("GPT-4",)}))
    assert len(gpt4) == int((ok["Model"] == "GPT-4").sum())
    with pytest.raises(TraceError, match="where names column 'Tenant'"):
        read_trace(BURST, "burstgpt", options=ReadOptions(where={"Tenant": ("x",)}))
    with pytest.raises(TraceError, match="no row matches where Model = Claude .column .Model. holds ChatGPT, GPT-4."):
        read_trace(BURST, "burstgpt", options=ReadOptions(where={"Model": ("Claude",)}))


def test_generic_csv_units_and_lengths_only(tmp_path):
    raw = pd.read_csv(LOG)
    t = read_trace(LOG, "csv", options=ReadOptions(columns=LOG_COLUMNS, time_unit="ms"))
    assert t.duration_s == pytest.approx((raw["sent_at_ms"].max() - raw["sent_at_ms"].min()) / 1000)
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("when,p,o\n2026-01-31 13:05:00,10,5\n2026-01-31 13:05:02.5,20,6\n")
    cols = {"arrival": "when", "prompt": "p", "output": "o"}
    t = read_trace(stamps, "csv", options=ReadOptions(columns=cols, time_unit="datetime"))
    assert t.arrival_s.tolist() == [0.0, 2.5]
    pairs_only = ReadOptions(columns={"prompt": "input_tokens", "output": "output_tokens"})
    prompt, _ = read_lengths(LOG, "csv", pairs_only)
    assert prompt.tolist() == raw["input_tokens"].tolist()
    with pytest.raises(TraceError, match="no arrival column is named"):
        read_trace(LOG, "csv", options=pairs_only)
    with pytest.raises(TraceError, match="missing column"):
        read_trace(LOG, "csv", options=ReadOptions(columns={**LOG_COLUMNS, "prompt": "tokens_in"}))


def test_vllm_bench_result_lengths_and_the_load_it_was_run_at(tmp_path):
    data = json.loads(BENCH.read_text())
    prompt, output = read_lengths(BENCH, "vllm-bench")
    good = [i for i, e in enumerate(data["errors"]) if not e and data["output_lens"][i] > 0]
    assert len(prompt) == len(good) == data["num_prompts"] - 1
    assert output.tolist() == [data["output_lens"][i] for i in good]
    with pytest.raises(TraceError, match=r"request_rate 4: arrival: \{process: gamma, rate: 4, cv: 1\}"):
        read_trace(BENCH, "vllm-bench")
    timed = dict(data, start_times=[100.0 + 0.25 * i for i in range(len(data["input_lens"]))])
    path = tmp_path / "timed.json"
    path.write_text(json.dumps(timed))
    t = read_trace(path, "vllm-bench")
    assert len(t) == len(good) and t.duration_s == pytest.approx(0.25 * (len(data["input_lens"]) - 1))


def test_sharegpt_turns_carry_their_conversation_and_share_its_prefix():
    data = json.loads(SHARE.read_text())
    rec = read_records(SHARE, "sharegpt", ReadOptions(chars_per_token=4), with_times=False)
    turns = sum(len(c["conversations"]) // 2 for c in data)
    assert len(rec.prompt_tokens) == turns
    # The second turn of the first conversation: its prompt is the whole conversation before
    # its answer.
    msgs = [math.ceil(len(m["value"]) / 4) for m in data[0]["conversations"]]
    assert rec.prompt_tokens[:3].tolist() == [msgs[0], sum(msgs[:3]), sum(msgs[:5])]
    assert rec.output_tokens[:3].tolist() == [msgs[1], msgs[3], msgs[5]]
    assert rec.session.tolist()[:4] == [0, 0, 0, 1]
    # A later turn's prefix ids start with every id of the turn before (its prompt grows).
    h0, h1 = rec.prefix_hashes[0], rec.prefix_hashes[1]
    assert h1[: len(h0)] == h0 and len(h1) == -(-int(rec.prompt_tokens[1]) // SESSION_BLOCK_TOKENS)
    assert not set(rec.prefix_hashes[3]) & set(h1)  # another conversation shares nothing
    with pytest.raises(TraceError, match="needs the transformers package|cannot load tokenizer"):
        read_records(SHARE, "sharegpt", ReadOptions(tokenizer="no-such-folder"), with_times=False)
    with pytest.raises(TraceError, match="a conversation file has no arrival times"):
        read_trace(SHARE, "sharegpt")


def test_weibull_shape_reproduces_the_coefficient_of_variation():
    from scipy.special import gamma

    for cv in (0.3, 1.0, 2.5, 6.0):
        k = _weibull_shape(cv)
        assert math.sqrt(gamma(1 + 2 / k) / gamma(1 + 1 / k) ** 2 - 1) == pytest.approx(cv, rel=1e-6)


def test_servegen_stream_carries_each_windows_rate_and_length_distribution():
    """Theory: the count of a renewal process over T seconds has mean rate*T and variance about
    rate*T*cv^2; summed over the day's windows, the generated count must fall within 4 standard
    deviations of the recorded rates' total."""
    rows = pd.read_csv(SERVEGEN, header=None).drop_duplicates(0)
    expected = float((rows[1] * 600).sum())
    sd = math.sqrt(float((rows[1] * 600 * rows[2].clip(lower=1e-9) ** 2).sum()))
    arrival, prompt, output = generate(SERVEGEN, np.random.default_rng(5))
    assert abs(len(arrival) - expected) < 4 * sd
    assert np.all(np.diff(arrival) >= 0) and arrival[-1] < 86_400
    data = json.loads(SERVEGEN.with_name(SERVEGEN.name.replace("-trace.csv", "-dataset.json")).read_text())
    import ast

    pmf = ast.literal_eval(data["0"]["output_tokens"])
    mean = sum(v * p for v, p in pmf.items()) / sum(pmf.values())
    early = output[arrival < 21_600]
    assert abs(early.mean() - mean) < 4 * early.std() / math.sqrt(len(early))
    # A window of the day, reproducibly.
    a1 = generate(SERVEGEN, np.random.default_rng(9), start_s=43_200, duration_s=3_600)[0]
    a2 = generate(SERVEGEN, np.random.default_rng(9), start_s=43_200, duration_s=3_600)[0]
    assert np.array_equal(a1, a2) and a1.max() < 3_600


@pytest.mark.parametrize(
    "trace",
    [
        {"path": "builtin:burstgpt_format_example.csv", "format": "burstgpt", "where": {"Log Type": "API log"}},
        {"path": "builtin:requests_log_example.csv", "format": "csv", "columns": LOG_COLUMNS, "time_unit": "ms"},
        {"path": "builtin:servegen_deepseek_r1_chunk-70-trace.csv", "format": "servegen", "start_s": 36000},
    ],
)
def test_each_format_runs_in_a_scenario(trace):
    from sim.run import run_scenario

    raw = {
        "name": "t",
        "seed": 1,
        "duration_s": 120,
        "pools": [{"name": "p", "model": "llama-3.2-1b", "gpu": "l40s", "replicas": 1}],
        "classes": [{"name": "c", "pool": "p", "trace": trace}],
    }
    res = run_scenario(parse_scenario(raw))
    cons = res.summary["conservation"]
    assert (
        cons["arrived"] > 0
        and cons["arrived"] == cons["finished"] + cons["rejected"] + cons["failed"] + cons["in_flight"]
    )


def test_scenario_fields_are_checked():
    from sim.errors import ConfigError

    base = {
        "name": "t",
        "duration_s": 10,
        "pools": [{"name": "p", "model": "llama-3.2-1b", "gpu": "l40s"}],
    }
    for trace, message in [
        ({"path": "x.csv", "format": "csv"}, "the csv format needs 'columns'"),
        ({"path": "x.csv", "format": "azure", "where": {"a": "b"}}, "'where' filters csv and burstgpt rows"),
        ({"path": "x.json", "format": "sharegpt"}, "a sharegpt file has no arrival times"),
    ]:
        with pytest.raises((ConfigError, ValueError), match=message):
            parse_scenario({**base, "classes": [{"name": "c", "pool": "p", "trace": trace}]})
