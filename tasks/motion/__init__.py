"""Motion: TV-L1 optical flow between stored frames, the uint8 contract of stored flow, and MSCL's motion
differential sampling."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "FlowConfig": "config",
        "compute_tvl1_flow": "tvl1",
        "compute_flows": "tvl1",
        "quantize_flow": "codec",
        "dequantize_flow": "codec",
        "stored_flow_bound": "codec",
        "normalise_flow": "codec",
        "motion_differential_keys": "sampling",
    },
)
