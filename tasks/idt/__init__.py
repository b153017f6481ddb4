"""Improved Dense Trajectories (Wang & Schmid 2013): the extractor and its parts (tracking, pyramid flow,
camera motion, descriptors), the row layout, and the stage that fills ``idt.zarr``."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "IdtConfig": "config",
        "IdtResult": "extractor",
        "VideoInputError": "extractor",
        "extract_trajectories": "extractor",
        "extract_video_trajectories": "extractor",
        "IdtColumns": "columns",
        "REFERENCE_COLUMNS": "columns",
        "extract_idt_videos": "stage",
    },
)
