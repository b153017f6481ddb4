"""Data: ingest (UCF101, HMDB51, Kinetics, CSV, folders) into the manifest, decode videos to frames, the
synthetic motion data set, and clips of the stored frames and flow with their transforms."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "DataConfig": "config",
        "DecodeConfig": "config",
        "SynthConfig": "config",
        "MOTION_CLASSES": "config",
        "IngestError": "ingest",
        "build_manifest": "ingest",
        "synthetic_data_config": "ingest",
        "VideoDecodeError": "decode",
        "decode_frames": "decode",
        "decode_video": "decode",
        "decode_videos": "decode",
        "SynthSummary": "synth",
        "generate_dataset": "synth",
        "ClipDataset": "clips",
        "EpochSampler": "clips",
        "clip_keys": "clips",
        "clip_span": "clips",
        "frame_counts": "clips",
        "labelled_videos": "clips",
        "unlabelled_videos": "clips",
        "num_classes": "clips",
        "clip_loader": "clips",
        "ClipLoader": "clips",
        "video_clip_keys": "clips",
        "video_means": "clips",
        "ClipTransform": "transforms",
    },
)
