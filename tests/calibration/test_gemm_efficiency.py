"""The roofline's GEMM and elementwise terms for H100 and A100 are the fit on Vidur's shipped
per-operator timings (calibration/gemm_efficiency.py), not numbers typed in: the catalog holds
the fit's figures, and the fitted form describes the data far better than the classic
max(compute, memory) roofline at the same GPUs' best efficiencies."""

import numpy as np
import pytest

pytest.importorskip("scipy")

from calibration import gemm_efficiency  # noqa: E402
from sim import catalog  # noqa: E402


@pytest.fixture(scope="module")
def fit():
    return gemm_efficiency.fit()


def test_the_catalog_holds_the_fit(fit):
    for name, (compute, bandwidth, kernel_s) in fit.efficiency.items():
        e = catalog.get_gpu(name).efficiency
        assert e.fitted
        assert e.compute == pytest.approx(compute, abs=5e-4)
        assert e.bandwidth == pytest.approx(bandwidth, abs=5e-4)
        assert e.gemm_kernel_s == pytest.approx(kernel_s, rel=5e-3)
        assert e.overlap == pytest.approx(fit.overlap, abs=5e-3)
        eff, k = fit.elementwise[name]
        assert e.elementwise_bandwidth == pytest.approx(eff, abs=5e-4)
        assert e.elementwise_kernel_s == pytest.approx(k, rel=5e-3)
    assert not catalog.get_gpu("mi300x").efficiency.fitted and not catalog.get_gpu("h200").efficiency.fitted


def test_the_fitted_form_beats_the_classic_roofline_on_the_same_data(fit):
    err = fit.errors["error"].abs()
    assert err.median() < 0.05 and err.quantile(0.9) < 0.15
    # the classic roofline: max(C, M), at the efficiencies that fit it best (a grid search)
    _, gpus = gemm_efficiency.catalog()
    tables = gemm_efficiency.tables()
    best = np.inf
    for c in np.linspace(0.4, 1.0, 13):
        for b in np.linspace(0.4, 1.0, 13):
            e = np.concatenate(
                [gemm_efficiency.predict(t, gpus[t.gpu], 200.0, c, b, 0.0) / t.seconds - 1 for t in tables]
            )
            best = min(best, float(np.median(np.abs(e))))
    assert best > 1.5 * err.median()
