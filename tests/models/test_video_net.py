"""VideoNet heads and block freezing for fine-tuning."""

import pytest
import torch

from motionfit.models.video_net import blocks_to_freeze, build_model, freeze_blocks

TINY = {"width_multiplier": 1 / 8, "layers": (1, 1, 1, 1)}


def tiny_model(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("r2plus1d_18", 3, **{"num_classes": 5, **TINY, **kwargs})


def test_heads_shapes_and_values() -> None:
    model = tiny_model(embedding_dim=128, dropout=0.5).eval()
    clip = torch.randn(2, 3, 8, 32, 32)
    feature_map = model.feature_map(clip)
    features = model.features(clip)
    assert feature_map.shape == (2, 64, 1, 2, 2)
    torch.testing.assert_close(features, feature_map.mean(dim=(2, 3, 4)))
    torch.testing.assert_close(model(clip), features @ model.fc.weight.T + model.fc.bias)
    embedding = model.embed(model.feature_map(clip))
    assert embedding.shape == (2, 128)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(2))
    norm, linear = model.embedding
    centred = (features - norm.running_mean) / torch.sqrt(norm.running_var + norm.eps)  # eval: running stats
    direction = (centred * norm.weight + norm.bias) @ linear.weight.T + linear.bias
    torch.testing.assert_close(embedding, direction / direction.norm(dim=1, keepdim=True))


def test_the_embedding_head_centres_positive_features_so_embeddings_spread() -> None:
    model = tiny_model(num_classes=None, embedding_dim=128).train()
    with torch.no_grad():
        features = torch.rand(64, 64) + 1.0  # all positive, like pooled post-ReLU features
        embeddings = model.embed_features(features)
    similarity = embeddings @ embeddings.T
    mean_cosine = (similarity.sum() - 64) / (64 * 63)
    assert abs(float(mean_cosine)) < 0.2


def test_dropout_acts_in_training_only() -> None:
    model = tiny_model(dropout=0.5)
    clip = torch.randn(2, 3, 8, 32, 32)
    model.eval()
    torch.testing.assert_close(model(clip), model(clip))
    model.train()
    torch.manual_seed(1)
    first = model(clip)
    torch.manual_seed(2)
    assert not torch.allclose(first, model(clip))


def test_missing_heads_raise() -> None:
    model = tiny_model(num_classes=None).eval()
    clip = torch.randn(1, 3, 8, 32, 32)
    assert model.features(clip).shape == (1, 64)
    with pytest.raises(RuntimeError, match="num_classes=None"):
        model(clip)
    with pytest.raises(RuntimeError, match="embedding_dim=None"):
        model.embed(clip)


def frozen_names(model: torch.nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


def names_with_prefix(model: torch.nn.Module, prefixes: tuple[str, ...]) -> set[str]:
    return {name for name, _ in model.named_parameters() if name.startswith(prefixes)}


def test_freeze_blocks_freezes_exactly_the_leading_stages() -> None:
    model = tiny_model()
    freeze_blocks(model, 1)
    assert frozen_names(model) == names_with_prefix(model, ("backbone.stem.", "backbone.layer1."))
    freeze_blocks(model, 2)
    expected = names_with_prefix(model, ("backbone.stem.", "backbone.layer1.", "backbone.layer2."))
    assert frozen_names(model) == expected
    freeze_blocks(model, 1)  # back to block 1 only: layer2 learns again
    assert frozen_names(model) == names_with_prefix(model, ("backbone.stem.", "backbone.layer1."))
    freeze_blocks(model, 0)
    assert frozen_names(model) == set()


def test_s3d_block_one_is_the_stride_four_stem() -> None:
    torch.manual_seed(0)
    model = build_model("s3d", 2, num_classes=3)
    freeze_blocks(model, 1)
    assert frozen_names(model) == names_with_prefix(model, tuple(f"backbone.features.{i}." for i in range(4)))


def test_frozen_blocks_keep_weights_and_statistics_through_training() -> None:
    model = tiny_model()
    freeze_blocks(model, 2)
    model.train()
    frozen_prefixes = ("backbone.stem", "backbone.layer1", "backbone.layer2")
    for name, module in model.named_modules():
        assert module.training == (not name.startswith(frozen_prefixes)), name
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1, momentum=0.9)
    clips, labels = torch.randn(4, 3, 8, 32, 32), torch.tensor([0, 1, 2, 3])
    torch.nn.functional.cross_entropy(model(clips), labels).backward()
    optimizer.step()
    after = model.state_dict()
    for key, value in before.items():
        changed = not torch.equal(value, after[key])
        if key.startswith(frozen_prefixes):
            assert not changed, key  # weights and batch-norm running statistics alike
        elif key.endswith(("weight", "running_mean")) and "layer3" in key:
            assert changed, key


def test_blocks_to_freeze_range() -> None:
    model = tiny_model()
    assert len(blocks_to_freeze(model, 4)) == 4
    with pytest.raises(ValueError, match=r"n_blocks must be in \[0, 4\], got 5"):
        blocks_to_freeze(model, 5)
