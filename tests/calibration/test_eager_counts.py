"""The diffusion catalog's eager counts are what calibration.eager_counts counts on the
replicas (a change to a replica or to the counting shows up here)."""

import pytest

pytest.importorskip("torch")

from calibration.eager_counts import catalog_models, count  # noqa: E402
from sim import catalog  # noqa: E402


@pytest.mark.parametrize("model", catalog_models())
def test_catalog_counts_are_the_counted_ones(model):
    got = count(model)
    spec = catalog.get_diffusion_model(model).eager
    assert spec is not None
    assert spec.ops_per_forward == got["ops_per_forward"]
    assert spec.elementwise_bytes_per_row == pytest.approx(got["elementwise_bytes_per_row"], rel=1e-5, abs=1)
    assert spec.elementwise_bytes_per_row_token == pytest.approx(got["elementwise_bytes_per_row_token"], rel=1e-5)


def test_counts_scale_as_their_form():
    """Bytes are linear in latent tokens with the catalog's two terms (checked at a third size)."""
    from calibration.eager_counts import count as count_at

    c = count_at("sd-1.5", scales=(1.0, 0.75))
    base = count_at("sd-1.5")
    assert c["ops_per_forward"] == base["ops_per_forward"]
    assert c["elementwise_bytes_per_row_token"] == pytest.approx(base["elementwise_bytes_per_row_token"], rel=1e-3)
