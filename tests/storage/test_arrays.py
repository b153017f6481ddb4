import numpy as np
import pytest

from motionfit.storage.arrays import VideoNotCommittedError
from motionfit.storage.layout import RunLayout
from motionfit.storage.matrix import read_matrix, write_matrix


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


def test_stores_commit_with_their_stage_markers(layout: RunLayout) -> None:
    layout.store("frames").write("v", np.zeros((2, 4, 4, 3), np.uint8))
    assert layout.markers("decode").committed_ids() == {"v"}
    assert layout.markers("flow").committed_ids() == set()


def test_unknown_store_is_rejected(layout: RunLayout) -> None:
    with pytest.raises(ValueError, match="unknown array store 'rgb'"):
        layout.store("rgb")


def test_matrix_round_trip(tmp_path) -> None:
    vectors = np.random.default_rng(1).normal(size=(7, 20)).astype(np.float32)
    write_matrix(str(tmp_path / "fv.zarr"), vectors, {"model": "m"})
    np.testing.assert_array_equal(read_matrix(str(tmp_path / "fv.zarr")), vectors)
    with pytest.raises(FileNotFoundError, match=r"nothing\.zarr"):
        read_matrix(str(tmp_path / "nothing.zarr"))


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
