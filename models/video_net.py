"""A video classifier: backbone + global average pooling + dropout + classification and embedding heads.

Fine-tuning freezes the backbone's earliest blocks. A *block* is one resolution stage of the backbone
(``Backbone.blocks()``): for the video ResNets block 1 = stem + layer1 (conv1 + conv2_x), blocks 2-4 =
layer2-layer4; for S3D the four stages at output strides 4, 8, 16, 32. MotionFit freezes block 1 on
UCF101 and blocks 1-2 on HMDB51. A frozen block neither learns (``requires_grad`` off) nor updates
its batch-norm statistics (kept in eval mode even while the model trains).
"""

import torch.nn.functional as F
from torch import Tensor, nn

from motionfit.models.backbones import Backbone, build_backbone


class VideoNet(nn.Module):
    """Backbone, global average pooling, dropout, an optional linear classifier and an optional
    L2-normalised embedding head (Wu et al. 2018 / Zhuang et al. 2019: 128-d for NCE and Local
    Aggregation). The embedding head batch-normalises the pooled features before its linear layer: pooled
    post-ReLU features are all positive, and a linear head on them starts with every embedding in one
    direction (mean pairwise cosine 0.95 measured on the synthetic videos, 0.01 with the normalisation).

    Args:
        backbone: maps ``[B, C, T, H, W]`` to ``[B, D, T', H', W']`` and has ``out_features`` (D).
        num_classes: classifier outputs K; ``None`` for a network without classifier.
        embedding_dim: embedding size E; ``None`` for a network without embedding head.
        dropout: dropout probability before the classifier.
    """

    def __init__(
        self,
        backbone: Backbone,
        num_classes: int | None,
        embedding_dim: int | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be positive or None, got {num_classes}")
        if embedding_dim is not None and embedding_dim < 1:
            raise ValueError(f"embedding_dim must be positive or None, got {embedding_dim}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.backbone = backbone
        self.global_pool = nn.AdaptiveAvgPool3d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = None if num_classes is None else nn.Linear(backbone.out_features, num_classes)
        if self.fc is not None:  # torchvision's VideoResNet initialisation of its classifier
            nn.init.normal_(self.fc.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc.bias)
        self.embedding = None
        if embedding_dim is not None:  # pooled post-ReLU features are all positive: centre them first
            features = backbone.out_features
            self.embedding = nn.Sequential(nn.BatchNorm1d(features), nn.Linear(features, embedding_dim))
        self.frozen_blocks = 0

    @property
    def out_features(self) -> int:
        """Size D of the pooled features."""
        return self.backbone.out_features

    def feature_map(self, x: Tensor) -> Tensor:
        """Backbone output: ``[B, C, T, H, W]`` -> ``[B, D, T', H', W']``. One backbone pass can feed several
        heads (:meth:`classify`, :meth:`embed`) and losses on the map itself (local motion contrast,
        Grad-CAM)."""
        return self.backbone(x)

    def pool(self, feature_map: Tensor) -> Tensor:
        """Global average pooling of a feature map: ``[B, D, T', H', W']`` -> ``[B, D]``."""
        return self.global_pool(feature_map).flatten(1)

    def classify(self, feature_map: Tensor) -> Tensor:
        """Class logits of a feature map: ``[B, D, T', H', W']`` -> ``[B, K]`` (pool, dropout, classifier)."""
        if self.fc is None:
            raise RuntimeError("this VideoNet was built with num_classes=None: it has no classifier")
        return self.fc(self.dropout(self.pool(feature_map)))

    def embed(self, feature_map: Tensor) -> Tensor:
        """L2-normalised embedding of a feature map: ``[B, D, T', H', W']`` -> ``[B, E]`` with unit rows."""
        return self.embed_features(self.pool(feature_map))

    def embed_features(self, features: Tensor) -> Tensor:
        """L2-normalised embedding of pooled features ``[B, D]`` -> ``[B, E]``."""
        if self.embedding is None:
            raise RuntimeError("this VideoNet was built with embedding_dim=None: it has no embedding head")
        return F.normalize(self.embedding(features), dim=1)

    def features(self, x: Tensor) -> Tensor:
        """Globally pooled conv5 features (retrieval, linear probes): ``[B, C, T, H, W]`` -> ``[B, D]``."""
        return self.pool(self.feature_map(x))

    def forward(self, x: Tensor) -> Tensor:
        """Class logits: ``[B, C, T, H, W]`` -> ``[B, K]``."""
        return self.classify(self.feature_map(x))

    def train(self, mode: bool = True) -> "VideoNet":
        """Set training mode; frozen blocks stay in eval mode (their batch-norm statistics are fixed)."""
        super().train(mode)
        for block in blocks_to_freeze(self, self.frozen_blocks):
            block.eval()
        return self


def build_model(
    arch: str,
    in_channels: int,
    num_classes: int | None,
    width_multiplier: float = 1.0,
    layers: tuple[int, ...] | None = None,
    embedding_dim: int | None = None,
    dropout: float = 0.0,
) -> VideoNet:
    """Build a randomly initialised ``VideoNet`` on ``build_backbone(arch, in_channels, width_multiplier,
    layers)``; see ``VideoNet`` for the heads."""
    backbone = build_backbone(arch, in_channels, width_multiplier, layers)
    return VideoNet(backbone, num_classes, embedding_dim, dropout)


def blocks_to_freeze(model: VideoNet, n_blocks: int) -> list[nn.Module]:
    """The backbone's first ``n_blocks`` blocks (0-4), earliest first; see the module docstring."""
    blocks = model.backbone.blocks()
    if not 0 <= n_blocks <= len(blocks):
        raise ValueError(f"n_blocks must be in [0, {len(blocks)}], got {n_blocks}")
    return blocks[:n_blocks]


def freeze_blocks(model: VideoNet, n_blocks: int) -> None:
    """Freeze exactly blocks 1..``n_blocks`` of the backbone and unfreeze its later blocks (heads are
    left as they are): frozen parameters get ``requires_grad=False`` and frozen batch norms stay in
    eval mode through ``model.train()``."""
    frozen = blocks_to_freeze(model, n_blocks)
    for block in model.backbone.blocks():
        block.requires_grad_(True)
    for block in frozen:
        block.requires_grad_(False)
    model.frozen_blocks = n_blocks
    model.train(model.training)
