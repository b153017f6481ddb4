import numpy as np
import pytest

from motionfit.tasks.prior.sketch import CountSketch, count_sketch, make_count_sketch


def dense_sketch_matrix(sketch: CountSketch) -> np.ndarray:
    """The count sketch written out as a dense [input_dim, sketch_dim] matrix, entry by entry."""
    matrix = np.zeros((sketch.input_dim, sketch.sketch_dim))
    for i in range(sketch.input_dim):
        matrix[i, sketch.buckets[i]] = sketch.signs[i]
    return matrix


def test_count_sketch_matches_dense_reference_on_batches_and_single_vectors():
    rng = np.random.default_rng(0)
    sketch = make_count_sketch(input_dim=37, sketch_dim=8, seed=3)
    vectors = rng.normal(size=(5, 37)).astype(np.float32)
    expected = vectors.astype(np.float64) @ dense_sketch_matrix(sketch)
    sketched = count_sketch(vectors, sketch)
    assert sketched.shape == (5, 8) and sketched.dtype == np.float32
    np.testing.assert_allclose(sketched, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(count_sketch(vectors[2], sketch), expected[2], rtol=1e-5, atol=1e-5)


def test_count_sketch_preserves_inner_products_in_expectation():
    rng = np.random.default_rng(1)
    x = rng.normal(size=200)
    y = 0.6 * x + 0.8 * rng.normal(size=200)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    products = []
    for seed in range(2000):
        sketch = make_count_sketch(200, sketch_dim=32, seed=seed)
        sx, sy = count_sketch(np.stack([x, y]), sketch)
        products.append(float(sx @ sy))
    # One sketch's estimate has a standard deviation near sqrt(2 / 32) = 0.25; the mean of 2000 near 0.006.
    assert np.mean(products) == pytest.approx(float(x @ y), abs=0.03)
    assert np.std(products) > 0.05  # a single sketch is only unbiased, not exact


def test_count_sketch_is_fixed_by_its_seed():
    first, again, other = (make_count_sketch(500, 20, seed) for seed in (7, 7, 8))
    np.testing.assert_array_equal(first.buckets, again.buckets)
    np.testing.assert_array_equal(first.signs, again.signs)
    assert not np.array_equal(first.buckets, other.buckets)
    assert set(np.unique(first.signs)) == {-1, 1}
    assert first.buckets.min() >= 0 and first.buckets.max() < 20


def test_count_sketch_rejects_vectors_of_the_wrong_length():
    sketch = make_count_sketch(10, 4)
    with pytest.raises(ValueError, match="vectors has shape"):
        count_sketch(np.zeros((3, 11)), sketch)


def test_count_sketch_rejects_inconsistent_hash_functions():
    with pytest.raises(ValueError, match="buckets must lie in"):
        CountSketch(3, 2, 0, np.array([0, 1, 2]), np.array([1, -1, 1], dtype=np.int8))
    with pytest.raises(ValueError, match="signs must be"):
        CountSketch(2, 2, 0, np.array([0, 1]), np.array([1, 0], dtype=np.int8))
