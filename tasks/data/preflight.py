"""What a run's methods need from its videos, checked on the manifest before the first expensive stage.

A run whose data cannot serve its methods (no test video, no source for the students, no held-back source
labels for the supervised bound, more clusters than videos to cluster) would otherwise fail hours later, in
the stage that first needs the missing part. :func:`manifest_problems` lists every such problem, one line
each, from the manifest alone; ingest refuses the run with all of them at once, and decode again on the
videos it decoded: frame counts are known only then (reading them at ingest would open every file twice),
and decode excludes the videos shorter than the run needs (``motionfit.flows.preprocess.frames_needed``), so
"nothing left" for a split shows there, before the flow and training stages.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from motionfit.storage.manifest import usable_videos
from motionfit.tasks.methods import Method

SOURCE_TRAINED = ("pseudo_labels", "clusters", "videos", "supervised_labels")
"""What a method's student trains on (``Method.trains_on``) when it trains on the unlabelled source."""


class DataProblems(ValueError):
    """The run's videos cannot serve its methods; the message has one line per problem."""


def manifest_problems(
    manifest: pd.DataFrame, methods: Sequence[Method], n_clusters: int | None, stages: Sequence[str] = ()
) -> list[str]:
    """Every reason the videos of ``manifest`` cannot serve ``methods`` (an empty list when they can).

    ``n_clusters`` is the configured K of the IDT prior (None: derived from the number of videos). With
    ``stages`` (``("decode",)``), only the videos done in them count (not excluded or failed), and the lines
    say "usable" instead of "readable".
    """
    readable = manifest["video_id"].isin(set(usable_videos(manifest, *stages)["video_id"]))
    word = "usable" if stages else "readable"
    target = readable & (manifest["dataset"] == "target")
    labelled_train = target & (manifest["split"] == "train") & (manifest["label_index"] >= 0)
    problems = []
    if not labelled_train.any():
        problems.append(f"the target has no {word} labelled train video: every method is fine-tuned on them")
    if not (target & (manifest["split"] == "test")).any():
        problems.append(f"the target has no {word} test video: there is nothing to evaluate on")
    source = readable & manifest["in_source"].astype(bool)
    on_source = [method.name for method in methods if method.trains_on in SOURCE_TRAINED]
    if on_source and not source.any():
        problems.append(
            f"no {word} source video, but {', '.join(on_source)} train on the source: set data.source_* "
            "or data.target_train_in_source"
        )
    target_classes = set(manifest.loc[labelled_train, "label"])
    bound = [method.name for method in methods if method.trains_on == "supervised_labels"]
    if bound and source.any() and not (source & manifest["heldout_label"].isin(target_classes)).any():
        problems.append(
            f"{', '.join(bound)} trains on the source's true labels, but no source video has one among the "
            "target classes: give data.source_heldout_labels (or a Kinetics or CSV source with labels)"
        )
    if any(method.needs_idt for method in methods) and n_clusters is not None and n_clusters > source.sum():
        problems.append(
            f"cluster.n_clusters is {n_clusters}, more than the {int(source.sum())} {word} source videos "
            "the IDT prior clusters"
        )
    return problems
