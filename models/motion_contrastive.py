"""Local motion contrastive learning (MSCL, Ni et al. 2022) between an RGB student and a flow teacher.

Each time step of the RGB student's feature map should match the flow teacher's feature at the same
time step of the same clip, and not the teacher's other time steps nor the features of the clip's
rotated flow field (flow rotation: the same motion energy with a wrong direction).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

LMCL_TEMPERATURE = 0.1
"""InfoNCE temperature of the local motion contrastive loss."""


def time_steps(feature_map: Tensor, n_steps: int | None = None) -> Tensor:
    """Spatially averaged feature map, one vector per time step: ``[B, D, T', H', W']`` -> ``[B, T, D]``
    with T = T', or T = ``n_steps`` by adaptive temporal average pooling (to align student and teacher)."""
    if feature_map.ndim != 5:
        raise ValueError(f"feature_map must be [B, D, T', H', W'], got {tuple(feature_map.shape)}")
    steps = feature_map.mean(dim=(3, 4))  # [B, D, T']
    if n_steps is not None:
        steps = F.adaptive_avg_pool1d(steps, n_steps)
    return steps.transpose(1, 2)


class TimeStepProjection(nn.Module):
    """Projection head of the local motion contrast: ``time_steps`` then a two-layer MLP (Linear, ReLU,
    Linear) applied to every time step: ``[B, D, T', H', W']`` -> ``[B, T, E]`` (not normalised).

    Args:
        in_features: D, the backbone's ``out_features``.
        embedding_dim: E.
        hidden_dim: width of the hidden layer (default D).
        n_steps: pool the time axis to this many steps (default: keep T').
    """

    def __init__(
        self,
        in_features: int,
        embedding_dim: int = 128,
        hidden_dim: int | None = None,
        n_steps: int | None = None,
    ) -> None:
        super().__init__()
        hidden_dim = in_features if hidden_dim is None else hidden_dim
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden_dim), nn.ReLU(inplace=True), nn.Linear(hidden_dim, embedding_dim)
        )
        self.n_steps = n_steps

    def forward(self, feature_map: Tensor) -> Tensor:
        """``[B, D, T', H', W']`` -> ``[B, T, E]``."""
        return self.mlp(time_steps(feature_map, self.n_steps))


def rotate_flow(flow: Tensor, quarter_turns: int = 1) -> Tensor:
    """Rotate a zero-centred flow field by ``quarter_turns`` x 90 degrees (counter-clockwise as displayed,
    x right, y down): both the pixel grid and the vectors, so a rotated video would have this flow.

    Args:
        flow: ``[..., 2, T, H, W] float`` normalised flow, channels (x, y), zero meaning no motion.
        quarter_turns: number of 90-degree turns (any integer; taken modulo 4).

    Returns:
        ``[..., 2, T, W, H]`` (``[..., 2, T, H, W]`` for an even number of turns).
    """
    if flow.ndim < 4 or flow.shape[-4] != 2:
        raise ValueError(f"flow must be [..., 2, T, H, W], got {tuple(flow.shape)}")
    for _ in range(quarter_turns % 4):
        flow = torch.rot90(flow, 1, dims=(-2, -1))
        flow = torch.stack([flow[..., 1, :, :, :], -flow[..., 0, :, :, :]], dim=-4)
    return flow


def local_motion_contrastive_loss(
    student_steps: Tensor,
    teacher_steps: Tensor,
    rotated_teacher_steps: Tensor,
    temperature: float = LMCL_TEMPERATURE,
) -> Tensor:
    """InfoNCE between per-time-step RGB student and flow teacher features, averaged over B x T anchors.

    For anchor ``q = s[b, t]`` the positive is ``k = f[b, t]``; negatives are ``f[b, t']`` for t' != t
    and ``r[b, t']`` for every t' (the teacher on the rotated flow of the same clip). All vectors are
    L2-normalised here; the loss is ``-log exp(q.k/T) / (sum_t' exp(q.f[b, t']/T) + sum_t' exp(q.r[b,
    t']/T))``. Gradients reach ``student_steps`` (and the teacher inputs unless they are detached).

    Args:
        student_steps: ``[B, T, E] float`` s, projected RGB student features.
        teacher_steps: ``[B, T, E] float`` f, projected flow teacher features, aligned in time.
        rotated_teacher_steps: ``[B, T, E] float`` r, teacher features of the rotated flow.
        temperature: T.

    Returns:
        Scalar loss.
    """
    shape = student_steps.shape
    if student_steps.ndim != 3 or teacher_steps.shape != shape or rotated_teacher_steps.shape != shape:
        raise ValueError(
            "student_steps, teacher_steps and rotated_teacher_steps must all be [B, T, E], got "
            f"{tuple(shape)}, {tuple(teacher_steps.shape)}, {tuple(rotated_teacher_steps.shape)}"
        )
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    student = F.normalize(student_steps, dim=2)
    keys = F.normalize(torch.cat([teacher_steps, rotated_teacher_steps], dim=1), dim=2)  # [B, 2T, E]
    logits = torch.einsum("bte,bse->bts", student, keys) / temperature  # [B, T, 2T]
    n_steps = shape[1]
    targets = torch.arange(n_steps, device=logits.device).expand(shape[0], n_steps)
    return F.cross_entropy(logits.reshape(-1, 2 * n_steps), targets.reshape(-1))


def other_clip_loss(
    student_steps: Tensor,
    teacher_steps: Tensor,
    rotated_teacher_steps: Tensor,
    temperature: float = LMCL_TEMPERATURE,
) -> Tensor:
    """The loss of :func:`local_motion_contrastive_loss` with each clip's anchors taken from the next clip
    of the batch (a control, no gradient): close to the loss itself when the keys alone tell the positive
    from the rotated flow, so that the student's clip adds little; near ``ln 2T`` when the anchors matter."""
    if student_steps.shape[0] < 2:
        raise ValueError(f"other_clip_loss needs at least 2 clips, got {student_steps.shape[0]}")
    with torch.no_grad():
        return local_motion_contrastive_loss(
            student_steps.roll(1, dims=0), teacher_steps, rotated_teacher_steps, temperature
        )
