"""Output that survives a pipe (issue 20, item 1 and 2): with standard output not a terminal,
no table cell is cut (rich assumed 80 columns: `$0.…`, `a100-…`, `134,10` over `8`), and a
job that takes a while says how it is doing in lines on stderr."""

from pathlib import Path

import yaml

from sim import catalog
from sim.cli import main

ROOT = Path(__file__).resolve().parents[2]


def check_whole(out: str) -> None:
    assert "…" not in out, [line for line in out.splitlines() if "…" in line][:3]


def test_catalog_prints_every_name_whole(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["catalog"]) == 0
    out = capsys.readouterr().out
    check_whole(out)
    for names in (catalog.models(), catalog.diffusion_models(), catalog.gpus()):
        assert all(f" {name} " in out for name in names)
    # each GPU says whether its roofline efficiencies were fitted or are assumed (issue 20, item 5)
    for name, gpu in catalog.gpus().items():
        row = next(line for line in out.splitlines() if line.startswith(f"│ {name} "))
        assert ("fitted" if gpu.efficiency.fitted else "assumed") in row
    assert "meta-llama/Llama-3.2-1B" in out  # where an LLM's shapes come from


def test_price_prints_whole_figures_and_progress_on_stderr(capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    argv = [
        "price",
        str(ROOT / "scenarios/pricing_study.yaml"),
        "--prices",
        str(ROOT / "scenarios/prices/example.yaml"),
    ]
    assert main([*argv, "--set", "duration_s=30", "--set", "warmup_s=5", "--loads", "0.5"]) == 0
    captured = capsys.readouterr()
    check_whole(captured.out)
    assert "$0.1/$0.3 per 1M in/out tokens" in captured.out  # a cell that used to read `$0.…`
    assert "price: simulating pricing_study" in captured.err and "price: done" in captured.err


def test_sweep_and_plan_print_whole_tables_and_progress_on_stderr(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    argv = [
        "sweep",
        str(ROOT / "scenarios/quickstart.yaml"),
        "--grid",
        "pools.chat.replicas=1,2",
        "-o",
        str(tmp_path / "s"),
    ]
    assert main([*argv, "--set", "duration_s=60", "--set", "classes.chat.arrival.rate=40", "--workers", "1"]) == 0
    captured = capsys.readouterr()
    check_whole(captured.out)
    assert "sweep: 2/2 points" in captured.err
    # the overloaded point's p99 TTFT is tens of thousands of ms: printed whole, on one line
    assert any(len(c) >= 5 and c.isdigit() for c in (cell.strip().replace(",", "") for cell in captured.out.split("│")))

    raw = yaml.safe_load((ROOT / "scenarios/plan_image_service.yaml").read_text())
    raw["plan"]["gpus"] = raw["plan"]["gpus"][:1]
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["plan", str(path), "--workers", "1", "--set", "duration_s=120"])
    assert code in (0, 1)
    captured = capsys.readouterr()
    check_whole(captured.out)
    assert "plan: searching for the cheapest fleet" in captured.err and "replications simulated" in captured.err
