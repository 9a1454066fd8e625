"""How figures are written: a value keeps significant figures of its own beside its CI."""

import pytest

from sim.console import WIDE, fmt_estimate, number, thin_percentiles, wide_note, with_ci


@pytest.mark.parametrize(
    ("mean", "hw", "shown"),
    [
        # the case: a 3,684 ms mean with a 16 s CI printed as '0±20,000'
        (3684.0, 15874.0, f"3,684±16,000{WIDE}"),
        (3.96, 30.2, f"3.96±30{WIDE}"),
        (48.8, 0.63, "48.8±0.6"),
        (41.2, 9.6, "41.2±10"),
        (1.99, 0.034, "1.99±0.03"),
        (2900.0, 512.0, "2,900±500"),
        (0.00470, 0.0010, "0.00470±0.0010"),
        (152.3, 0.0042, "152±0.004"),  # a CI finer than the value's last digit is still shown
    ],
)
def test_a_value_keeps_its_own_figures(mean, hw, shown):
    assert with_ci(mean, hw) == shown


def test_zero_prints_one_way():
    assert {
        with_ci(0.0, 0.0),
        with_ci(0.0, 0.0, 2),
        fmt_estimate({"mean": 0.0, "ci95": 0.0}, 100),
        with_ci(0.0, None),
        number(0.0),
    } == {"0"}
    assert with_ci(1.0, 0.0) == "1.00±0"
    # replications that agree but for floating-point rounding
    assert with_ci(0.5, 6e-17) == "0.500±0" and with_ci(97.0, 4e-14) == "97.0±0"
    assert with_ci(0.0, 0.1) == f"0±0.10{WIDE}"


def test_a_fraction_stays_inside_zero_and_one():
    assert fmt_estimate({"mean": 0.245, "ci95": 2.1}, fraction=True) == f"0.245 [0, 1]{WIDE}"
    assert fmt_estimate({"mean": 0.98, "ci95": 0.05}, fraction=True) == "0.980 [0.930, 1]"
    assert fmt_estimate({"mean": 0.02, "ci95": 0.03}, 100, fraction=True) == f"2.00 [0, 5.00]{WIDE}"
    assert fmt_estimate({"mean": 0.5, "ci95": 0.1}, fraction=True) == "0.500±0.10"


def test_percentiles_nearer_the_top_need_more_samples():
    assert thin_percentiles(60) == ["p90", "p99", "p99.9"]
    assert thin_percentiles(2_000) == ["p99.9"]
    assert thin_percentiles(20_000) == []
    assert "add replications" in wide_note(2)


def test_the_run_summary_says_so():
    """'TTFT p50 0±20,000' and 'SLO attainment 0±2' were printed for a 2-replication overloaded
    run; now each value keeps its figures, the CI is marked, and a note asks for replications."""
    import io

    from rich.console import Console

    from sim.config import parse_scenario
    from sim.console import show
    from sim.run import run_scenario, summary_blocks

    raw = dict(
        name="wide",
        seed=3,
        replications=2,
        duration_s=60,
        warmup_s=5,
        pools=[dict(name="p", model="llama-3.2-1b", gpu="l40s", replicas=1)],
        classes=[
            dict(
                name="chat",
                pool="p",
                arrival=dict(process="gamma", rate=40, cv=3),
                prompt_tokens=dict(dist="fixed", value=2000),
                output_tokens=dict(dist="fixed", value=300),
            )
        ],
        slo=dict(ttft_s=0.5),
    )
    res = run_scenario(parse_scenario(raw), None)
    buf = io.StringIO()
    show(summary_blocks(res.summary, res.scenario), Console(file=buf, width=200, color_system=None))
    text = buf.getvalue()
    st = res.summary["classes"]["chat"]
    assert number(st["ttft_s_p50"]["mean"] * 1e3) in text
    # 0.7 % of 40 req/s meet the SLO, with a CI of ±9 %: the fraction's interval stops at 0
    assert st["slo_attainment"]["ci95"] > st["slo_attainment"]["mean"] > 0
    assert f"SLO attainment {number(st['slo_attainment']['mean'])} [0, " in text
    assert wide_note(2) in text
    assert "overloaded" in text and st["overloaded"]
