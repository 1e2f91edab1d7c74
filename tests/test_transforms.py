"""The joint training transform keeps image and mask aligned, crops exactly and pads with ignore."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fixtures import checkerboard, write_gta5

from drsl.config import AugmentConfig
from drsl.data.gta5 import GTA5Dataset
from drsl.data.transforms import build_train_transform, resize_pair


def board(size: tuple[int, int], cell: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    image, mask = checkerboard(size, cell)
    return torch.from_numpy(image).permute(2, 0, 1).contiguous(), torch.from_numpy(mask)


def geometric(crop: list[int], scale: list[float]) -> AugmentConfig:
    return AugmentConfig(crop_size=crop, scale_range=scale, hflip=True, photometric=False)


@pytest.mark.parametrize("seed", range(6))
def test_checkerboard_stays_aligned(seed: int) -> None:
    # A 10x12-cell board: a flip or crop applied to only one of the pair swaps the parity.
    image, mask = board((80, 96))
    transform = build_train_transform(geometric([40, 56], [0.75, 1.6]))
    torch.manual_seed(seed)
    out_image, out_mask = transform(image, mask)
    assert out_image.shape == (3, 40, 56) and out_mask.shape == (40, 56)
    assert out_image.dtype == torch.uint8 and out_mask.dtype == torch.int64
    valid = out_mask != 255
    white = out_image[0] > 127
    agreement = (white == (out_mask == 1))[valid].float().mean()
    assert agreement > 0.95  # only bilinear cell borders may disagree; a 2 px shift gives < 0.85
    assert set(out_mask.unique().tolist()) <= {0, 1, 255}


def test_flip_happens_and_is_joint() -> None:
    image, mask = board((16, 24), cell=4)
    image[:, :, :4] = 7  # mark the left edge of the image only
    transform = build_train_transform(geometric([16, 24], [1.0, 1.0]))
    flipped = 0
    for seed in range(12):
        torch.manual_seed(seed)
        out_image, out_mask = transform(image, mask)
        is_flipped = bool((out_image[:, :, -4:] == 7).all())
        reference = mask.flip(-1) if is_flipped else mask
        assert torch.equal(out_mask, reference)
        flipped += is_flipped
    assert 0 < flipped < 12


def test_crop_size_exact_and_ignore_padding() -> None:
    image, mask = board((20, 30))
    transform = build_train_transform(geometric([32, 40], [0.5, 0.5]))
    out_image, out_mask = transform(image, mask)  # scaled to 10x15, padded to 32x40
    assert out_image.shape == (3, 32, 40) and out_mask.shape == (32, 40)
    assert int((out_mask != 255).sum()) == 10 * 15
    assert bool((out_image[:, out_mask == 255] == 0).all())
    big = build_train_transform(geometric([8, 8], [1.5, 2.0]))(image, mask)
    assert big[0].shape == (3, 8, 8) and big[1].shape == (8, 8)


def test_seeded_determinism_and_photometric_image_only() -> None:
    image, mask = board((32, 32))
    cfg = AugmentConfig(crop_size=[32, 32], scale_range=[1.0, 1.0], hflip=False, blur_prob=1.0)
    transform = build_train_transform(cfg)
    torch.manual_seed(3)
    first = transform(image, mask)
    torch.manual_seed(3)
    second = transform(image, mask)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert torch.equal(first[1], mask)  # the label is untouched by photometric augmentation
    assert first[0].dtype == torch.uint8 and not torch.equal(first[0], image)
    torch.manual_seed(4)
    assert not torch.equal(transform(image, mask)[0], first[0])


def test_resize_pair_nearest_labels() -> None:
    image, mask = board((16, 16), cell=4)
    mask[0, 0] = 255
    out_image, out_mask = resize_pair(image, mask, [7, 9])
    assert out_image.shape == (3, 7, 9) and out_mask.shape == (7, 9)
    assert set(out_mask.unique().tolist()) <= {0, 1, 255} and out_mask.dtype == mask.dtype


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="scale_range"):
        build_train_transform(AugmentConfig(scale_range=[1.5, 0.5]))


def test_dataloader_workers_reproducible(tmp_path: Path) -> None:
    write_gta5(tmp_path, n=4, size=(24, 32))
    cfg = AugmentConfig(crop_size=[16, 16], scale_range=[0.5, 1.5])
    dataset = GTA5Dataset(tmp_path, transform=build_train_transform(cfg))

    def run() -> list[torch.Tensor]:
        seeded = torch.Generator().manual_seed(7)
        loader = torch.utils.data.DataLoader(dataset, batch_size=2, num_workers=2, generator=seeded)
        return [t for batch in loader for t in (batch["image"], batch["label"])]

    first, second = run(), run()
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert first[0].shape == (2, 3, 16, 16) and first[1].dtype == torch.int64
