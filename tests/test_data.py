"""The data path: checked files, a seeded split, and batches that shard cleanly across ranks."""

import pytest
import torch

from tests.helpers import write_idx
from trainer.data import BLACK, FOOTWEAR, DataError, InMemoryLoader, check_raw_files, load_splits, normalise, shift_batch


def test_real_split_sizes_and_determinism(data_root):
    a = load_splits(data_root, 5000, seed=0)
    b = load_splits(data_root, 5000, seed=0)
    c = load_splits(data_root, 5000, seed=1)
    assert a.train[0].shape == (55_000, 1, 28, 28) and a.val[0].shape == (5000, 1, 28, 28)
    assert a.test[0].shape == (10_000, 1, 28, 28) and a.test[1].dtype == torch.int64
    assert torch.equal(a.val[1], b.val[1]) and torch.equal(a.train[0][:100], b.train[0][:100])
    assert not torch.equal(a.val[1], c.val[1])
    assert abs(a.train[0].mean().item()) < 0.02 and abs(a.train[0].std().item() - 1) < 0.02


def test_hermetic_tiny_dataset_loads(tmp_path):
    splits = load_splits(write_idx(tmp_path), val_size=50, seed=0, download=False)
    assert len(splits.train[1]) == 250 and len(splits.val[1]) == 50 and len(splits.test[1]) == 100


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated or damaged"),
        (lambda p: p.write_bytes(b"\x00\x00\x09\x99" + p.read_bytes()[4:]), "valid IDX header"),
        (lambda p: p.unlink(), "is missing"),
    ],
)
def test_damaged_files_are_named(tmp_path, damage, message):
    root = write_idx(tmp_path)
    target = root / "FashionMNIST" / "raw" / "train-images-idx3-ubyte"
    damage(target)
    with pytest.raises(DataError, match=message) as info:
        check_raw_files(root)
    assert str(target) in str(info.value)


def test_loader_shards_are_disjoint_and_cover_the_epoch():
    n = 1003
    images, labels = torch.arange(n).float().view(n, 1, 1, 1), torch.arange(n)
    shards = [InMemoryLoader(images, labels, 10, shuffle=True, seed=3, rank=r, world_size=2, drop_last=True) for r in (0, 1)]
    for loader in shards:
        loader.set_epoch(2)
    seen = [set(loader.indices().tolist()) for loader in shards]
    assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(n))
    assert len(shards[0]) == len(shards[1]) == n // 2 // 10
    first_epoch = shards[0].indices()
    shards[0].set_epoch(3)
    assert not torch.equal(first_epoch, shards[0].indices()), "each epoch is reshuffled"


def test_loader_resumes_mid_epoch_with_the_same_batches():
    images, labels = torch.randn(100, 1, 2, 2), torch.arange(100)
    loader = InMemoryLoader(images, labels, 8, shuffle=True, seed=0, drop_last=True)
    loader.set_epoch(4)
    full = [y for _, y in loader]
    loader.set_epoch(4, start_batch=5)
    assert [y.tolist() for _, y in loader] == [y.tolist() for y in full[5:]]


@pytest.mark.parametrize("rank, world_size, start_batch", [(0, 1, 0), (1, 2, 2)])
def test_flips_leave_the_unflipped_classes_as_they_are(rank, world_size, start_batch):
    n = 800
    images, labels = torch.randn(n, 1, 3, 3), torch.arange(n) % 10

    def epoch(**kwargs):
        loader = InMemoryLoader(images, labels, 50, shuffle=True, seed=2, rank=rank, world_size=world_size, hflip=True, **kwargs)
        loader.set_epoch(3, start_batch)
        order = loader.indices()[start_batch * 50 :]
        return images[order], torch.cat([x for x, _ in loader]), labels[order]

    originals, default, classes = epoch()
    shoes_kept = epoch(unflipped_classes=FOOTWEAR)[1]
    is_footwear = torch.isin(classes, torch.tensor(FOOTWEAR))
    mirrored = (default == originals.flip(3)).all((1, 2, 3)) & ~(default == originals).all((1, 2, 3))
    for c in range(10):
        assert 0.2 < mirrored[classes == c].float().mean() < 0.8, f"about half of class {c} mirrored by default"
    assert torch.equal(shoes_kept[is_footwear], originals[is_footwear]), "no shoe mirrored"
    assert torch.equal(shoes_kept[~is_footwear], default[~is_footwear]), "the other classes drawn as before"


def test_a_shifted_batch_is_filled_with_the_black_of_a_normalised_tile():
    tiles = normalise(torch.full((2, 4, 4), 200, dtype=torch.uint8))
    shifted = shift_batch(tiles, 1, 1, 0)  # one pixel to the right, none down
    assert torch.equal(shifted[:, :, :, 0], torch.full((2, 1, 4), BLACK)), "the column moved in is black, to the last bit"
    assert torch.equal(shifted[:, :, :, 1:], tiles[:, :, :, :3])
