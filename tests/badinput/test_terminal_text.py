"""Names are data on the terminal: rich markup and control characters in a scenario's names
print as written (escaped, control codes dropped), and the run still writes its files
(issue 19, item 8)."""

from __future__ import annotations

from pathlib import Path

import yaml

from sim.cli import main
from sim.console import term

BASE = Path(__file__).resolve().parents[2] / "scenarios" / "quickstart.yaml"


def test_term_escapes_markup_and_drops_control_characters():
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(f"x {term('azure [/data/traces] [bold]chat[/bold] a' + chr(27) + '[31mb' + chr(7))} y")
    assert console.export_text().strip() == "x azure [/data/traces] [bold]chat[/bold] a[31mb y"


def test_run_with_markup_in_every_name_prints_them_and_writes_its_files(tmp_path, capsys):
    raw = yaml.safe_load(BASE.read_text())
    raw["name"] = "azure [/data/traces]"
    raw["pools"][0]["name"] = "[prod] chat"
    raw["classes"][0]["name"] = "[red]users" + chr(27) + "[2J"
    raw["classes"][0]["pool"] = "[prod] chat"
    raw["duration_s"], raw["warmup_s"], raw["replications"] = 20, 2, 1
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(raw))
    code = main(["run", str(path), "-o", str(tmp_path / "out"), "--no-plots"])
    out = capsys.readouterr().out
    assert code in (0, None)
    assert "azure [/data/traces]" in out and "pool [prod] chat" in out and "class [red]users" in out
    assert chr(27) + "[2J" not in out
    assert (tmp_path / "out" / "summary.json").is_file()
