import io
import warnings

import numpy as np
import pytest
from scipy.special import logsumexp
from skimage.feature import fisher_vector as skimage_fisher_vector
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from motionfit.tasks.idt.columns import REFERENCE_COLUMNS
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.prior.config import FisherConfig, GmmConfig
from motionfit.tasks.prior.fisher import (
    encode_video,
    fisher_encode,
    fisher_vector,
    fit_fisher_model,
    load_fisher_model,
    power_l2_normalise,
    sample_descriptors,
    save_fisher_model,
)
from motionfit.tasks.prior.gmm import DiagonalGmm, fit_gmm, gmm_statistics, mean_log_likelihood, run_em
from motionfit.tasks.prior.pca import fit_pca
from motionfit.tasks.prior.sketch import count_sketch


def random_gmm(rng: np.random.Generator, n_components: int, dim: int) -> DiagonalGmm:
    return DiagonalGmm(
        rng.dirichlet(np.full(n_components, 3.0)),
        rng.normal(scale=1.5, size=(n_components, dim)),
        rng.uniform(0.3, 2.0, size=(n_components, dim)),
    )


def direct_posteriors(x: np.ndarray, gmm: DiagonalGmm) -> np.ndarray:
    """q[n, k] from the Gaussian densities written out component by component."""
    log_joint = np.empty((len(x), gmm.n_components))
    for k in range(gmm.n_components):
        mahalanobis = np.sum((x - gmm.means[k]) ** 2 / gmm.variances[k], axis=1)
        log_det = np.sum(np.log(2 * np.pi * gmm.variances[k]))
        log_joint[:, k] = np.log(gmm.weights[k]) - 0.5 * (mahalanobis + log_det)
    return np.exp(log_joint - logsumexp(log_joint, axis=1, keepdims=True))


def direct_eq5_6(x: np.ndarray, gmm: DiagonalGmm) -> np.ndarray:
    """Eq. 5-6 of the IDT-prior paper, one component at a time."""
    q = direct_posteriors(x, gmm)
    first, second = [], []
    for k in range(gmm.n_components):
        sigma = np.sqrt(gmm.variances[k])
        whitened = (x - gmm.means[k]) / sigma
        first.append((q[:, k, None] * whitened).sum(axis=0) / (len(x) * np.sqrt(gmm.weights[k])))
        second.append(
            (q[:, k, None] * (whitened**2 - 1)).sum(axis=0) / (len(x) * np.sqrt(2 * gmm.weights[k]))
        )
    return np.concatenate([np.ravel(first), np.ravel(second)])


ROW_DIM = REFERENCE_COLUMNS.row_dim


def direct_authors_variant(x: np.ndarray, gmm: DiagonalGmm) -> np.ndarray:
    """(1/N) sum q (x - mu) and (1/N) sum q (sigma^2 - (x - mu)^2), one component at a time."""
    q = direct_posteriors(x, gmm)
    first, second = [], []
    for k in range(gmm.n_components):
        difference = x - gmm.means[k]
        first.append((q[:, k, None] * difference).sum(axis=0) / len(x))
        second.append((q[:, k, None] * (gmm.variances[k] - difference**2)).sum(axis=0) / len(x))
    return np.concatenate([np.ravel(first), np.ravel(second)])


def synthetic_idt(
    rng: np.random.Generator, n_videos: int, n_rows: int, shift: float = 0.0
) -> list[np.ndarray]:
    """IDT-shaped arrays [n_rows, 436] float32 with correlated, positive (histogram-like) descriptors."""
    mixing = rng.normal(size=(8, ROW_DIM - 10))
    videos = []
    for _ in range(n_videos):
        latent = rng.normal(loc=shift, size=(n_rows, 8))
        descriptors = np.abs(latent @ mixing + 0.3 * rng.normal(size=(n_rows, ROW_DIM - 10)))
        fields = rng.uniform(0, 100, size=(n_rows, 10))
        videos.append(np.concatenate([fields, descriptors], axis=1).astype(np.float32))
    return videos


def small_config(**changes) -> FisherConfig:
    gmm = GmmConfig(n_components=4, max_iter=30, seed=1)
    defaults = {"gmm": gmm, "sketch_dim": 64, "n_sample_videos": 5, "descriptors_per_video": 120}
    return FisherConfig(**(defaults | changes))


@pytest.mark.parametrize(("dtype", "tolerance"), [("float64", 1e-12), ("float32", 2e-5)])
def test_paper_encoding_equals_direct_eq5_6(dtype, tolerance):
    rng = np.random.default_rng(0)
    gmm = random_gmm(rng, n_components=3, dim=4)
    x = rng.normal(size=(50, 4))
    encoded = fisher_encode(x, gmm, dtype=dtype, batch_size=16)  # several batches
    np.testing.assert_allclose(encoded, direct_eq5_6(x, gmm), atol=tolerance, rtol=0)


def test_authors_variant_equals_its_direct_formula():
    rng = np.random.default_rng(1)
    gmm = random_gmm(rng, n_components=3, dim=5)
    x = rng.normal(size=(40, 5))
    encoded = fisher_encode(x, gmm, encoding="authors_code_unnormalised", dtype="float64")
    np.testing.assert_allclose(encoded, direct_authors_variant(x, gmm), atol=1e-12, rtol=0)


def test_paper_encoding_equals_scikit_image_without_weight_block_and_with_flipped_variance_sign():
    rng = np.random.default_rng(2)
    training = rng.normal(size=(400, 6)) + rng.integers(0, 3, size=(400, 1)) * 2.5
    mixture = GaussianMixture(5, covariance_type="diag", random_state=0).fit(training)
    x = rng.normal(size=(70, 6)) + 1.0
    reference = skimage_fisher_vector(x, mixture)[5:]  # drop the 5 weight gradients
    reference[5 * 6 :] *= -1  # scikit-image's variance gradient has the opposite sign
    gmm = DiagonalGmm(mixture.weights_, mixture.means_, mixture.covariances_)
    np.testing.assert_allclose(fisher_encode(x, gmm, dtype="float64"), reference, atol=1e-12, rtol=0)


def test_power_l2_normalisation():
    normalised = power_l2_normalise(np.array([4.0, -9.0, 0.0]), alpha=0.5)
    np.testing.assert_allclose(normalised, np.array([2.0, -3.0, 0.0]) / np.sqrt(13.0))
    np.testing.assert_array_equal(power_l2_normalise(np.zeros(4)), np.zeros(4))


def test_em_matches_scikit_learn_from_the_same_initialisation():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.normal(size=(150, 3)) + offset for offset in (-3.0, 0.0, 4.0)])
    initial = random_gmm(rng, n_components=3, dim=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reference = GaussianMixture(
            3,
            covariance_type="diag",
            max_iter=7,
            tol=0.0,
            reg_covar=1e-6,
            weights_init=initial.weights,
            means_init=initial.means,
            precisions_init=1.0 / initial.variances,
        ).fit(x)
    fit = run_em(x, initial, max_iter=7, tol=0.0, reg_covar=1e-6, dtype="float64")
    np.testing.assert_allclose(fit.gmm.weights, reference.weights_, rtol=1e-9)
    np.testing.assert_allclose(fit.gmm.means, reference.means_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fit.gmm.variances, reference.covariances_, rtol=1e-9)
    assert fit.mean_log_likelihood == pytest.approx(reference.lower_bound_, rel=1e-10)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fit_gmm_reaches_scikit_learn_log_likelihood(dtype):
    rng = np.random.default_rng(4)
    centers = rng.normal(scale=4.0, size=(6, 5))
    x = centers[rng.integers(0, 6, size=1500)] + rng.normal(
        scale=rng.uniform(0.5, 1.5, size=5), size=(1500, 5)
    )
    reference = GaussianMixture(6, covariance_type="diag", random_state=0).fit(x)
    fit = fit_gmm(x + 100.0, GmmConfig(n_components=6, compute_dtype=dtype, n_init=2))  # far from the origin
    ours = mean_log_likelihood(x + 100.0, fit.gmm)
    assert ours == pytest.approx(reference.score(x), abs=0.02)
    assert fit.converged
    assert fit.mean_log_likelihood == pytest.approx(ours, abs=1e-3)


def test_fit_pca_keeps_the_requested_variance_or_fraction():
    rng = np.random.default_rng(5)
    scales = np.array([6.0, 3.0, 2.0, 1.0, 0.5, 0.1])  # variances 36, 9, 4, 1, 0.25, 0.01
    x = rng.normal(size=(20000, 6)) * scales @ np.linalg.qr(rng.normal(size=(6, 6)))[0]
    # cumulative variance: 71.6 %, 89.5 %, 97.5 %, 99.5 %, ...
    assert len(fit_pca(x, variance_kept=0.8).components) == 2
    assert len(fit_pca(x, variance_kept=0.93).components) == 3
    by_fraction = fit_pca(x, reduction="dim_fraction", dim_fraction=0.5)
    assert len(by_fraction.components) == 3
    np.testing.assert_allclose(by_fraction.explained_variance, [36, 9, 4], rtol=0.05)
    projected = by_fraction.transform(x, "float64")
    np.testing.assert_allclose(projected.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(np.cov(projected.T), np.diag(by_fraction.explained_variance), atol=1e-6 * 36)


def test_sample_descriptors_caps_videos_and_rows_reproducibly():
    rng = np.random.default_rng(6)
    arrays = {f"v{i}": rng.normal(size=(n, ROW_DIM)) for i, n in enumerate([10, 300, 0, 50, 80])}
    config = FisherConfig(n_sample_videos=3, descriptors_per_video=40)
    sample = sample_descriptors(arrays, config, np.random.default_rng(0))
    again = sample_descriptors(arrays, config, np.random.default_rng(0))
    assert len(sample) == 3 and list(sample) == list(again)
    for video_id, rows in sample.items():
        assert rows.dtype == np.float32 and rows.shape == (min(len(arrays[video_id]), 40), ROW_DIM)
        np.testing.assert_array_equal(rows, again[video_id])
        source = arrays[video_id].astype(np.float32)
        assert all((source == row).all(axis=1).any() for row in rows)  # rows come from that video
    as_list = sample_descriptors(
        list(arrays.values()), FisherConfig(descriptors_per_video=40), np.random.default_rng(0)
    )
    assert [len(rows) for rows in as_list] == [10, 40, 0, 40, 40]
    with pytest.raises(ValueError, match="video 'bad'"):
        sample_descriptors({"bad": np.zeros((5, 435))}, config, rng)


@pytest.mark.parametrize("pca_scope", ["per_type", "joint"])
def test_fitted_model_encodes_videos_to_normalised_sketched_fisher_vectors(pca_scope):
    rng = np.random.default_rng(7)
    videos = synthetic_idt(rng, n_videos=5, n_rows=150)
    model = fit_fisher_model(videos, small_config(pca_scope=pca_scope))
    expected_blocks = ["trajectory", "hog", "hof", "mbh"] if pca_scope == "per_type" else ["joint"]
    assert [block.name for block in model.blocks] == expected_blocks
    assert sum(len(block.columns) for block in model.blocks) == ROW_DIM - 10
    assert model.fisher_dim == sum(2 * 4 * len(block.pca.components) for block in model.blocks)
    vector = fisher_vector(videos[0], model)
    assert vector.shape == (model.fisher_dim,) and vector.dtype == np.float32
    start = 0
    for block in model.blocks:  # each block power- and L2-normalised, the whole of unit norm
        norm = np.linalg.norm(vector[start : start + block.fisher_dim])
        assert norm == pytest.approx(1 / np.sqrt(len(model.blocks)), rel=1e-5)
        start += block.fisher_dim
    sketched = encode_video(videos[0], model)
    assert sketched.shape == (64,) and sketched.dtype == np.float32
    np.testing.assert_allclose(sketched, count_sketch(vector, model.sketch), rtol=1e-6)


def test_model_fisher_vector_equals_eq5_6_on_the_projected_descriptors():
    rng = np.random.default_rng(8)
    videos = synthetic_idt(rng, n_videos=4, n_rows=100)
    model = fit_fisher_model(videos, small_config(descriptor_types=("hof",), power_alpha=1.0))
    block = model.blocks[0]
    projected = (videos[1][:, 136:244] - block.pca.mean) @ block.pca.components.T
    expected = direct_eq5_6(projected, block.gmm)
    np.testing.assert_allclose(
        fisher_vector(videos[1], model), expected / np.linalg.norm(expected), atol=2e-5
    )


def test_fisher_vectors_separate_videos_with_different_motion_statistics():
    rng = np.random.default_rng(9)
    group_a = synthetic_idt(rng, n_videos=4, n_rows=200, shift=0.0)
    group_b = synthetic_idt(np.random.default_rng(9), n_videos=4, n_rows=200, shift=1.5)  # same mixing
    model = fit_fisher_model(group_a + group_b, small_config(n_sample_videos=8))
    vectors = np.stack([fisher_vector(video, model) for video in group_a + group_b])
    similarity = vectors @ vectors.T
    group = np.repeat([0, 1], 4)
    same_group = (group[:, None] == group[None, :]) & ~np.eye(8, dtype=bool)
    within = similarity[same_group].mean()
    across = similarity[group[:, None] != group[None, :]].mean()
    assert within > across + 0.1


def test_video_without_trajectories_gets_a_zero_vector():
    rng = np.random.default_rng(10)
    model = fit_fisher_model(synthetic_idt(rng, n_videos=3, n_rows=80), small_config())
    empty = np.zeros((0, ROW_DIM), dtype=np.float32)
    np.testing.assert_array_equal(fisher_vector(empty, model), np.zeros(model.fisher_dim, dtype=np.float32))
    np.testing.assert_array_equal(encode_video(empty, model), np.zeros(64, dtype=np.float32))


def test_statistics_continued_block_by_block_are_the_sums_of_one_pass():
    rng = np.random.default_rng(12)
    gmm = random_gmm(rng, n_components=3, dim=4)
    x = rng.normal(size=(100, 4)).astype(np.float32)
    whole = gmm_statistics(x, gmm, batch_size=16)
    first = gmm_statistics(x[:32], gmm, batch_size=16)  # two whole batches
    continued = gmm_statistics(x[32:], gmm, batch_size=16, onto=first)
    for name in ("zeroth", "first", "second", "log_likelihood"):
        np.testing.assert_array_equal(getattr(continued, name), getattr(whole, name))
    assert first.zeroth.sum() == pytest.approx(32.0), "the earlier statistics are left as they were"


@pytest.mark.parametrize("pca_scope", ["per_type", "joint"])
def test_a_video_encoded_block_by_block_gets_the_whole_arrays_vector(pca_scope):
    rng = np.random.default_rng(12)
    videos = synthetic_idt(rng, n_videos=3, n_rows=100)
    gmm = GmmConfig(n_components=4, max_iter=30, seed=1, batch_size=16)
    model = fit_fisher_model(videos, small_config(pca_scope=pca_scope, gmm=gmm))
    video = videos[1]
    whole = encode_video(video, model)
    # a block's float32 projection rounds otherwise than the whole array's: up to 1.7e-6 in the vector,
    # whole GMM batches or not (seeds 12-17, both scopes)
    batches = (video[start : start + 32] for start in range(0, len(video), 32))  # 2 GMM batches each
    np.testing.assert_allclose(encode_video(batches, model), whole, atol=1e-5, rtol=0)
    uneven = [video[:7], video[7:7], video[7:60], video[60:]]  # cut inside batches, one block empty
    np.testing.assert_allclose(encode_video(uneven, model), whole, atol=1e-5, rtol=0)
    assert np.abs(encode_video([video[:50]], model) - whole).max() > 1e-3, "every block counts"
    np.testing.assert_array_equal(encode_video(iter([]), model), np.zeros(64, dtype=np.float32))


def test_bad_inputs_raise_errors_naming_them():
    rng = np.random.default_rng(11)
    model = fit_fisher_model(synthetic_idt(rng, n_videos=3, n_rows=80), small_config())
    with pytest.raises(ValueError, match=r"descriptors has shape \(5, 435\)"):
        encode_video(np.zeros((5, 435), dtype=np.float32), model)
    with pytest.raises(ValueError, match="descriptors contains NaN"):
        fisher_vector(np.full((2, ROW_DIM), np.nan, dtype=np.float32), model)
    with pytest.raises(ValueError, match=r"expected \[N, 3\]"):
        fisher_encode(np.zeros((4, 2)), random_gmm(rng, 2, 3))
    with pytest.raises(ValueError, match="needs at least as many"):
        fit_fisher_model([np.zeros((2, ROW_DIM), dtype=np.float32)], small_config())


def test_save_and_load_round_trip_through_a_path_and_a_file_object(tmp_path):
    rng = np.random.default_rng(12)
    videos = synthetic_idt(rng, n_videos=3, n_rows=90)
    model = fit_fisher_model(videos, small_config(encoding="authors_code_unnormalised", sketch_seed=5))
    path = tmp_path / "fv_model" / "model.npz"
    path.parent.mkdir()
    save_fisher_model(model, path)
    buffer = io.BytesIO()
    save_fisher_model(model, buffer)
    buffer.seek(0)
    for loaded in (load_fisher_model(path), load_fisher_model(str(path)), load_fisher_model(buffer)):
        assert loaded.config == model.config
        np.testing.assert_array_equal(loaded.sketch.buckets, model.sketch.buckets)
        for ours, theirs in zip(loaded.blocks, model.blocks, strict=True):
            assert ours.name == theirs.name
            np.testing.assert_array_equal(ours.gmm.means, theirs.gmm.means)
            np.testing.assert_array_equal(ours.pca.components, theirs.pca.components)
        np.testing.assert_array_equal(encode_video(videos[2], loaded), encode_video(videos[2], model))


def test_model_reads_the_row_layout_of_other_idt_parameters(tmp_path):
    assert IdtConfig().columns() == REFERENCE_COLUMNS and REFERENCE_COLUMNS.row_dim == 436
    columns = IdtConfig(track_length=8).columns()  # shape 16 columns instead of 30
    assert columns.row_dim == 422 and columns.ranges()["hog"] == (26, 122)
    rng = np.random.default_rng(13)
    videos = [np.abs(rng.normal(size=(90, columns.row_dim))).astype(np.float32) for _ in range(3)]
    model = fit_fisher_model(videos, small_config(), columns)
    assert model.blocks[0].columns.tolist() == list(range(10, 26))
    assert model.blocks[-1].columns.tolist() == list(range(230, 422))  # MBHx and MBHy
    with pytest.raises(ValueError, match=r"expected \[N, 422\]"):
        encode_video(np.zeros((3, ROW_DIM), dtype=np.float32), model)
    save_fisher_model(model, tmp_path / "model.npz")
    loaded = load_fisher_model(tmp_path / "model.npz")
    assert loaded.idt_columns == columns
    np.testing.assert_array_equal(encode_video(videos[0], loaded), encode_video(videos[0], model))


def test_a_version_1_model_file_reads_as_the_reference_layout(tmp_path):
    rng = np.random.default_rng(14)
    model = fit_fisher_model(synthetic_idt(rng, n_videos=3, n_rows=90), small_config())
    save_fisher_model(model, tmp_path / "v2.npz")
    with np.load(tmp_path / "v2.npz") as npz:  # a file written before the layout was stored
        arrays = {k: npz[k] for k in npz.files if not k.startswith("idt_")}
    np.savez(tmp_path / "v1.npz", **(arrays | {"format_version": np.array(1)}))
    assert load_fisher_model(tmp_path / "v1.npz").idt_columns == REFERENCE_COLUMNS
    np.savez(tmp_path / "v3.npz", **(arrays | {"format_version": np.array(3)}))
    with pytest.raises(ValueError, match="format version 3"):
        load_fisher_model(tmp_path / "v3.npz")
