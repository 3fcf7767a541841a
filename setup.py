"""Packaging: the metadata is in setup.cfg; this file only puts the shipped weights in the package.

The weights live in the top-level ``saved_models/`` (one folder per model, beside
``saved_models/publish.py`` that writes them). Building the package (a wheel, or any build of
``build_py``) copies every model folder that has a ``card.json`` into ``kfusion/shipped_models/``,
where :mod:`kfusion.saved_models` finds them once installed without a checkout.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = Path(__file__).resolve().parent / "saved_models"
PACKAGED = ("kfusion", "shipped_models")  # kfusion.saved_models.PACKAGED_FOLDER
FILES = ("*.keras", "*.json", "*.md")


class BuildPyWithModels(build_py):
    def run(self):
        super().run()
        for folder in sorted(p for p in SOURCE.iterdir() if (p / "card.json").is_file()):
            target = Path(self.build_lib, *PACKAGED, folder.name)
            self.mkpath(str(target))
            for pattern in FILES:
                for file in sorted(folder.glob(pattern)):
                    self.copy_file(str(file), str(target / file.name))


setup(cmdclass={"build_py": BuildPyWithModels})
