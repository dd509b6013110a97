"""Training-loop pieces that need no training: stop signals and the checkpointed logging state."""

import os
import signal

import pytest
import torch

from rsdet.engine.trainer import Stopped, _LogState, _StopSignals, _gradients_finite


def test_a_signal_stops_at_the_next_check_and_a_second_one_at_once():
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with _StopSignals() as stop:
        stop.check()  # nothing received
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.received == signal.SIGTERM  # no exception inside the iteration
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
        with pytest.raises(KeyboardInterrupt):
            stop.check()
    assert {s: signal.getsignal(s) for s in before} == before


def test_the_logging_state_continues_the_next_history_row():
    first = _LogState()
    for value in (1.0, 2.0, 4.0):
        first.sums["loss/total"] += value
        first.count += 1
    first.zero_pos = 2
    assert first.row(3, 0, 0.1, 2)["loss/total"] == pytest.approx(7 / 3)
    first.sums["loss/total"] += 8.0
    first.count += 1
    state = first.state_dict(2)

    second = _LogState()
    second.load_state_dict(state)
    second.sums["loss/total"] += 16.0
    second.count += 1
    row = second.row(5, 0, 0.1, second.zero_pos)
    assert row["loss/total"] == 12.0 and row["batches_without_positives"] == 2
    assert second.train_seconds() >= state["train_seconds"]


def test_sigusr2_stops_like_sigterm_and_hands_the_scheduler_its_requeue_handler():
    calls = []

    def scheduler_handler(signum, frame):  # what submitit installs for SIGUSR2
        calls.append(signum)

    before = signal.signal(signal.SIGUSR2, scheduler_handler)
    try:
        with _StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGUSR2)
            assert calls == []  # training goes on to the iteration boundary
            with pytest.raises(Stopped) as info:
                stop.check(stop.code())
        assert info.value.requeue is scheduler_handler and info.value.signum == signal.SIGUSR2
        with _StopSignals() as stop:
            os.kill(os.getpid(), signal.SIGTERM)
            with pytest.raises(Stopped) as info:
                stop.check()
        assert info.value.requeue is None  # a plain stop: nothing to requeue
    finally:
        signal.signal(signal.SIGUSR2, before)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_the_gradient_check_finds_any_non_finite_value_and_skips_empty_gradients(bad):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    assert _gradients_finite(model) is None  # no gradients yet
    model(torch.ones(1, 3)).sum().backward()
    empty = torch.nn.Parameter(torch.zeros(0))
    empty.grad = torch.zeros(0)
    model.register_parameter("empty", empty)
    assert bool(_gradients_finite(model))
    model[1].weight.grad[1, 2] = bad
    assert not bool(_gradients_finite(model))
