"""The resumable training order: per-epoch permutations, per-sample augmentation seeds, positions."""

import pytest
import torch
from torch.utils.data import Dataset

from rsdet.engine.loader import ResumableBatchSampler, SeededSamples, TrainLoader
from rsdet.errors import TrainingError


class Draws(Dataset):
    """Item i is (i, a draw from torch's global RNG): what an augmentation would see."""

    def __len__(self):
        return 10

    def __getitem__(self, index):
        return index, torch.rand(()).item()


def collate(batch):
    return list(batch)


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch():
    sampler = ResumableBatchSampler(10, 3, seed=7, drop_last=True)
    assert sampler.batches_per_epoch == 3
    e0, e1 = sampler.epoch_batches(0), sampler.epoch_batches(1)
    assert [len(b) for b in e0] == [3, 3, 3]
    indices = [i for b in e0 for i, _ in b]
    assert len(set(indices)) == 9 and set(indices) <= set(range(10))
    assert e0 == ResumableBatchSampler(10, 3, seed=7, drop_last=True).epoch_batches(0)
    assert e0 != e1 and e0 != ResumableBatchSampler(10, 3, seed=8, drop_last=True).epoch_batches(0)
    assert len({s for b in e0 for _, s in b}) == 9  # one augmentation seed per sample
    keep_last = ResumableBatchSampler(10, 3, seed=7, drop_last=False)
    assert [len(b) for b in keep_last.epoch_batches(0)] == [3, 3, 3, 1]


def test_set_epoch_skips_the_consumed_batches():
    sampler = ResumableBatchSampler(10, 3, seed=1, drop_last=True)
    sampler.set_epoch(2, start_batch=1)
    assert list(sampler) == sampler.epoch_batches(2)[1:] and len(sampler) == 2
    with pytest.raises(TrainingError, match="outside epoch"):
        sampler.set_epoch(0, start_batch=4)


def test_augmentation_draws_depend_on_the_sample_seed_only_and_leave_the_global_rng_alone():
    samples = SeededSamples(Draws())
    torch.manual_seed(0)
    before = torch.get_rng_state()
    first = samples[(3, 123)]
    assert torch.equal(torch.get_rng_state(), before)  # the detector's RNG stream is untouched
    torch.rand(5)
    assert samples[(3, 123)] == first and samples[(3, 124)] != first


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_loader_restored_from_its_state_continues_with_the_same_batches(num_workers):
    def stream(loader, n):
        it = iter(loader)
        return [next(it) for _ in range(n)]

    full = stream(TrainLoader(Draws(), batch_size=3, seed=5, collate_fn=collate, num_workers=num_workers), 7)
    first = TrainLoader(Draws(), batch_size=3, seed=5, collate_fn=collate, num_workers=num_workers)
    head = stream(first, 4)  # epoch 0 (3 batches) and the first batch of epoch 1
    state = first.state_dict()
    assert (state["epoch"], state["batch"]) == (1, 1)
    second = TrainLoader(Draws(), batch_size=3, seed=5, collate_fn=collate, num_workers=num_workers)
    second.load_state_dict(state)
    assert head + stream(second, 3) == full
    assert [epoch for epoch, _ in full] == [0, 0, 0, 1, 1, 1, 2]


def test_a_state_at_the_end_of_an_epoch_continues_with_the_next_epoch():
    loader = TrainLoader(Draws(), batch_size=3, seed=5, collate_fn=collate)
    loader.load_state_dict({**loader.state_dict(), "epoch": 4, "batch": 3})
    assert (loader.epoch, loader.batch) == (5, 0)


def test_a_state_for_another_data_order_is_refused():
    loader = TrainLoader(Draws(), batch_size=3, seed=5, collate_fn=collate)
    with pytest.raises(TrainingError, match=r"batch_size 2 -> 3.*schedule.batch_size"):
        loader.load_state_dict({**loader.state_dict(), "batch_size": 2}, source="last.pt")


def test_repeat_factor_order_is_fitted_to_a_fixed_epoch_length_and_resumes_exactly():
    from rsdet.data.sampling import RepeatFactorSampler

    # image 0 is repeated 3.5x on average, the others once: ~12.5 images per epoch -> fixed at 12
    repeat = RepeatFactorSampler([3.5] + [1.0] * 9, seed=3)
    sampler = ResumableBatchSampler(12, 4, seed=3, drop_last=True, epoch_order=repeat.indices)
    assert sampler.batches_per_epoch == 3
    for epoch in range(4):
        realised = repeat.indices(epoch).tolist()
        order = [i for b in sampler.epoch_batches(epoch) for i, _ in b]
        assert len(order) == 12
        # the epoch's own repeat-factor list, cut or cyclically extended to 12
        assert order == (realised * 2)[:12]
        assert order.count(0) >= 3  # the rare image appears floor(3.5) or more times
    loader = TrainLoader(Draws(), batch_size=4, seed=3, collate_fn=collate, epoch_len=12,
                         epoch_order=repeat.indices)
    it = iter(loader)
    first = [next(it)[1] for _ in range(5)]
    state = loader.state_dict()
    again = TrainLoader(Draws(), batch_size=4, seed=3, collate_fn=collate, epoch_len=12,
                        epoch_order=repeat.indices)
    again.load_state_dict(state)
    rest = [next(iter(again))[1] for _ in range(1)]
    whole = iter(TrainLoader(Draws(), batch_size=4, seed=3, collate_fn=collate, epoch_len=12,
                             epoch_order=repeat.indices))
    uninterrupted = [next(whole)[1] for _ in range(6)]
    assert first + rest == uninterrupted
