"""Information-aware and random masking: counts, hand-computed selections, jitter, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from infmae.masking import (
    MaskGenerator,
    information_aware_masking,
    num_visible_information_aware,
    patch_means,
    random_masking,
)


def images_with_patch_values(values: list[list[float]], p: int = 16) -> torch.Tensor:
    """[1, 3, gh*p, gw*p] image whose 16x16 patch (i, j) has mean values[i][j] (channels differ, same mean)."""
    v = torch.tensor(values, dtype=torch.float32)
    img = v.repeat_interleave(p, 0).repeat_interleave(p, 1)  # [H, W]
    return torch.stack([img - 0.3, img, img + 0.3]).unsqueeze(0)


def check_consistent(info, n: int) -> None:
    b, nv = info.ids_keep.shape
    assert info.mask.shape == (b, n)
    assert torch.all(info.mask.sum(1) == n - nv)
    assert torch.all(info.mask.gather(1, info.ids_keep) == 0)
    assert torch.all(info.ids_keep[:, 1:] > info.ids_keep[:, :-1])  # ascending, distinct
    masked = torch.argsort(info.mask, dim=1, stable=True)[:, nv:]
    shuffled = torch.cat([info.ids_keep, masked], dim=1)
    assert torch.equal(shuffled.gather(1, info.ids_restore), torch.arange(n).expand(b, n))


def test_hand_computed_selection() -> None:
    # 2 x 4 patches; ascending order of the means: ids 4, 1, 6, 3, 7, 0, 5, 2
    img = images_with_patch_values([[5, 1, 7, 3], [0, 6, 2, 4]])
    gen = MaskGenerator("gray", stride=4)
    assert torch.allclose(gen.scores(img), torch.tensor([[5.0, 1, 7, 3, 0, 6, 2, 4]]))
    info = gen(img)
    assert info.grid == (2, 4)
    assert info.ids_keep.tolist() == [[4, 7]]  # sorted positions 0 and 4
    assert info.mask.tolist() == [[1, 1, 1, 1, 0, 1, 1, 0]]
    assert MaskGenerator("gray", stride=2)(img).ids_keep.tolist() == [[4, 5, 6, 7]]  # positions 0, 2, 4, 6
    assert MaskGenerator("gray", stride=3)(img).ids_keep.tolist() == [[3, 4, 5]]  # positions 0, 3, 6: 4, 3, 5
    check_consistent(info, 8)


def test_keep_maps_upsample_the_patch_mask() -> None:
    img = images_with_patch_values([[5, 1, 7, 3], [0, 6, 2, 4]])
    info = MaskGenerator("gray", stride=4)(img)
    k1, k2 = info.keep1, info.keep2
    assert k1.shape == (1, 8, 16, 1) and k2.shape == (1, 4, 8, 1)
    expect = (1 - info.mask).view(2, 4)
    assert torch.equal(k1[0, :, :, 0], expect.repeat_interleave(4, 0).repeat_interleave(4, 1))
    assert torch.equal(k2[0, :, :, 0], expect.repeat_interleave(2, 0).repeat_interleave(2, 1))


@pytest.mark.parametrize(
    "hw,stride,expected",
    [
        ((224, 224), 4, 49),
        ((224, 224), 2, 98),
        ((224, 224), 7, 28),
        ((256, 320), 4, 80),
        ((512, 640), 4, 320),
        ((224, 240), 4, 53),  # N = 210 is not divisible by 4: ceil(210 / 4) = 53 (positions 0, 4, ..., 208)
        ((224, 240), 7, 30),
    ],
)
@pytest.mark.parametrize("jitter", [False, True])
def test_visible_count_is_n_over_s(hw: tuple[int, int], stride: int, expected: int, jitter: bool) -> None:
    imgs = torch.randn(3, 3, *hw)
    n = (hw[0] // 16) * (hw[1] // 16)
    assert num_visible_information_aware(n, stride) == expected == math.ceil(n / stride)
    info = MaskGenerator("gray", stride=stride, jitter=jitter)(imgs, torch.Generator().manual_seed(0))
    assert info.ids_keep.shape == (3, expected)
    check_consistent(info, n)


def test_batched_equals_per_image_and_is_deterministic() -> None:
    imgs = torch.randn(4, 3, 64, 96)
    gen = MaskGenerator("gray", stride=4)
    info = gen(imgs)
    for i in range(4):
        assert torch.equal(gen(imgs[i : i + 1]).ids_keep[0], info.ids_keep[i])
    assert torch.equal(gen(imgs).mask, info.mask)


def test_ties_are_broken_by_patch_order() -> None:
    info = MaskGenerator("gray", stride=4)(torch.zeros(2, 3, 64, 64))  # all scores equal
    assert info.ids_keep.tolist() == [[0, 4, 8, 12]] * 2


def test_jitter_picks_one_member_of_each_group() -> None:
    torch.manual_seed(0)
    scores = torch.randn(5, 210)
    order = torch.argsort(scores, dim=1, stable=True)
    rank = torch.argsort(order, dim=1)  # sorted position of every patch
    a = information_aware_masking(scores, (14, 15), 4, jitter=True, generator=torch.Generator().manual_seed(1))
    b = information_aware_masking(scores, (14, 15), 4, jitter=True, generator=torch.Generator().manual_seed(1))
    c = information_aware_masking(scores, (14, 15), 4, jitter=True, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.ids_keep, b.ids_keep)
    assert not torch.equal(a.ids_keep, c.ids_keep)
    groups = torch.sort(torch.div(rank.gather(1, a.ids_keep), 4, rounding_mode="floor"), dim=1).values
    assert torch.equal(groups, torch.arange(53).expand(5, 53))  # exactly one visible token per group
    plain = information_aware_masking(scores, (14, 15), 4)
    assert torch.equal(torch.sort(rank.gather(1, plain.ids_keep), dim=1).values, torch.arange(0, 210, 4).expand(5, 53))


def test_random_masking_ratio_and_seed() -> None:
    a = random_masking(3, (14, 14), 0.75, torch.Generator().manual_seed(5))
    b = random_masking(3, (14, 14), 0.75, torch.Generator().manual_seed(5))
    c = random_masking(3, (14, 14), 0.75, torch.Generator().manual_seed(6))
    assert a.ids_keep.shape == (3, 49)
    assert torch.equal(a.mask, b.mask) and not torch.equal(a.mask, c.mask)
    check_consistent(a, 196)
    with pytest.raises(ValueError):
        random_masking(1, (2, 2), 1.0)


def test_reference_score_is_a_fixed_linear_function() -> None:
    g1, g2 = MaskGenerator("reference", reference_seed=3), MaskGenerator("reference", reference_seed=3)
    assert torch.equal(g1.reference_weight, g2.reference_weight)
    assert not any(True for _ in g1.parameters())  # a buffer, never trained
    imgs = torch.randn(2, 3, 32, 48)
    s = g1.scores(imgs)
    patches = imgs.reshape(2, 3, 2, 16, 3, 16).permute(0, 2, 4, 1, 3, 5).reshape(2, 6, -1)
    expect = patches @ g1.reference_weight.reshape(-1) + g1.reference_bias
    assert torch.allclose(s, expect, atol=1e-5)
    check_consistent(g1(imgs), 6)


def test_gray_score_is_patch_mean() -> None:
    imgs = torch.randn(2, 3, 32, 32)
    expect = imgs.mean(1).reshape(2, 2, 16, 2, 16).mean((2, 4)).reshape(2, 4)
    assert torch.allclose(patch_means(imgs), expect, atol=1e-6)


def test_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        MaskGenerator("nope")
    with pytest.raises(ValueError):
        MaskGenerator("gray")(torch.zeros(1, 3, 30, 32))
