"""Pipeline stages, one package per stage family: pure functions doing the work, then the thin part that
reads and writes the run root.

- :mod:`~motionfit.tasks.data`: ingest, decode, the synthetic data set, clips and their transforms;
- :mod:`~motionfit.tasks.motion`: TV-L1 optical flow, the uint8 flow contract, motion sampling;
- :mod:`~motionfit.tasks.idt`: Improved Dense Trajectories (extractor, tracking, flow, camera, descriptors);
- :mod:`~motionfit.tasks.prior`: PCA, GMM, Fisher vectors, count sketch, k-means, the clustering stage;
- :mod:`~motionfit.tasks.training`: the loop, teacher, pseudo-labels, students, fine-tuning;
- :mod:`~motionfit.tasks.evaluation`: metrics, features, report, plots, Grad-CAM;
- :mod:`~motionfit.tasks.methods`: the registry of methods; :mod:`~motionfit.tasks.per_video`: the per-video
  map every CPU stage runs.

Each family's ``config`` module holds its typed config sections and imports neither torch nor OpenCV, so the
configuration (and the CLI's ``config`` and ``status`` commands) loads in a fraction of a second. A family's
``__init__`` names its public API and imports a module only when one of its names is first used.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any

VIDEO_MEMORY_MIB = 256
"""Default of ``runtime.video_memory_mib``, the memory one video may take in the flow and IDT stages (their
windows of frames and flow with their working memory): enough for the release's IDT at a 128 px short side.
Here, not in :mod:`~motionfit.tasks.per_video`, so that the configuration loads without the stages."""


def lazy_exports(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """``__getattr__``, ``__dir__`` and ``__all__`` of a package whose public names (``name -> module``,
    the module relative to ``package``) are imported on first access (PEP 562)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(import_module(f"{package}.{module}"), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__, sorted(exports)
