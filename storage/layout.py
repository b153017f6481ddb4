"""The layout of a run root (a local path or an fsspec URL); every stage finds its inputs and outputs here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from motionfit.storage import fs
from motionfit.storage.arrays import VideoArrayStore
from motionfit.storage.markers import StageMarkers

ARRAY_STORES = {
    "frames": ("frames.zarr", "decode", None, ("frame", "y", "x", "channel")),
    "flow": ("flow.zarr", "flow", "zstd", ("frame", "y", "x", "component")),
    "idt": ("idt.zarr", "idt", "zstd", ("trajectory", "column")),
}
"""Per-video array stores: name -> (zarr group, the stage whose markers commit it, blosc compressor, the
arrays' dimension names: frames are RGB, flow is (dx, dy) of frame t to t + 1, an IDT row is a trajectory).
Measured with benchmarks/bench_storage.py: RGB frames barely compress losslessly (zstd 1.26x, lz4 1.07x) and
compressing them doubles the decode stage's cost, so they are stored raw; flow (uint8, mostly near 128)
compresses 7.8x with zstd at the same clip read time."""

SHAREABLE_OUTPUTS = (
    "manifest.parquet",
    "frames.zarr",
    "_markers/decode",
    "flow.zarr",
    "_markers/flow",
    "idt.zarr",
    "_markers/idt",
    "fv_model",
    "fv_parts.zarr",
    "fv.zarr",
    "clusters.parquet",
    "pseudo_labels.parquet",
    "supervised_labels.parquet",
)
"""Outputs a run root may read from another (besides ``checkpoints/<stage>``): what its stages compute from
the data and the config. The config, lock, Prefect results, metrics and report are always the root's own."""
SOURCES_FILE = "_sources.json"


def normalised_root(root: str | Path) -> str:
    """A run root as the layout names it: a local path absolute and resolved, a URL as given."""
    root = str(root)
    if fs.is_local(root):
        root = str(Path(root.removeprefix("file://")).expanduser().resolve())
    return root


@dataclass(frozen=True)
class RunLayout:
    """Every file and folder name of one run root; no other module spells one::

    config.yaml            the resolved config of the last run
    manifest.parquet       one row per video (ingest), with each per-video stage's status
    frames.zarr/<id>  flow.zarr/<id>  idt.zarr/<id>      per-video arrays (decode, flow, idt)
    fv_model/fisher_model.npz                           PCA + GMM + count sketch (fv_fit)
    fv_parts.zarr/<key>  fv.zarr                        Fisher vectors per batch, gathered (fv_encode)
    clusters.parquet                                    k-means runs (cluster)
    pseudo_labels.parquet  supervised_labels.parquet    student targets (pseudo_label, student_train)
    checkpoints/<stage>/last.pt  history.parquet  test_predictions.parquet      training stages
    metrics.parquet  report.md  report_context.json  plots/                      evaluate
    _markers/<stage>/  _prefect/                        per-video commits, Prefect results
    _prefect/flow_runs.json                             the root flow runs of this root
    _lock.json                                          the run that holds the root now
    _sources.json                                       outputs this root reads from other run roots

    ``sources`` maps an output (an entry of :data:`SHAREABLE_OUTPUTS`, or ``checkpoints/<stage>``) to the run
    root that holds it: the settings of a sweep share the outputs their configs agree on this way, each
    setting's own root naming where the shared ones are (``_sources.json``, read by :meth:`at`).
    """

    root: str
    sources: tuple[tuple[str, str], ...] = ()

    @classmethod
    def at(cls, root: str | Path) -> RunLayout:
        root = normalised_root(root)
        try:
            sources = fs.read_json(fs.join(root, SOURCES_FILE))
        except FileNotFoundError:
            sources = {}
        return cls(root, tuple(sorted(sources.items())))

    def share(self, sources: Mapping[str, str]) -> RunLayout:
        """Make this root read each output of ``sources`` from the run root named there (none: its own);
        returns the new layout."""
        unknown = [o for o in sources if o not in SHAREABLE_OUTPUTS and not o.startswith("checkpoints/")]
        if unknown:
            raise ValueError(f"cannot share {unknown}: shareable outputs are {sorted(SHAREABLE_OUTPUTS)}")
        fs.write_json_atomic(fs.join(self.root, SOURCES_FILE), dict(sorted(sources.items())))
        return RunLayout(self.root, tuple(sorted(sources.items())))

    def root_of(self, output: str) -> str:
        """The run root that holds ``output`` (this one unless it is shared)."""
        return dict(self.sources).get(output, self.root)

    def path(self, *parts: str) -> str:
        first = parts[0] if parts else ""
        if first in ("checkpoints", "_markers") and len(parts) > 1:
            first = f"{parts[0]}/{parts[1]}"
        return fs.join(self.root_of(first), *parts)

    @property
    def run_config(self) -> str:
        return self.path("config.yaml")

    @property
    def manifest(self) -> str:
        return self.path("manifest.parquet")

    def markers(self, stage: str) -> StageMarkers:
        return StageMarkers(self.root_of(f"_markers/{stage}"), stage)

    def store(self, name: str, chunk_frames: int = 16) -> VideoArrayStore:
        """The per-video array store ``frames``, ``flow`` or ``idt``, committed by its stage's markers."""
        if name not in ARRAY_STORES:
            raise ValueError(f"unknown array store {name!r}; expected one of {sorted(ARRAY_STORES)}")
        group, stage, cname, dimensions = ARRAY_STORES[name]
        return VideoArrayStore(
            self.path(group), self.markers(stage), chunk_frames, cname, dimension_names=dimensions
        )

    @property
    def fisher_model(self) -> str:
        return self.path("fv_model", "fisher_model.npz")

    def fv_part(self, key: str) -> str:
        """One batch's Fisher vectors, named by the batch's inputs key."""
        return self.path("fv_parts.zarr", key)

    @property
    def fv_vectors(self) -> str:
        return self.path("fv.zarr")

    @property
    def clusters(self) -> str:
        return self.path("clusters.parquet")

    @property
    def pseudo_labels(self) -> str:
        return self.path("pseudo_labels.parquet")

    @property
    def supervised_labels(self) -> str:
        """The source's held-back labels as student targets (the supervised bound)."""
        return self.path("supervised_labels.parquet")

    @property
    def checkpoint_root(self) -> str:
        return self.path("checkpoints")

    def checkpoints(self, stage: str) -> str:
        return self.path("checkpoints", stage)

    def checkpoint(self, stage: str) -> str:
        """The last checkpoint of a training stage (written after every epoch)."""
        return self.path("checkpoints", stage, "last.pt")

    def history(self, stage: str) -> str:
        """Per-epoch metrics of a training stage."""
        return self.path("checkpoints", stage, "history.parquet")

    def test_predictions(self, stage: str) -> str:
        """Class probabilities of the target test videos by a fine-tuned stage."""
        return self.path("checkpoints", stage, "test_predictions.parquet")

    @property
    def metrics(self) -> str:
        return self.path("metrics.parquet")

    @property
    def report(self) -> str:
        return self.path("report.md")

    @property
    def report_context(self) -> str:
        """What the report shows beside the metrics (kept so ``motionfit report`` can redraw it)."""
        return self.path("report_context.json")

    @property
    def plots(self) -> str:
        return self.path("plots")

    def plot(self, name: str) -> str:
        """A PNG plot of the evaluate stage, ``plots/<name>.png``."""
        return self.path("plots", f"{name}.png")

    @property
    def lock(self) -> str:
        """The run-root lock of the pipeline run that uses the root (see :mod:`motionfit.storage.lock`)."""
        return self.path("_lock.json")

    @property
    def flow_runs(self) -> str:
        """The Prefect root flow runs that ran on this root (ids, server), for status and crash clean-up."""
        return self.path("_prefect", "flow_runs.json")

    @property
    def prefect_results(self) -> str:
        """Prefect's persisted task results and cache records (must be shared by every worker)."""
        return self.path("_prefect")
