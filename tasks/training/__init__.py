"""Training: the shared loop (schedules, AMP, checkpoints, exact resumption), the flow teacher, its
clip-level pseudo-labels, the RGB students (:mod:`~motionfit.tasks.training.students`) and fine-tuning,
on one process or several data-parallel ones (:mod:`~motionfit.tasks.training.launch`)."""

from motionfit.tasks import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(
    __name__,
    {
        "TrainingConfig": "config",
        "TeacherConfig": "config",
        "PseudoLabelConfig": "config",
        "StudentConfig": "config",
        "FinetuneConfig": "config",
        "train_one_epoch": "loop",
        "fit": "loop",
        "train_in_processes": "launch",
        "load_network": "loop",
        "train_teacher": "teacher",
        "generate_pseudo_labels": "pseudo_labels",
        "pseudo_targets": "pseudo_labels",
        "pseudo_label_accuracy": "pseudo_labels",
        "write_supervised_labels": "supervised_labels",
        "finetune": "finetune",
        "predict_videos": "finetune",
    },
)
