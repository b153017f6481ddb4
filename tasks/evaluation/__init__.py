"""Evaluation: the papers' metrics, frozen features, the evaluate stage, the report, plots and Grad-CAM."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "EvaluateConfig": "config",
        "video_top1": "metrics",
        "retrieval_recall_at_k": "metrics",
        "linear_probe_fewshot": "metrics",
        "read_metrics": "metrics",
        "append_metrics": "metrics",
        "video_features": "features",
        "evaluate_run": "stage",
        "write_report": "report",
        "render_report_for_terminal": "report",
    },
)
