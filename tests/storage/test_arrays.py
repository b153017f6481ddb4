import math
from pathlib import Path

import numpy as np
import pytest
import zarr

from motionfit.storage.arrays import VideoArrayStore, VideoNotCommittedError, array_checksum
from motionfit.storage.layout import RunLayout
from motionfit.storage.matrix import (
    MatrixFormatError,
    matrix_fingerprint,
    read_video_matrix,
    write_video_matrix,
)


@pytest.fixture(params=["local", "memory"])
def layout(request, tmp_path) -> RunLayout:
    if request.param == "local":
        return RunLayout.at(tmp_path / "run")
    return RunLayout.at(f"memory://motionfit-test-{tmp_path.name}")


def test_write_read_round_trip_and_clip_ranges(layout: RunLayout) -> None:
    store = layout.store("flow")
    video = np.random.default_rng(0).integers(0, 256, (37, 12, 16, 2), dtype=np.uint8)
    store.write("target.a", video, {"flow_bound": 20})
    assert store.committed_ids() == {"target.a"}
    np.testing.assert_array_equal(store.read("target.a"), video)
    np.testing.assert_array_equal(store.read_range("target.a", 14, 30), video[14:30])
    blocks = list(store.row_blocks("target.a", 16))
    assert [len(block) for block in blocks] == [16, 16, 5]
    np.testing.assert_array_equal(np.concatenate(blocks), video)
    assert store.shape("target.a") == (37, 12, 16, 2)
    assert store.attrs("target.a")["flow_bound"] == 20


def test_uncommitted_video_is_invisible(layout: RunLayout) -> None:
    store = layout.store("frames")
    with pytest.raises(VideoNotCommittedError, match=r"target\.missing"):
        store.read("target.missing")


def test_rewrite_replaces_array_and_shape(layout: RunLayout) -> None:
    store = layout.store("idt", chunk_frames=64)
    store.write("v", np.ones((100, 436), np.float32))
    store.write("v", np.zeros((3, 436), np.float16))
    assert store.read("v").shape == (3, 436)
    assert store.read("v").dtype == np.float16
    assert not store.read("v").any()


def test_empty_array_is_committed(layout: RunLayout) -> None:
    store = layout.store("idt")
    store.write("no-tracks", np.zeros((0, 436), np.float32))
    assert store.read("no-tracks").shape == (0, 436)
    assert list(store.row_blocks("no-tracks", 100)) == []


def test_stores_commit_with_their_stage_markers(layout: RunLayout) -> None:
    layout.store("frames").write("v", np.zeros((2, 4, 4, 3), np.uint8))
    assert layout.markers("decode").committed_ids() == {"v"}
    assert layout.markers("flow").committed_ids() == set()


def test_unknown_store_is_rejected(layout: RunLayout) -> None:
    with pytest.raises(ValueError, match="unknown array store 'rgb'"):
        layout.store("rgb")


def test_matrix_round_trip_labels_rows_by_video(tmp_path) -> None:
    vectors = np.random.default_rng(1).normal(size=(7, 20)).astype(np.float32)
    ids = [f"v{i}" for i in range(7)]
    url = str(tmp_path / "fv.zarr")
    write_video_matrix(url, ids, vectors, "sketch_dim", {"model": "m"})
    read_ids, read_vectors = read_video_matrix(url)
    assert read_ids == ids
    np.testing.assert_array_equal(read_vectors, vectors)
    fingerprint = matrix_fingerprint(url)
    write_video_matrix(url, ids, vectors.copy(), "sketch_dim")
    assert matrix_fingerprint(url) == fingerprint, "rewriting identical values keeps the fingerprint"
    write_video_matrix(url, ids, vectors + 1, "sketch_dim")
    assert matrix_fingerprint(url) != fingerprint
    with pytest.raises(FileNotFoundError, match=r"nothing\.zarr"):
        read_video_matrix(str(tmp_path / "nothing.zarr"))


def test_a_matrix_without_video_ids_says_to_re_encode(tmp_path) -> None:
    url = str(tmp_path / "fv.zarr")
    zarr.create_array(store=url, shape=(2, 3), dtype="float32", zarr_format=3)
    with pytest.raises(MatrixFormatError, match="re-run"):
        read_video_matrix(url)


def test_stored_arrays_are_labelled_datasets_for_xarray(layout: RunLayout, tmp_path) -> None:
    xarray = pytest.importorskip("xarray")
    layout.store("flow").write("v", np.full((3, 4, 5, 2), 128, np.uint8), attrs={"flow_bound": 20.0})
    flow = xarray.open_zarr(layout.path("flow.zarr"), consolidated=False)["v"]
    assert flow.dims == ("frame", "y", "x", "component") and flow.shape == (3, 4, 5, 2)
    write_video_matrix(str(tmp_path / "fv.zarr"), ["a", "b"], np.eye(2, 3, dtype=np.float32), "sketch_dim")
    vectors = xarray.open_zarr(str(tmp_path / "fv.zarr"), consolidated=False)["vectors"]
    assert vectors.sel(video_id="b").values.tolist() == [0.0, 1.0, 0.0]


def test_concurrent_first_writes_to_a_new_store(tmp_path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    layout = RunLayout.at(tmp_path / "run")
    videos = {f"v{i}": np.full((3, 4, 4, 3), i, np.uint8) for i in range(16)}

    def write(video_id: str) -> None:
        layout.store("frames").write(video_id, videos[video_id])  # a fresh store object per worker

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, videos))
    store = layout.store("frames")
    assert store.committed_ids() == set(videos)
    for video_id, video in videos.items():
        np.testing.assert_array_equal(store.read(video_id), video)


def zarr_whole_write(store: VideoArrayStore, video_id: str, array: np.ndarray, attrs: dict) -> None:
    """What :meth:`VideoArrayStore.write` did before it streamed: zarr's own write of the whole array."""
    n_rows = array.shape[0]
    chunk_rows = max(1, min(store.chunk_frames, n_rows)) if n_rows else 1
    chunks = (chunk_rows, *array.shape[1:])
    target = store.group.create_array(
        name=video_id,
        shape=array.shape,
        dtype=array.dtype,
        chunks=chunks,
        shards=(max(chunk_rows, math.ceil(max(n_rows, 1) / chunk_rows) * chunk_rows), *chunks[1:]),
        compressors=store._codec(array.dtype),
        dimension_names=store._dimension_names(array.ndim),
        overwrite=True,
        config={"write_empty_chunks": True},
    )
    if n_rows:
        target[...] = array
    target.attrs.update(
        {"shape": list(array.shape), "dtype": str(array.dtype), "checksum": array_checksum(array), **attrs}
    )


def stored_files(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in folder.rglob("*") if path.is_file()}


@pytest.mark.parametrize(
    ("name", "shape", "dtype", "chunk_frames"),
    [
        ("frames", (50, 6, 9, 3), np.uint8, 16),  # raw, a partial last chunk
        ("frames", (32, 6, 9, 3), np.uint8, 16),  # whole chunks only
        ("frames", (5, 6, 9, 3), np.uint8, 16),  # shorter than a chunk
        ("flow", (37, 5, 7, 2), np.uint8, 16),  # zstd
        ("idt", (9000, 436), np.float32, 4096),
        ("idt", (300, 436), np.float16, 4096),
        ("idt", (0, 436), np.float32, 4096),  # no rows: no shard
    ],
)
def test_a_streamed_array_is_zarrs_own_write_of_the_whole_array(
    tmp_path: Path, name: str, shape: tuple[int, ...], dtype: type, chunk_frames: int
) -> None:
    array = np.random.default_rng(0).integers(0, 256, shape).astype(dtype)
    array[: shape[0] // 3] = 0  # all-zero chunks are stored too
    streamed = RunLayout.at(tmp_path / "streamed").store(name, chunk_frames)
    with streamed.stream("v", shape[1:], dtype) as rows:
        for block in np.array_split(array, 7):  # blocks of 0 to 1286 rows, across chunk boundaries
            rows.append(block)
        rows.commit({"fps": 25.0})
    reference = RunLayout.at(tmp_path / "whole").store(name, chunk_frames)
    zarr_whole_write(reference, "v", array, {"fps": 25.0})

    files = stored_files(tmp_path / "streamed" / f"{name}.zarr" / "v")
    assert files == stored_files(tmp_path / "whole" / f"{name}.zarr" / "v")
    assert ("zarr.json" in files) and (len(files) == (2 if len(array) else 1))
    record = streamed.attrs("v")
    assert (record["shape"], record["dtype"]) == (list(shape), str(np.dtype(dtype)))
    assert record["checksum"] == array_checksum(array) and record["fps"] == 25.0
    np.testing.assert_array_equal(streamed.read("v"), array)


def test_a_stream_left_without_a_commit_leaves_nothing(layout: RunLayout) -> None:
    store = layout.store("flow")
    store.write("v", np.ones((40, 4, 4, 2), np.uint8))
    with pytest.raises(RuntimeError, match="decoder gave up"):
        with store.stream("v") as rows:
            rows.append(np.zeros((20, 4, 4, 2), np.uint8))  # a chunk is in the shard already
            raise RuntimeError("decoder gave up")
    assert not store.is_committed("v")
    assert "v" not in store.group
    store.write("v", np.full((3, 4, 4, 2), 7, np.uint8))
    np.testing.assert_array_equal(store.read("v"), np.full((3, 4, 4, 2), 7, np.uint8))


def test_a_stream_refuses_rows_of_another_shape_or_dtype(layout: RunLayout) -> None:
    store = layout.store("frames")
    with store.stream("v") as rows:
        rows.append(np.zeros((2, 4, 4, 3), np.uint8))
        with pytest.raises(ValueError, match=r"rows of uint8 \[4, 4, 3\] expected, got uint8 \[1, 4, 5, 3\]"):
            rows.append(np.zeros((1, 4, 5, 3), np.uint8))
        with pytest.raises(ValueError, match="got float32"):
            rows.append(np.zeros((1, 4, 4, 3), np.float32))
        rows.commit()
    assert store.shape("v") == (2, 4, 4, 3)
