"""lavis-evlgen: EVLGen (ACL 2024) as a plugin for Salesforce LAVIS.

Dependencies are pinned in requirements.lock and installed by run_scripts/setup_env.sh with
--no-deps (LAVIS 1.0.2's metadata pins transformers<4.27, which cannot be satisfied next to the
transformers this project needs), so install_requires names the packages without versions.
"""
from setuptools import find_packages, setup

setup(
    name="lavis-evlgen",
    version="0.1.0",
    description="EVLGen: TomeFormer single-stage visual-conditioned language generation for LAVIS",
    packages=find_packages(include=["lavis_evlgen", "lavis_evlgen.*"]),
    package_data={"lavis_evlgen": ["configs/*/*/*.yaml"]},
    python_requires=">=3.10",
    install_requires=[
        "salesforce-lavis",
        "torch",
        "transformers",
        "fairscale",
        "pycocoevalcap",
        "decord",
        "webdataset",
    ],
    license="BSD-3-Clause",
)
