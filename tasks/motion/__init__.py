"""Motion: TV-L1 optical flow between stored frames (OpenCV's, or the batched PyTorch port of it for GPUs),
the uint8 contract of stored flow, and MSCL's motion differential sampling."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "FlowConfig": "config",
        "compute_tvl1_flow": "tvl1",
        "compute_flows": "tvl1",
        "flow_backend": "tvl1",
        "tvl1_flow_batch": "tvl1_torch",
        "quantize_flow": "codec",
        "dequantize_flow": "codec",
        "stored_flow_bound": "codec",
        "normalise_flow": "codec",
        "motion_differential_keys": "sampling",
    },
)
