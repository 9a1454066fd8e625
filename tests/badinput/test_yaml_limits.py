"""YAML that would hang, exhaust memory, crash or be misread: every way a scenario, a grid, a
price list or a ``--set`` value is read ends in one line naming the file (and line), exit 2,
within 5 s and 500 MB (issue 19, item 9)."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from sim.cli import main
from sim.config import MAX_YAML_BYTES, parse_yaml_text

ALIAS_BOMB = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
    f"{x}: &{x} [{', '.join([f'*{p}'] * 9)}]\n" for p, x in zip("abcdefgh", "bcdefghi")
)  # 9^9 values from 300 bytes
DEEP = "name: x\npools: " + "[" * 5000 + "]" * 5000 + "\n"
BASE = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


def run_cli(argv: list[str], capsys) -> tuple[object, str]:
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (ALIAS_BOMB, ["bomb.yaml", "aliases"]),
        (DEEP, ["bomb.yaml:2:", "nested deeper than 64"]),
        ("name: a\nseed: 1\nname: b\n", ["bomb.yaml:3:1", "duplicate key 'name'"]),
    ],
    ids=["alias-bomb", "deep-nesting", "duplicate-key"],
)
def test_scenario_yaml_limits(text, needles, tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    before = peak_rss_mb()
    t0 = time.perf_counter()
    code, err = run_cli(["validate-scenario", str(path)], capsys)
    assert time.perf_counter() - t0 < 5
    assert peak_rss_mb() - before < 500
    assert code == 2 and "Traceback" not in err
    line = err.strip()
    assert len(line.splitlines()) == 1 and line.startswith("servesim: error: "), err
    for needle in needles:
        assert needle in line, (needle, line)


def test_huge_file_is_refused_before_it_is_read(tmp_path, capsys):
    path = tmp_path / "huge.yaml"
    with path.open("w") as f:
        f.write("name: x\n# ")
        f.truncate(MAX_YAML_BYTES + 10)  # sparse: nothing to read if the size is checked first
    code, err = run_cli(["validate-scenario", str(path)], capsys)
    assert code == 2 and "huge.yaml" in err and "MiB" in err


def test_yaml_1_1_readings_are_gone():
    """YAML 1.1 reads 010 as 8, 1:30 as 90 and on/yes as true; servesim reads YAML 1.2's core
    schema, where they are 10, the string '1:30' and the strings 'on'/'yes'."""
    got = parse_yaml_text("a: 010\nb: 1:30\nc: on\nd: yes\ne: 1e3\nf: 0o17\ng: 0x1f\nh: .5\ni: 1_000", "x")
    assert got == {"a": 10, "b": "1:30", "c": "on", "d": "yes", "e": 1000.0, "f": 15, "g": 31, "h": 0.5, "i": 1000}


def test_sexagesimal_duration_is_an_error_not_90_seconds(tmp_path, capsys):
    code, err = run_cli(["validate-scenario", str(BASE), "--set", "duration_s=1:30"], capsys)
    assert code == 2 and "duration_s" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["--set", "seed=" + "[" * 5000 + "]" * 5000],
        ["--set", "classes.chat.arrival=" + ALIAS_BOMB.replace("\n", "; ").replace("; ", "\n")],
    ],
    ids=["set-deep", "set-alias-bomb"],
)
def test_set_values_are_read_with_the_same_limits(argv, capsys):
    t0 = time.perf_counter()
    code, err = run_cli(["validate-scenario", str(BASE), *argv], capsys)
    assert time.perf_counter() - t0 < 5
    assert code == 2 and "--set" in err and "Traceback" not in err
