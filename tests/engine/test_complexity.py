"""Parameter counts and FLOPs per image (rsdet/engine/complexity.py)."""

from omegaconf import OmegaConf
from torch import nn

from rsdet.engine.complexity import count_flops, input_size, model_complexity


class OneConv(nn.Module):
    """A 'detector' taking a list of images: one 3x3 conv, 3 -> 4 channels, padding 1."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def forward(self, images):
        return [{"out": self.conv(images[0][None])}]


def test_flops_count_two_per_multiply_add_and_the_mode_is_restored():
    model = OneConv().train()
    assert count_flops(model, 8, 10) == 2 * (4 * 3 * 3 * 3) * 8 * 10
    assert model.training


def test_complexity_record_and_the_input_size_of_a_config():
    cfg = OmegaConf.create({"detector": {"min_size": None, "max_size": None}, "dataset": {"min_size": 8, "max_size": 10}})
    assert input_size(cfg) == (8, 10)
    assert input_size(OmegaConf.create({"detector": {"min_size": 6}, "dataset": {"min_size": 8, "max_size": 4}})) == (6, 6)
    out = model_complexity(OneConv(), cfg)
    assert out == {"parameters": 4 * 27 + 4 + 6, "trainable_parameters": 4 * 27 + 4,
                   "flops_per_image": 2 * 108 * 80, "flops_input_size": [8, 10]}


def test_a_model_the_counter_cannot_run_keeps_its_parameter_counts(caplog):
    class Broken(OneConv):
        def forward(self, images):
            raise RuntimeError("no")

    out = model_complexity(Broken(), OmegaConf.create({"dataset": {"min_size": 8}}))
    assert "flops_per_image" not in out and out["parameters"] == 118
    assert "FLOPs not counted" in caplog.text
