"""``python -m sim.docgen.schema``: write the JSON Schema of scenario files to
``docs/scenario.schema.json`` (editors validate scenarios against it as you type; a test keeps
it equal to what the scenario definitions give)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

DEFAULT = Path(__file__).resolve().parents[2] / "docs" / "scenario.schema.json"


def schema_text() -> str:
    import servesim

    return json.dumps(servesim.schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0]) if args else DEFAULT
    out.write_text(schema_text(), encoding="utf-8")
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
