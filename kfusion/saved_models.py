"""The registry of shipped pretrained weights.

Each model is a folder ``<name>/`` holding the Keras file, ``card.json`` (name, kind, modality,
data, file, synthetic) and ``MODEL_CARD.md`` (data, config, commit, final loss, the command that
reproduces it, licence). The folders live in the repository's top-level ``saved_models/`` (with
``publish.py``, which writes them); building the package copies them into
``kfusion/shipped_models/`` (see ``setup.py``), so an installed wheel has them without a
checkout. ``$KFUSION_SAVED_MODELS`` points elsewhere.

>>> from kfusion import saved_models
>>> saved_models.list_models()          # doctest: +SKIP
>>> encoder = saved_models.load("sigrep-eda")   # keras.Model [B, 16, 1] -> [B, 40]
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from kfusion.errors import ConfigError, DataError

__all__ = ["root", "list_models", "path", "card", "load", "ENV_VAR"]

ENV_VAR = "KFUSION_SAVED_MODELS"
#: Where an installed package holds the models (``setup.py`` copies them there).
PACKAGED_FOLDER = "shipped_models"
#: Where a checkout holds them (beside the ``kfusion`` package).
CHECKOUT_FOLDER = "saved_models"
CARD_JSON = "card.json"
CARD_MD = "MODEL_CARD.md"


def root() -> Path:
    """The saved-models folder: ``$KFUSION_SAVED_MODELS``, else the installed package's
    ``kfusion/shipped_models``, else the checkout's ``saved_models`` (beside the package)."""
    configured = os.environ.get(ENV_VAR)
    if configured:
        return Path(configured).expanduser()
    package = Path(__file__).resolve().parent
    packaged = package / PACKAGED_FOLDER
    return packaged if packaged.is_dir() else package.parent / CHECKOUT_FOLDER


def _cards() -> dict[str, tuple[Path, dict]]:
    base = root()
    found = {}
    if not base.is_dir():
        return found
    for folder in sorted(p for p in base.iterdir() if p.is_dir()):
        card_path = folder / CARD_JSON
        if not card_path.is_file():
            continue
        try:
            info = json.loads(card_path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(card_path, "contents", "a JSON model card", f"unreadable ({err})") from None
        for key in ("kind", "file", "data"):
            if key not in info:
                raise DataError(card_path, key, "a value (model cards need kind, file, data)", "nothing")
        found[folder.name] = (folder, info)
    return found


def list_models() -> list[dict]:
    """One dict per shipped model: ``name``, ``kind``, ``modality``, ``data``, ``synthetic``,
    ``size`` (bytes of the Keras file), ``path`` and ``card`` (the MODEL_CARD.md path)."""
    rows = []
    for name, (folder, info) in _cards().items():
        file = folder / info["file"]
        rows.append({"name": name, "kind": info["kind"], "modality": info.get("modality"),
                     "data": info["data"], "synthetic": bool(info.get("synthetic", False)),
                     "size": file.stat().st_size if file.is_file() else 0,
                     "path": str(file), "card": str(folder / CARD_MD)})
    return rows


def _entry(name: str) -> tuple[Path, dict]:
    cards = _cards()
    if not isinstance(name, str) or name not in cards:
        known = ', '.join(cards) or f'(none found in {root()})'
        raise ConfigError(f"saved model {name!r}: expected one of {known}")
    return cards[name]


def path(name: str) -> Path:
    """The Keras file of saved model ``name``."""
    folder, info = _entry(name)
    file = folder / info["file"]
    if not file.is_file():
        raise DataError(file, "file", f"the weights of saved model {name!r}", "nothing")
    return file


def card(name: str) -> dict:
    """The ``card.json`` contents of ``name`` (config, commit, final loss, command, ...)."""
    return dict(_entry(name)[1])


def load(name: str, compile: bool = False):
    """The saved model ``name`` as a ``keras.Model`` (e.g. ``load("sigrep-eda")``)."""
    import keras

    import kfusion.models  # noqa: F401  (registers the custom layers)
    import kfusion.training.augment  # noqa: F401

    file = path(name)
    try:
        return keras.saving.load_model(file, compile=compile)
    except (ValueError, OSError, TypeError) as err:
        raise DataError(file, "contents", "a Keras model file", f"unreadable ({err})") from None
