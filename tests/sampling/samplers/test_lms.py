"""Linear multistep (lms.py): the Adams weights are exact."""

import pytest

from cogsample.sampling.samplers import lms_coefficients


def test_lms_coefficients_are_exact_adams_weights():
    sigmas = [10.0, 5.0, 2.0, 1.0, 0.0]
    c = lms_coefficients(sigmas, 3)
    assert c[0] == pytest.approx([-5.0])  # first order: the step length
    # any order: the weights integrate constants exactly
    for i, row in enumerate(c):
        assert sum(row) == pytest.approx(sigmas[i + 1] - sigmas[i])
    # order 2 at step 1: integral of the linear interpolant through (s1, 1), (s0, 0) over [s1, s2]
    assert c[1][0] == pytest.approx(((2 - 10) ** 2 - (5 - 10) ** 2) / (2 * (5 - 10)))
