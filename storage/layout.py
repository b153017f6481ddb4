"""The layout of a run root (a local path or an fsspec URL); every stage finds its inputs and outputs here."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from motionfit.storage import fs
from motionfit.storage.arrays import VideoArrayStore
from motionfit.storage.markers import StageMarkers

ARRAY_STORES = {
    "frames": ("frames.zarr", "decode", None),
    "flow": ("flow.zarr", "flow", "zstd"),
    "idt": ("idt.zarr", "idt", "zstd"),
}
"""Per-video array stores: name -> (zarr group, the stage whose markers commit it, blosc compressor).
Measured with benchmarks/bench_storage.py: RGB frames barely compress losslessly (zstd 1.26x, lz4 1.07x) and
compressing them doubles the decode stage's cost, so they are stored raw; flow (uint8, mostly near 128)
compresses 7.8x with zstd at the same clip read time."""


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run::

    manifest.parquet  frames.zarr/<id>  flow.zarr/<id>  idt.zarr/<id>  fv_model/  fv.zarr
    fv_index.parquet  clusters.parquet  checkpoints/<stage>/  pseudo_labels.parquet
    metrics.parquet   report.md  plots/  _markers/<stage>/  _prefect/
    """

    root: str

    @classmethod
    def at(cls, root: str | Path) -> RunLayout:
        root = str(root)
        if fs.is_local(root):
            root = str(Path(root.removeprefix("file://")).expanduser().resolve())
        return cls(root)

    def path(self, *parts: str) -> str:
        return fs.join(self.root, *parts)

    @property
    def manifest(self) -> str:
        return self.path("manifest.parquet")

    def markers(self, stage: str) -> StageMarkers:
        return StageMarkers(self.root, stage)

    def store(self, name: str, chunk_frames: int = 16) -> VideoArrayStore:
        """The per-video array store ``frames``, ``flow`` or ``idt``, committed by its stage's markers."""
        if name not in ARRAY_STORES:
            raise ValueError(f"unknown array store {name!r}; expected one of {sorted(ARRAY_STORES)}")
        group, stage, cname = ARRAY_STORES[name]
        return VideoArrayStore(self.path(group), self.markers(stage), chunk_frames=chunk_frames, cname=cname)

    @property
    def fv_model(self) -> str:
        return self.path("fv_model")

    @property
    def fv_vectors(self) -> str:
        return self.path("fv.zarr")

    @property
    def fv_index(self) -> str:
        return self.path("fv_index.parquet")

    @property
    def clusters(self) -> str:
        return self.path("clusters.parquet")

    def checkpoints(self, stage: str) -> str:
        return self.path("checkpoints", stage)

    @property
    def pseudo_labels(self) -> str:
        return self.path("pseudo_labels.parquet")

    @property
    def metrics(self) -> str:
        return self.path("metrics.parquet")

    @property
    def report(self) -> str:
        return self.path("report.md")

    @property
    def plots(self) -> str:
        return self.path("plots")

    @property
    def prefect_results(self) -> str:
        """Prefect's persisted task results and cache records (must be shared by every worker)."""
        return self.path("_prefect")
