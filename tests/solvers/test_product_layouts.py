"""The layouts the written-out backward passes give their products: the same numbers, the faster layout."""

from __future__ import annotations

import pytest
import torch

from dynlearn.solvers._rk_mlp import input_gradient_factor, transposed_sum, weight_gradient


def _column_major(x: torch.Tensor) -> bool:
    return x.stride(0) == 1 and x.stride(1) == x.shape[0]


def test_a_narrowing_layer_on_many_rows_gets_a_column_major_right_factor():
    weight = torch.randn(256, 2, dtype=torch.float64)  # Linear(2, 256).weight: row-major, narrowing in backward
    grad = torch.randn(256, 256, dtype=torch.float64)
    factor = input_gradient_factor(weight, rows=256)
    assert _column_major(factor) and not _column_major(weight)
    torch.testing.assert_close(grad @ factor, grad @ weight, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, rows", [((256, 256), 256), ((2, 256), 256), ((256, 2), 1)])
def test_square_widening_and_small_products_keep_the_weight_as_it_is(shape, rows):
    weight = torch.randn(*shape)
    assert input_gradient_factor(weight, rows) is weight


def test_transposed_sum_only_for_narrow_inputs_on_enough_rows():
    assert transposed_sum(256, 2, 256)
    assert not transposed_sum(16, 2, 32)  # 512 entries: the transpose costs more than it saves
    assert not transposed_sum(256, 256, 2)  # a last layer: the adjoint is the narrower side already


@pytest.mark.parametrize("rows, n_in, n_out", [(300, 2, 64), (300, 64, 2), (8, 2, 16)])
@pytest.mark.parametrize("pairs", [1, 3])
def test_weight_gradient_is_the_sum_of_products_in_either_orientation(rows, n_in, n_out, pairs):
    grads = [torch.randn(rows, n_out, dtype=torch.float64) for _ in range(pairs)]
    inputs = [torch.randn(rows, n_in, dtype=torch.float64) for _ in range(pairs)]
    expected = sum(g.t() @ x for g, x in zip(grads, inputs))
    found = weight_gradient(grads, inputs)
    assert found.shape == (n_out, n_in)
    torch.testing.assert_close(found, expected, rtol=1e-12, atol=1e-12)
