"""Config section of the evaluate stage (``evaluate``): the papers' evaluation protocol."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class EvaluateConfig(BaseModel):
    """Evaluation protocol (MotionFit / IDT-prior papers; MSCL for the confusion analysis)."""

    model_config = ConfigDict(extra="forbid")

    test_clips: int = Field(5, ge=1, description="Clips per test video, softmax averaged (MotionFit).")
    retrieval_clips: int = Field(10, ge=1, description="Clips per video averaged into a retrieval feature.")
    retrieval_ks: tuple[int, ...] = Field((1, 5, 10, 20, 50), description="Recall@k for clip retrieval.")
    fewshot_shots: tuple[int | Literal["all"], ...] = Field(
        (1, 5, 10, 20, "all"), description="Labelled videos per class for the linear probe."
    )
    fewshot_seeds: tuple[int, ...] = Field((0, 1, 2), description="Seeds of the few-shot samples.")
    confused_pairs: int = Field(
        10, ge=1, description="Most-confused class pairs listed (MSCL supp. Table 2)."
    )
    gradcam_videos: int = Field(4, ge=0, description="Test videos shown with Grad-CAM heat maps.")
    retrieval_examples: int = Field(3, ge=0, description="Queries drawn with their top-3 neighbours.")
