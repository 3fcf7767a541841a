"""Run folders: every long run writes its exact config, package versions, a data fingerprint
and its results here, and a re-run of the same config resumes instead of redoing work."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from kfusion.errors import ConfigError

_PACKAGES = ("kfusion", "tensorflow", "keras", "keras-tuner", "numpy", "scipy", "pandas",
             "librosa", "soundfile", "scikit-learn", "ai-edge-litert")


@functools.cache
def source_fingerprint() -> str:
    """SHA-256 (16 hex digits) of kfusion's own Python files: an editable install's version
    number does not change with its code, this does."""
    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def package_versions() -> dict:
    """Versions of Python and of the packages results depend on (no heavy imports), and
    :func:`source_fingerprint` as ``kfusion_source``."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    versions["kfusion_source"] = source_fingerprint()
    return versions


def write_json_atomic(path: str | Path, data) -> None:
    """Write JSON so that a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    os.replace(tmp, path)


def _differences(old, new, where: str = "") -> list[str]:
    """``key: stored -> now`` for every setting that differs between two JSON configs."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new), key=str):
            name = f"{where}.{key}" if where else str(key)
            if key not in old:
                out.append(f"{name}: not set -> {json.dumps(new[key])}")
            elif key not in new:
                out.append(f"{name}: {json.dumps(old[key])} -> not set")
            else:
                out.extend(_differences(old[key], new[key], name))
        return out
    if old != new:
        def short(value):
            text = json.dumps(value)
            return text if len(text) <= 60 else text[:57] + "..."
        return [f"{where or 'config'}: {short(old)} -> {short(new)}"]
    return []


class RunFolder:
    """A folder holding one run: ``config.json``, ``versions.json``, ``data.json`` and results.

    Opening an existing folder with a different config is refused, so finished results of one
    configuration are never mixed with another's.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def start(self, config: dict, data_fingerprint: str | None = None, command: str | None = None):
        """Create the folder (or resume it when ``config`` matches the stored one)."""
        self.path.mkdir(parents=True, exist_ok=True)
        stored = self.path / "config.json"
        if stored.is_file():
            previous = json.loads(stored.read_text())
            current = json.loads(json.dumps(config, sort_keys=True, default=str))
            if previous != current:
                changed = _differences(previous, current)
                shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
                raise ConfigError(
                    f"{stored}: this run folder holds a run with another configuration ({shown}); "
                    "use a new --out folder (or delete this one) to start a different run")
        else:
            write_json_atomic(stored, config)
        versions = package_versions()
        self._warn_other_code(versions)
        write_json_atomic(self.path / "versions.json", versions)
        write_json_atomic(self.path / "data.json", {
            "fingerprint": data_fingerprint,
            "command": command or " ".join(sys.argv),
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })
        return self

    def _warn_other_code(self, versions: dict) -> None:
        """Resuming records written by other code or packages keeps them (a crash resumes on
        the same code); say so on stderr, so a changed method is not read from old records."""
        path = self.path / "versions.json"
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            return
        changed = [f"{key} {previous[key]} -> {versions[key]}" for key in ("kfusion_source", *_PACKAGES)
                   if key in previous and previous[key] != versions[key]]
        if changed:
            print(f"[kfusion] note: {self.path} holds results written by other code ({'; '.join(changed)}); "
                  "finished records are kept, not recomputed: use a new folder to recompute them",
                  file=sys.stderr)

    def append_record(self, name: str, record: dict) -> None:
        """Append one JSON line to ``name`` and flush it to disk at once."""
        with open(self.path / name, "a") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read_records(self, name: str) -> list[dict]:
        """Records of ``name``; a last line cut by a crash is ignored (it is redone)."""
        path = self.path / name
        if not path.is_file():
            return []
        records = []
        for line in path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
        return records
