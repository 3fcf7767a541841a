"""What a data source holds once windowed: ``kfusion data inspect SOURCE [--json]``.

:func:`inspect_source` builds (or loads from the cache) the windowed data set and returns a
JSON-able summary; :func:`format_inspection` renders it as plain-text tables.
"""

from __future__ import annotations

from kfusion.config import DataConfig
from kfusion.data.dataset import build_dataset
from kfusion.data.sources import source_modalities


def inspect_source(sources, config: DataConfig | None = None, cache_dir=None) -> dict:
    """Summary of ``sources`` under ``config``.

    ``config=None``: the modalities found in the sources' files (see
    :func:`~kfusion.data.dataset.build_dataset`).

    Keys: ``source`` (list of ``scheme:PATH``), ``modalities`` (used), ``modalities_found``
    (the modalities the files hold, by file name; what a source's format holds when its
    reader cannot scan), ``window`` (the window
    config), ``participants`` (list of dicts: ``id``, ``source``, ``status``, ``durations``
    modality -> seconds, ``windows`` total/kept/dropped-by-reason, ``labels`` target -> class
    -> count, ``notes``), ``windows`` and ``labels`` (totals), ``problems`` (id -> message),
    ``skipped`` (id -> reason), ``fingerprint`` and ``cache``.
    """
    dataset = build_dataset(sources, config, cache_dir=cache_dir)
    report = dataset.report
    found = source_modalities(sources)
    participants = []
    for pid, entry in report["participants"].items():
        participants.append({
            "id": pid,
            "source": entry.get("source", ""),
            "status": entry.get("status", ""),
            "durations": dict(entry.get("durations", {})),
            "windows": dict(entry.get("windows", {"total": 0, "kept": 0, "dropped": {}})),
            "labels": dict(entry.get("labels", {})),
            "notes": list(entry.get("notes", [])),
            "calibration": dataset.calibration.get(pid, {}),
        })
    return {
        "source": list(report["sources"]),
        "modalities": list(report["modalities"]),
        "modalities_found": list(found),
        "window": dict(report["window"]),
        "calibration": dataset.config.calibration.to_dict(),
        "participants": participants,
        "windows": dict(report["windows"]),
        "labels": dict(report["labels"]),
        "problems": dict(report["problems"]),
        "skipped": dict(report["skipped"]),
        "ignored_files": list(report.get("ignored_files", [])),
        "fingerprint": dataset.fingerprint,
        "cache": dict(report.get("cache", {})),
    }


def _table(headers: list[str], rows: list[list], indent: str = "  ") -> list[str]:
    """Plain-text table: text columns left-aligned, numbers right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], (int, float)) or r[i] in ("-", "")
                                  for r in rows) for i in range(len(headers))]

    def line(values):
        out = [v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)]
        return (indent + "  ".join(out)).rstrip()

    return [line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells]


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _modalities_note(used: list, found) -> str:
    """How the modalities used relate to those found in the files."""
    if found is None:
        return ""
    found = list(found)
    if used == found:
        return " (the ones found in the files; --modalities to choose others)"
    missing = [m for m in used if m not in found]
    note = f" (as requested; found in the files: {', '.join(found) or 'none'}"
    if missing:
        note += f"; no files of {', '.join(missing)}"
    return note + ")"


def format_inspection(info: dict) -> str:
    """Readable plain text of :func:`inspect_source`'s result."""
    lines = []
    sources = info.get("source", [])
    lines.append("Source: " + (", ".join(sources) if isinstance(sources, list) else str(sources)))
    window = info.get("window", {})
    if window:
        hop = window.get("seconds", 0) - window.get("overlap", 0)
        lines.append(f"Window: {window.get('seconds'):g} s, overlap {window.get('overlap'):g} s "
                     f"(hop {hop:g} s), missing modality: {window.get('missing')}")
    modalities = list(info.get("modalities", []))
    lines.append("Modalities: " + ", ".join(modalities) + _modalities_note(modalities, info.get("modalities_found")))
    calibration = info.get("calibration")
    if calibration:
        from kfusion.config import CalibrationConfig

        lines.append("Calibration: " + CalibrationConfig.from_dict(calibration).describe()
                     + " (per participant, from its own unlabelled signals)")
    participants = info.get("participants", [])
    totals = info.get("windows", {})
    n_ok = sum(1 for p in participants if p.get("status") == "ok")
    lines.append(f"Participants: {len(participants)} ({n_ok} with windows, "
                 f"{len(info.get('skipped', {}))} skipped, {len(info.get('problems', {}))} with problems)")
    padded = totals.get("padded")
    lines.append(f"Windows: {totals.get('kept', 0)} kept of {totals.get('total', 0)}"
                 + ("" if padded is None else f" ({padded} zero-padded: utterances shorter than a window; "
                    "each utterance is its own segment, no window straddles two)"))
    lines.append("")

    lines.append("Per participant (durations in seconds)")
    headers = ["participant"] + [f"{m} s" for m in modalities] + ["windows", "kept", "dropped", "status"]
    rows = []
    for p in participants:
        w = p.get("windows", {})
        dropped = sum(w.get("dropped", {}).values())
        rows.append([p["id"]] + [p["durations"].get(m, "-") for m in modalities]
                    + [w.get("total", 0), w.get("kept", 0), dropped, p.get("status", "")])
    lines.extend(_table(headers, rows))
    lines.append("")

    dropped = totals.get("dropped", {})
    lines.append("Dropped windows by reason" + ("" if dropped else ": none"))
    if dropped:
        lines.extend(_table(["reason", "windows"], sorted(([r, n] for r, n in dropped.items()),
                                                         key=lambda x: -x[1])))
    lines.append("")

    for target, counts in info.get("labels", {}).items():
        lines.append(f"Labels: {target}")
        names = list(counts)
        rows = [[p["id"]] + [p["labels"].get(target, {}).get(n, 0) for n in names]
                for p in participants if p.get("status") == "ok"]
        rows.append(["all"] + [counts[n] for n in names])
        lines.extend(_table(["participant"] + names, rows))
        lines.append("")
    if not info.get("labels"):
        lines.append("Labels: none")
        lines.append("")

    calibrated = [p for p in participants if p.get("calibration")]
    if calibrated:
        lines.append("Calibration statistics (mean / std per channel; speech: MFCC 0 only; seconds used; "
                     "windows whose levels standardise the window levels)")
        rows = []
        for p in calibrated:
            for m, stats in p["calibration"].items():
                mean = ", ".join(f"{v:.4g}" for v in stats["mean"][:3])
                std = ", ".join(f"{v:.4g}" for v in stats["std"][:3])
                if m == "speech":
                    mean, std = f"{stats['mean'][0]:.4g}", f"{stats['std'][0]:.4g}"
                rows.append([p["id"], m, stats["method"], mean, std, stats["seconds"], stats.get("windows", "-")])
        lines.extend(_table(["participant", "modality", "method", "mean", "std", "seconds", "level windows"], rows))
        lines.append("")

    problems = info.get("problems", {})
    if problems:
        lines.append("Problems")
        lines.extend(f"  {pid}: {msg}" for pid, msg in problems.items())
        lines.append("")
    ignored = info.get("ignored_files", [])
    if ignored:
        lines.append("Not read (not regular files)")
        lines.extend(f"  {entry}" for entry in ignored)
        lines.append("")
    notes = [(p["id"], n) for p in participants for n in p.get("notes", [])]
    if notes:
        lines.append("Notes")
        lines.extend(f"  {pid}: {note}" for pid, note in notes)
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
