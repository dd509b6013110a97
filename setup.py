"""Packaging glue that pyproject.toml cannot express: ship the top-level ``conf/`` as ``rsdet/conf``.

``conf/`` stays the one copy of the Hydra configs in the repository; the wheel maps it to the
``rsdet.conf`` package folder so that an installed rsdet finds its configs next to its code
(:func:`rsdet.paths.conf_dir`). ``rsdet/report/paper_values.json`` (the supplementary's published
numbers, docs/paper.md) ships as package data of ``rsdet.report``. Everything else lives in pyproject.toml.
"""

from setuptools import find_packages, setup

setup(
    packages=[*find_packages(include=["rsdet", "rsdet.*"]), "rsdet.conf"],
    package_dir={"rsdet.conf": "conf"},
    package_data={"rsdet.conf": ["*.yaml", "**/*.yaml"], "rsdet.report": ["paper_values.json"]},
    include_package_data=False,
)
