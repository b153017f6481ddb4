"""RGB students, one module per self-training objective (MotionFit pseudo-labels, IDT-prior Local
Aggregation, CMPL, MERS/MARS feature regression), the shared single-network loop and MSCL's local motion
contrast."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "train_student": "trainer",
        "OBJECTIVES": "trainer",
        "ObjectiveSetup": "objective",
        "cluster_matrix": "local_aggregation",
        "train_cmpl": "cmpl",
        "FeatureRegression": "feature_regression",
    },
)
