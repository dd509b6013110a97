"""Where rsdet's Hydra configs are, whether it runs from a source checkout or an installed wheel."""

from __future__ import annotations

from pathlib import Path

from rsdet.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    """The folder holding ``train.yaml`` and the config groups.

    An installed wheel carries the configs as ``rsdet/conf`` (setup.py maps the repository's
    top-level ``conf/`` there); a source checkout or editable install uses ``conf/`` next to the
    package. The repository has only the top-level copy.
    """
    for candidate in (_PACKAGE / "conf", _PACKAGE.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise ConfigError(
        f"rsdet's configs (train.yaml) are neither in {_PACKAGE / 'conf'} (installed wheel) nor in "
        f"{_PACKAGE.parent / 'conf'} (source checkout); reinstall rsdet with `pip install .`"
    )
