"""What a command writes under ``-o``: never through a link, atomically, and nothing left from
an earlier run beside it (issue 19, item 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sim.cli import main
from sim.outputs import write_text_atomic

BASE = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


def small(tmp_path: Path) -> Path:
    raw = yaml.safe_load(BASE.read_text())
    raw["duration_s"], raw["warmup_s"], raw["replications"] = 15, 2, 1
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def run(argv, capsys):
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr()


def test_run_replaces_a_link_instead_of_writing_through_it(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "summary.json").symlink_to(victim)
    code, _ = run(["run", str(small(tmp_path)), "-o", str(out), "--no-plots"], capsys)
    assert code in (0, None)
    assert victim.read_text() == "precious"
    assert not (out / "summary.json").is_symlink() and json.loads((out / "summary.json").read_text())["scenario"]


def test_a_rerun_leaves_nothing_of_the_earlier_one(tmp_path, capsys):
    out = tmp_path / "out"
    scenario = small(tmp_path)
    assert run(["run", str(scenario), "-o", str(out)], capsys)[0] in (0, None)
    assert (out / "latency_cdf.png").is_file()
    (out / "report.html").write_text("<html>the old results</html>")
    assert run(["run", str(scenario), "-o", str(out), "--no-plots"], capsys)[0] in (0, None)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["requests.parquet", "scenario.json", "summary.json", "timeseries.parquet"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "plan.json"
    write_text_atomic(path, "old")

    def boom(p: Path) -> None:
        p.write_text("half")
        raise OSError("disk full")

    from sim.outputs import write_atomic

    with pytest.raises(OSError):
        write_atomic(path, boom)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]


def test_a_cut_journal_line_is_dropped_before_the_next_append(tmp_path):
    from sim.journal import append, cut_partial_line
    from sim.plan import read_cache

    path = tmp_path / "evaluations.jsonl"
    path.write_text('{"key": "a", "x": 1}\n{"key": "b", "x"')
    cut_partial_line(path)
    append(path, {"key": "c", "x": 3})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]
    assert set(read_cache(path)) <= {"a", "c"}


def test_journals_are_not_written_through_links(tmp_path, capsys):
    from sim.errors import ConfigError
    from sim.journal import append, read_records

    target = tmp_path / "elsewhere.jsonl"
    target.write_text("")
    link = tmp_path / "results.jsonl"
    link.symlink_to(target)
    with pytest.raises(ConfigError, match="symbolic link"):
        append(link, {"id": 1})
    with pytest.raises(ConfigError, match="symbolic link"):
        read_records(link, "id")
