"""Build hook: ship ``experiments/`` (the named configs users read and edit) as the package data of
``snn_delays.experiments``, so an installed wheel finds them; the rest of the metadata is in pyproject.toml."""

from setuptools import find_packages, setup

setup(
    packages=find_packages(include=["snn_delays", "snn_delays.*", "neuromorphic_export", "neuromorphic_export.*"])
    + ["snn_delays.experiments"],
    package_dir={"snn_delays.experiments": "experiments"},
)
