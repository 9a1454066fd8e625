"""sim/journal.py: the one durable JSON-lines journal of plans, sweeps and calibrations."""

import json
import math

from sim import journal


def test_a_killed_write_is_cut_and_the_journal_reads_on(tmp_path):
    path = tmp_path / "j.jsonl"
    journal.append(path, {"id": "a", "x": 1.5})
    journal.append(path, {"id": "b", "x": 2}, {"id": "a", "x": 9})  # several records, one write
    with path.open("ab") as f:
        f.write(b'{"id": "c", "x"')  # a kill mid-line
    journal.cut_partial_line(path)
    journal.append(path, {"id": "d", "x": math.nan, "y": [math.inf, 1]})
    lines = path.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "a", "d"]
    # the first record of a key wins; NaN and infinity are written as null (standard JSON)
    assert journal.read_records(path, "id") == [
        {"id": "a", "x": 1.5},
        {"id": "b", "x": 2},
        {"id": "d", "x": None, "y": [None, 1]},
    ]
    assert journal.read_records(tmp_path / "none.jsonl", "id") == []


def test_an_interrupted_calibration_resumes_past_a_cut_line(tmp_path):
    """raw.jsonl used to be read line by line with json.loads: a kill mid-line made every later
    calibration into that folder fail on the cut line."""
    from calibration.measure import RAW, _Recorder

    (tmp_path / RAW).write_text('{"op": "gemm", "median_s": 0.1}\n{"op": "attn", "med')
    rec = _Recorder(tmp_path)
    assert rec.done == {"gemm"}
    rec.record("attn", [{"median_s": 0.2}, {"median_s": 0.3}])
    assert [json.loads(line)["op"] for line in (tmp_path / RAW).read_text().splitlines()] == ["gemm", "attn", "attn"]
