import pytest

from fastclr.method.schedule import lr_at


def test_endpoints_and_shape():
    peak, warm, total = 2.0, 10, 100
    assert lr_at(0, peak, warm, total) == 0.0
    assert lr_at(5, peak, warm, total) == pytest.approx(1.0)
    assert lr_at(warm, peak, warm, total) == pytest.approx(peak)
    assert lr_at(55, peak, warm, total) == pytest.approx(peak / 2)  # cosine midpoint
    assert lr_at(total, peak, warm, total) == pytest.approx(0.0, abs=1e-12)
    values = [lr_at(s, peak, warm, total) for s in range(total + 1)]
    assert all(a <= b for a, b in zip(values[:warm], values[1 : warm + 1]))  # rising
    assert all(a >= b for a, b in zip(values[warm:], values[warm + 1 :]))  # falling, no restart
    assert max(values) == pytest.approx(peak)


def test_no_warmup_starts_at_peak():
    assert lr_at(0, 1.0, 0, 10) == 1.0
    assert lr_at(10, 1.0, 0, 10) == pytest.approx(0.0, abs=1e-12)
