"""The IDT stage body: trajectories of a batch of decoded videos into ``idt.zarr``.

A video is read in windows of frames (and of their stored flow) that fit in the stage's memory budget and
pushed frame by frame through one :class:`TrajectoryExtractor`, whose live tracks carry the trajectories
across windows; the rows finished on each frame go on to storage at once. So a video of any length holds one
window, the extractor's state (the tracks of the last ``track_length`` frames) and a chunk of rows, and the
stored rows are those of :func:`~motionfit.tasks.idt.extractor.extract_trajectories` on the whole video.

Human boxes (``idt.human_boxes``) come in the video file's frames and pixels; each decoded frame takes the
boxes of the source frame it was decoded from, scaled to the decoded size, and a video's input key holds its
box file's content, so new boxes recompute its trajectories and nothing else.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from motionfit.storage.layout import RunLayout
from motionfit.tasks import VIDEO_MEMORY_MIB
from motionfit.tasks.data.config import DecodeConfig
from motionfit.tasks.data.decode import source_frame_indices, source_step
from motionfit.tasks.idt.config import IdtConfig
from motionfit.tasks.idt.extractor import (
    TrajectoryExtractor,
    VideoInputError,
    boxes_per_frame,
    channels_first,
    grey_frames,
    read_boxes,
)
from motionfit.tasks.motion.codec import dequantize_flow, stored_flow_bound
from motionfit.tasks.per_video import VideoOutcome, inputs_key, map_videos, window_length

CODE_VERSION = 1
"""Version of the IDT computation (this module and the extractor it calls), part of the stage's cache and
per-video input keys: bump it when a change alters the trajectories, and the next run recomputes them and
the Fisher vectors."""

ROWS_PER_CHUNK = 4096
"""Rows per inner chunk of ``idt.zarr``."""
WINDOW_BYTES_PER_PIXEL = 12
"""Bytes per pixel of each frame in a window of the IDT stage: the RGB frame read (3), its grey (1) and its
stored flow (2); measured as peak resident memory, 7.5-11 (the allocator keeps freed blocks between
windows), on 1280x720 video decoded to a 128 px short side."""
WORKING_BYTES_PER_PIXEL = 3000
"""Bytes per pixel of frame the IDT stage holds whatever its window: the extractor's state (pyramids,
Farnebäck expansions, integral histograms, live tracks) and one frame's de-quantised flow; measured 2710
(pipeline mode) and 2960 (reference mode) with the release's defaults at 64-256 px short sides."""
ROW_CHUNK_COPIES = 3
"""Chunks of rows the IDT stage holds at most while writing: the one filling, zarr's copy, its encoding."""


def decoded_frame_boxes(
    path: str, record: Mapping[str, Any], decode: DecodeConfig, n_frames: int, height: int, width: int
) -> list[np.ndarray | None]:
    """Human boxes of the file ``path`` (the release's format, in the video file's frames and pixels) on each
    of the ``n_frames`` decoded frames of ``height`` x ``width`` that the decode commit ``record`` describes:
    ``[b, 4] float32`` or None per frame."""
    boxes = read_boxes(Path(path), int(record["source_n_frames"]))
    kept = source_frame_indices(np.arange(n_frames), source_step(float(record["source_fps"]), decode))
    source_frames = boxes[:, 0].astype(np.int64)
    position = np.minimum(np.searchsorted(kept, source_frames), n_frames - 1)
    on_kept = kept[position] == source_frames
    scale = np.array([width / record["source_width"], height / record["source_height"]] * 2)
    mapped = np.column_stack([position[on_kept], boxes[on_kept, 1:5] * scale, boxes[on_kept, 5]])
    return boxes_per_frame(mapped, n_frames)


def file_digest(path: str) -> str:
    """SHA-256 prefix of a small input file's content, or "missing" (reading it then fails the video)."""
    if not Path(path).is_file():
        return "missing"
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:20]


def extract_idt_videos(
    video_ids: list[str],
    layout: RunLayout,
    config: IdtConfig,
    memory_mib: float = VIDEO_MEMORY_MIB,
    boxes: Mapping[str, str] | None = None,
    decode: DecodeConfig | None = None,
) -> list[VideoOutcome]:
    """Extract IDT for each uncommitted video of ``video_ids`` from its stored frames.

    In ``pipeline`` mode the stored TV-L1 flow (de-quantised with the bound it was stored with) replaces the
    reference's Farnebäck flow. Each video's array is ``[N, 436]`` (``config.dtype``); its attribute
    ``counts_per_frame`` lists how many trajectories end on each frame, and ``frames`` counts the frames.
    A video is read in windows of frames that fit in ``memory_mib`` (see the module docstring). ``boxes``:
    video id -> human box file, masked out of the camera-motion estimate (the module docstring); it needs
    ``decode``, the config the frames were decoded with.
    """
    boxes = dict(boxes or {})
    if boxes and decode is None:
        raise ValueError("human boxes need the decode config that made the frames")
    frames_store = layout.store("frames")
    flow_store = layout.store("flow")
    output = layout.store("idt", chunk_frames=ROWS_PER_CHUNK)
    row_dim = config.columns().row_dim

    def process(video_id: str) -> None:
        decoded = frames_store.attrs(video_id)  # one read of the commit record: shape and source
        n_frames, height, width = decoded["shape"][:3]
        if n_frames < 2:
            raise VideoInputError(f"video {video_id} holds {n_frames} frame(s); trajectories need at least 2")
        bound = None
        if config.mode == "pipeline":
            record = flow_store.attrs(video_id)
            bound = stored_flow_bound(record, video_id)
            expected, stored = (n_frames - 1, height, width, 2), tuple(record["shape"])
            if stored != expected:
                raise VideoInputError(f"pipeline mode needs flows of shape {expected}; got shape {stored}")
        frame_boxes: list[np.ndarray | None] = [None] * n_frames
        if video_id in boxes:
            frame_boxes = decoded_frame_boxes(boxes[video_id], decoded, decode, n_frames, height, width)
        pixels = height * width
        working = WORKING_BYTES_PER_PIXEL * pixels + ROW_CHUNK_COPIES * ROWS_PER_CHUNK * row_dim * 4
        subject = f"IDT of video {video_id} ({width}x{height})"
        window = window_length(memory_mib, WINDOW_BYTES_PER_PIXEL * pixels, working, 1, subject)
        extractor = TrajectoryExtractor(config, height, width)
        with output.stream(video_id, (row_dim,), config.dtype) as rows:
            for start in range(0, n_frames, window):
                stop = min(start + window, n_frames)
                grey = grey_frames(frames_store.read_range(video_id, start, stop))
                incoming: list[np.ndarray | None] = [None] * len(grey)  # the flow into frame t is row t - 1
                if bound is not None:
                    stored = flow_store.read_range(video_id, max(start - 1, 0), stop - 1)
                    incoming[len(grey) - len(stored) :] = list(stored)
                for frame, flow, frame_box in zip(grey, incoming, frame_boxes[start:stop], strict=True):
                    if flow is not None:
                        flow = channels_first(dequantize_flow(flow, bound))
                    extractor.push(frame, flow, frame_box)
                    rows.append(extractor.take_rows(n_frames).astype(config.dtype))
            counts = extractor.counts
            rows.commit({"counts_per_frame": counts, "frames": len(counts), "mode": config.mode})

    # human_boxes says whether boxes are used; the key holds the box file's content when they are, so a key
    # without boxes is that of the stage before they existed.
    settings = config.model_dump(mode="json", by_alias=True, exclude={"human_boxes"})

    def key_of(video_id: str) -> str:
        upstream = [frames_store.markers] + ([flow_store.markers] if config.mode == "pipeline" else [])
        identities = [markers.identity(video_id) for markers in upstream]
        if video_id not in boxes:
            return inputs_key(CODE_VERSION, settings, identities)
        return inputs_key(CODE_VERSION, settings, identities, file_digest(boxes[video_id]))

    return map_videos(video_ids, output.markers, process, key_of)
