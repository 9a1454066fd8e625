"""`servesim bench`: a case runs in a child process and hands its figures back; the table says
how to read them."""

from sim.bench import bench_row, bench_table, run_case
from sim.console import plain


def test_a_case_runs_in_a_child_and_its_row_reads_median_and_range():
    run = run_case("reference", 300)
    assert run["requests"] == 300 and run["finished"] == 300 and run["peak_rss_mb"] > 0
    row = bench_row("reference", [run, run])
    assert row[1] == "300" and "[" in row[3]
    # the title's "[min-max]" is text, not markup that vanishes
    assert "median [min-max] of 2 runs" in plain(bench_table(2).title)
