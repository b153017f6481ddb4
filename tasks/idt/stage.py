"""The IDT stage body: trajectories of a batch of decoded videos into ``idt.zarr``."""

from __future__ import annotations

from motionfit.storage.layout import RunLayout
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.extractor import extract_trajectories
from motionfit.tasks.motion.codec import dequantize_flow, stored_flow_bound
from motionfit.tasks.per_video import VideoOutcome, inputs_key, map_videos

CODE_VERSION = 1
"""Version of the IDT computation (this module and the extractor it calls), part of the stage's cache and
per-video input keys: bump it when a change alters the trajectories, and the next run recomputes them and
the Fisher vectors."""


def extract_idt_videos(video_ids: list[str], layout: RunLayout, config: IdtConfig) -> list[VideoOutcome]:
    """Extract IDT for each uncommitted video of ``video_ids`` from its stored frames.

    In ``pipeline`` mode the stored TV-L1 flow (de-quantised with the bound it was stored with) replaces the
    reference's Farnebäck flow. Each video's array is ``[N, 436]`` (``config.dtype``); its attribute
    ``counts_per_frame`` lists how many trajectories end on each frame, and ``frames`` counts the frames.
    """
    frames_store = layout.store("frames")
    flow_store = layout.store("flow")
    output = layout.store("idt", chunk_frames=4096)

    def process(video_id: str) -> None:
        frames = frames_store.read(video_id)
        flows = None
        if config.mode == "pipeline":
            bound = stored_flow_bound(flow_store.attrs(video_id), video_id)
            flows = dequantize_flow(flow_store.read(video_id), bound)
        result = extract_trajectories(frames, config, flows=flows)
        output.write(
            video_id,
            result.trajectories.astype(config.dtype),
            attrs={
                "counts_per_frame": result.counts_per_frame.tolist(),
                "frames": len(result.counts_per_frame),
                "mode": config.mode,
            },
        )

    def key_of(video_id: str) -> str:
        upstream = [frames_store.markers] + ([flow_store.markers] if config.mode == "pipeline" else [])
        return inputs_key(CODE_VERSION, config, [markers.identity(video_id) for markers in upstream])

    return map_videos(video_ids, output.markers, process, key_of)
