"""A scenario brings its own models and GPUs (issue 20, item 5): an LLM read from a local
Hugging Face config.json, a GPU from its datasheet peaks, validated like the shipped entries,
seen by every process that simulates the scenario."""

import json
from pathlib import Path

import pytest
import yaml

from sim import catalog
from sim.cli import main
from sim.config import load_scenario, parse_scenario
from sim.errors import ConfigError
from sim.run import run_scenario

# Llama-3.2-1B's config.json, as Hugging Face ships it (the fields servesim reads, and others)
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "head_dim": 64,
    "vocab_size": 128256,
    "max_position_embeddings": 131072,
    "tie_word_embeddings": True,
    "rms_norm_eps": 1e-05,
    "rope_theta": 500000.0,
}


def scenario(model: str, gpu: str, **catalog_block) -> dict:
    return {
        "name": "custom",
        "seed": 4,
        "replications": 2,
        "duration_s": 60,
        "warmup_s": 5,
        **({"catalog": catalog_block} if catalog_block else {}),
        "pools": [{"name": "chat", "model": model, "gpu": gpu, "replicas": 1}],
        "classes": [
            {
                "name": "chat",
                "pool": "chat",
                "arrival": {"process": "poisson", "rate": 8},
                "prompt_tokens": {"dist": "lognormal", "mean": 800, "cv": 1.0, "max": 4000},
                "output_tokens": {"dist": "fixed", "value": 150},
            }
        ],
    }


def write(tmp_path: Path, raw: dict, config: dict = CONFIG) -> Path:
    (tmp_path / "config.json").write_text(json.dumps(config))
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_model_from_its_config_json_simulates_as_the_catalog_entry_of_the_same_shapes(tmp_path):
    """my-1b is Llama-3.2-1B read from its config.json: the same shapes, so the same run."""
    path = write(tmp_path, scenario("my-1b", "h100-sxm", models=[{"name": "my-1b", "config_json": "config.json"}]))
    mine = run_scenario(path)
    shipped = catalog.get_model("llama-3.2-1b")
    spec = catalog.get_model("my-1b")
    assert spec.params_total == shipped.params_total and spec.kv_bytes_per_token(2) == shipped.kv_bytes_per_token(2)
    theirs = run_scenario(parse_scenario(scenario("llama-3.2-1b", "h100-sxm")))
    a, b = mine.summary["classes"]["chat"], theirs.summary["classes"]["chat"]
    assert a == b


def test_a_gpu_from_its_peaks_is_flagged_as_assumed_and_priced(tmp_path, capsys):
    gpu = {"name": "my-gpu", "bf16_tflops": 400, "memory_gib": 96, "hbm_tb_s": 4.0, "price": {"usd_per_gpu_hour": 3.0}}
    path = write(tmp_path, scenario("llama-3.2-1b", "my-gpu", gpus=[gpu]))
    assert main(["run", str(path), "-o", str(tmp_path / "out"), "--no-plots", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "on my-gpu TP1" in out and "$3.00/GPU-h" in out and "my-gpu's roofline efficiencies are assumed" in out
    # what ran is written out whole: the scenario parses back without its files
    written = json.loads((tmp_path / "out" / "scenario.json").read_text())
    assert parse_scenario(written).catalog.gpus[0]["name"] == "my-gpu"


def test_worker_processes_see_the_scenario_entries(tmp_path, capsys):
    path = write(tmp_path, scenario("my-1b", "h100-sxm", models=[{"name": "my-1b", "config_json": "config.json"}]))
    argv = ["sweep", str(path), "--grid", "pools.chat.replicas=1,2", "-o", str(tmp_path / "sw"), "--workers", "2"]
    assert main(argv) == 0
    assert "2 points (2 run now" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("block", "config", "needle"),
    [
        ({"gpus": [{"name": "h100-sxm", "bf16_tflops": 1, "memory_gib": 80, "hbm_tb_s": 1, "price": {"usd_per_gpu_hour": 1}}]},
         CONFIG, "'h100-sxm' is already in the catalog with other values"),
        ({"gpus": [{"name": "g", "memory_gib": 80, "hbm_tb_s": 1, "price": {"usd_per_gpu_hour": 1}}]},
         CONFIG, "gpus.0 'g': bf16_tflops: Field required"),
        ({"models": [{"name": "moe", "config_json": "config.json"}]},
         {**CONFIG, "num_local_experts": 8}, "mixture-of-experts"),
        ({"models": [{"name": "m", "config_json": "missing.json"}]}, CONFIG, "cannot read"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_one_line_naming_it(tmp_path, capsys, block, config, needle):
    path = write(tmp_path, scenario("llama-3.2-1b", "h100-sxm", **block), config)
    with pytest.raises(ConfigError, match=needle):
        load_scenario(path)
    assert main(["validate-scenario", str(path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_catalog_files_shared_by_scenarios(tmp_path, capsys):
    """A catalog file (with its own config.json beside it) read in by `catalog: {files: [...]}`;
    what the run writes out holds the entries, not the paths."""
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "config.json").write_text(json.dumps(CONFIG))
    gpu = {
        "name": "shared-gpu",
        "bf16_tflops": 400,
        "memory_gib": 96,
        "hbm_tb_s": 4.0,
        "price": {"usd_per_gpu_hour": 3.0},
    }
    (shared / "catalog.yaml").write_text(
        yaml.safe_dump({"models": [{"name": "shared-1b", "config_json": "config.json"}], "gpus": [gpu]})
    )
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(scenario("shared-1b", "shared-gpu", files=["shared/catalog.yaml"])))
    assert main(["run", str(path), "-o", str(tmp_path / "out"), "--no-plots", "--quiet"]) == 0
    assert "1 x shared-1b on shared-gpu" in capsys.readouterr().out
    written = json.loads((tmp_path / "out" / "scenario.json").read_text())
    assert "files" not in written["catalog"] and written["catalog"]["models"][0]["num_layers"] == 16
    assert parse_scenario(written).catalog.gpus[0]["name"] == "shared-gpu"
    path.write_text(yaml.safe_dump(scenario("shared-1b", "shared-gpu", files=["shared/nothing.yaml"])))
    assert main(["validate-scenario", str(path)]) == 2
    assert "files.0" in capsys.readouterr().err
