"""Names that become paths: any text becomes one harmless path component, and two runs started in
the same second get different directories."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hypothesis import given, strategies as st
from omegaconf import OmegaConf

from rsdet.engine.names import register_resolvers, safe_name
from rsdet.paths import conf_dir


@given(st.text(max_size=200))
def test_any_text_becomes_one_component_inside_its_folder(text):
    name = safe_name(text)
    assert name and len(name) <= 80
    assert "/" not in name and "\\" not in name and not name.startswith((".", "-"))
    assert all(ch.isascii() and ch.isprintable() and ch != " " for ch in name)
    root = Path("/outputs/runs")
    assert (root / name).resolve().parent == root


def test_choices_that_climb_out_are_flattened():
    assert safe_name("../../x") == "x"
    assert safe_name("../loss/rs") == "loss-rs"
    assert safe_name("rs") == "rs" and safe_name("loss=ce,rs") == "loss=ce,rs"


def _run_dir(loss="rs"):
    """hydra.run.dir of a freshly composed `rsdet train loss=...`, with the clock stopped."""
    from hydra.core.hydra_config import HydraConfig

    with initialize_config_dir(str(conf_dir()), version_base="1.3"):
        cfg = compose("train", overrides=[f"loss={loss}"], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)  # what ${hydra:runtime.choices.loss} reads
    OmegaConf.register_new_resolver("now", lambda pattern: "frozen", replace=True)  # both in the same second
    try:
        return OmegaConf.select(cfg, "hydra.run.dir")
    finally:
        from hydra.core.utils import setup_globals

        HydraConfig.instance().cfg = None
        setup_globals()  # Hydra's own `now` again


def test_two_runs_started_in_the_same_second_get_their_own_directories():
    register_resolvers()
    first, second = _run_dir(), _run_dir()
    assert first.startswith("outputs/runs/frozen/frozen_rs_") and second.startswith("outputs/runs/frozen/frozen_rs_")
    assert first != second


def test_a_loss_choice_that_climbs_out_of_its_group_stays_inside_outputs():
    register_resolvers()
    run_dir = _run_dir("../loss/rs")  # composes (conf/loss/../loss/rs.yaml exists)
    assert run_dir.startswith("outputs/runs/frozen/frozen_loss-rs_") and ".." not in run_dir
