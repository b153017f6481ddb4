"""Execution settings shared by every flow: task runner, batching, device and seed."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from motionfit.tasks import VIDEO_MEMORY_MIB


class RuntimeConfig(BaseModel):
    """Where and how the stages run."""

    model_config = ConfigDict(extra="forbid")

    task_runner: Literal["threads", "processes", "dask"] = Field(
        "threads",
        description="CPU stages' Prefect task runner. OpenCV and numpy release the GIL, so threads scale on "
        "one machine; 'dask' runs on an existing cluster (dask_address) or one made from dask_cluster_class.",
    )
    max_workers: int = Field(2, ge=1, description="Concurrent CPU batches (threads or processes).")
    dask_address: str | None = Field(None, description="Scheduler address of a running Dask cluster.")
    dask_cluster_class: str | None = Field(
        None, description="Dotted class of a Dask cluster to start, e.g. dask_jobqueue.SLURMCluster."
    )
    dask_cluster_kwargs: dict[str, Any] = Field(default_factory=dict, description="Arguments of that class.")
    dask_adapt_kwargs: dict[str, Any] | None = Field(
        None, description="Adaptive scaling, e.g. {maximum: 64}."
    )
    videos_per_batch: int = Field(
        16, ge=1, description="Videos per CPU task: Prefect's per-task overhead matters at 240k videos."
    )
    video_memory_mib: float = Field(
        VIDEO_MEMORY_MIB,
        gt=0,
        description="Memory one video may take in the flow and IDT stages beyond what the process held "
        "before (its libraries: about 620 MiB with torch). Each reads, computes and writes a video in "
        "windows of frames sized to fit, its working memory for the frame size counted in, so a long video "
        "takes no more than a short one. At 128x228 frames, 256 MiB gives flow windows of 173 frame pairs "
        "(48 bytes a pixel each; TV-L1 works in 25 MiB) and IDT windows of 455 frames (12 bytes a pixel "
        "each; the extractor's state at the release's defaults is 3000 bytes a pixel: 104 MiB, 354 MiB at "
        "455x256); a frame size that needs more runs with the smallest window and a warning. Decode holds "
        "one chunk of 16 frames and the decoder's buffers (22 MiB for 1280x720 video) whatever this is. A "
        "CPU worker needs about max_workers times this above its libraries.",
    )
    max_failed_fraction: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of a stage's videos (or of the listed videos, at ingest) that may fail while the "
        "run goes on; above it the run stops with the failed videos and their reasons. Committed work stays.",
    )
    task_retries: int = Field(
        2,
        ge=0,
        description="Retries of a stage task after a transient error (network, object store, time-out; not "
        "a bad video): a retried batch skips its committed videos, a retried training resumes from its "
        "checkpoint.",
    )
    retry_delay_seconds: float = Field(30.0, ge=0, description="Wait before each retry.")
    storage_secret: str | None = Field(
        None,
        description="Name of a Prefect Secret block holding the object store's environment variables as "
        "JSON (AWS_ACCESS_KEY_ID, ...), set in the run's processes when it starts; unset, credentials come "
        "from the environment (AWS_*, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_*). Never the secrets "
        "themselves: config files are stored in the run root.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="GPU stages' device; auto = CUDA if present."
    )
    train_processes: int = Field(
        1,
        ge=1,
        description="Processes of each training stage (teacher, pseudo-label student, fine-tuning), one GPU "
        "each on CUDA, training together with DistributedDataParallel: each takes an equal share of every "
        "batch (batch_size stays the global batch, so it must be a multiple of this), batch norms see the "
        "whole batch, and the result is that of one process. 1 trains in the stage task's process.",
    )
    seed: int = Field(0, description="Global seed; every stage derives its own from it.")

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device
