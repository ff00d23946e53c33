"""Run metrics from the Parquet tables ``videos``, ``segments`` and ``runs``: what notebooks/metrics.ipynb shows.

Pure pandas functions on the tables as ``anonray.records.tables.read_table`` returns them, plus matplotlib figures
built without pyplot (``matplotlib.figure.Figure``: no GUI backend, safe headless). Nothing here returns or
prints a path, an error message or a host name: videos are named by their 12-digit ``video_id`` only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anonray.records.tables import read_table

CLASSES = ("face", "plate")
STAGES = ("ingest", "decode", "detect", "track", "encode", "qa")
"""Stages in ``time per stage``; ``encode`` there is ``seconds_encode - seconds_qa`` (the table's encode
includes the QA pass over the output), so the stages add up to the work done on a file."""

RUN_DIR_ENV = "ANONRAY_RUN_DIR"
RUN_ID_ENV = "ANONRAY_RUN_ID"
DEFAULT_RUN_DIR = "demo-out"
"""Where ``make demo`` writes its run, relative to the repository root."""


def resolve_state_dir(run_dir: str | os.PathLike | None = None, default: str | os.PathLike | None = None) -> Path:
    """The ``_anonray`` folder of a run's output DIR: ``run_dir``, else ``$ANONRAY_RUN_DIR``, else ``default``
    (default ``demo-out``, relative to the repository root). Accepts DIR or DIR/_anonray. The error does not
    name the path (it may name a case)."""
    chosen = run_dir or os.environ.get(RUN_DIR_ENV)
    if chosen:
        path = Path(chosen).expanduser()
    else:
        path = Path(default or DEFAULT_RUN_DIR).expanduser()
        if not path.is_absolute():
            path = Path(__file__).resolve().parents[2] / path
    if path.name != "_anonray" and (path / "_anonray").is_dir():
        path = path / "_anonray"
    if not path.is_dir():
        raise FileNotFoundError(f"no anonray run folder: set {RUN_DIR_ENV} to an anonray output DIR")
    return path


def load_tables(state_dir: Path) -> dict[str, pd.DataFrame]:
    """``videos``, ``segments`` and ``runs`` of every run in ``state_dir`` as DataFrames.

    A run still going on has one ``videos`` part per finished file; while it is being merged a row may be in
    two parts, so ``videos`` keeps one row per (run_id, video_id).
    """
    tables = {name: read_table(Path(state_dir), name).to_pandas() for name in ("videos", "segments", "runs")}
    videos = tables["videos"]
    if len(videos):
        videos = videos.sort_values("finished_utc", na_position="first")
        tables["videos"] = videos.drop_duplicates(["run_id", "video_id"], keep="last").reset_index(drop=True)
    return tables


def select_run(tables: dict[str, pd.DataFrame], run_id: str | None = None) -> tuple[str, dict[str, pd.DataFrame]]:
    """The rows of one run: ``run_id``, else the latest run (run ids start with their UTC start time, and a run
    still going on has ``videos`` rows but no ``runs`` row yet)."""
    if not run_id:
        ids = set(tables["runs"].run_id) | set(tables["videos"].run_id)
        if not ids:
            raise ValueError("the tables hold no run")
        run_id = max(ids)
    picked = {name: df[df.run_id == run_id].reset_index(drop=True) for name, df in tables.items()}
    if picked["runs"].empty and picked["videos"].empty:
        raise ValueError(f"no run {run_id} in the tables")
    return run_id, picked


def _worked(videos: pd.DataFrame) -> pd.DataFrame:
    """Rows that did work in their run (``skipped`` rows point to an earlier run's output)."""
    return videos[videos.status != "skipped"]


def _ok(videos: pd.DataFrame) -> pd.DataFrame:
    return videos[videos.status == "ok"]


def throughput(videos: pd.DataFrame, freq: str = "1min") -> pd.DataFrame:
    """Frames, footage seconds and files finished per ``freq`` interval, by each ``ok`` row's ``finished_utc``
    (a file counts in full in the interval it finished in); intervals without a finished file are 0.

    Columns ``videos``, ``frames``, ``footage_seconds``; index: interval start (UTC).
    """
    ok = _ok(videos).dropna(subset=["finished_utc"])
    if ok.empty:
        return pd.DataFrame({"videos": [], "frames": [], "footage_seconds": []},
                            index=pd.DatetimeIndex([], tz="UTC", name="interval"))
    frame = pd.DataFrame({
        "videos": 1,
        "frames": ok.frames_out.fillna(0).astype("int64").to_numpy(),
        "footage_seconds": ok.duration_seconds.fillna(0.0).astype("float64").to_numpy(),
    }, index=pd.DatetimeIndex(ok.finished_utc.to_numpy(), name="interval"))
    if frame.index.tz is None:
        frame.index = frame.index.tz_localize("UTC")
    out = frame.resample(freq).sum()
    out.index.name = "interval"
    return out.astype({"videos": "int64", "frames": "int64", "footage_seconds": "float64"})


def stage_seconds(videos: pd.DataFrame) -> pd.DataFrame:
    """Seconds spent per stage over the rows that did work (``ok`` and ``failed``; decode and detect are summed
    over segments in the table already). Columns ``seconds``, ``share`` (of the total) and
    ``per_footage_second`` (stage seconds per second of ``ok`` footage; NaN without footage)."""
    worked = _worked(videos)
    encode = worked.seconds_encode.fillna(0.0) - worked.seconds_qa.fillna(0.0)
    seconds = {
        "ingest": worked.seconds_ingest.fillna(0.0).sum(),
        "decode": worked.seconds_decode.fillna(0.0).sum(),
        "detect": worked.seconds_detect.fillna(0.0).sum(),
        "track": worked.seconds_track.fillna(0.0).sum(),
        "encode": encode.clip(lower=0.0).sum(),
        "qa": worked.seconds_qa.fillna(0.0).sum(),
    }
    out = pd.DataFrame({"seconds": pd.Series(seconds, dtype="float64")})
    out.index.name = "stage"
    total = out.seconds.sum()
    out["share"] = out.seconds / total if total > 0 else 0.0
    footage = float(_ok(videos).duration_seconds.fillna(0.0).sum())
    out["per_footage_second"] = out.seconds / footage if footage > 0 else float("nan")
    return out


def failure_counts(videos: pd.DataFrame) -> pd.Series:
    """Failed files per ``error_class``, most frequent first (ties by name); an empty Series when none failed."""
    failed = videos[videos.status == "failed"]
    classes = failed.error_class.fillna("unknown").astype(str)
    counts = classes.value_counts()
    if counts.empty:
        return pd.Series([], dtype="int64", name="failed_files", index=pd.Index([], name="error_class"))
    frame = counts.rename_axis("error_class").reset_index(name="failed_files")
    frame = frame.sort_values(["failed_files", "error_class"], ascending=[False, True])
    return frame.set_index("error_class").failed_files.astype("int64")


def failed_videos(videos: pd.DataFrame) -> pd.DataFrame:
    """The failed files by ``video_id`` and ``error_class`` only (the message and path may name a case)."""
    failed = videos[videos.status == "failed"].sort_values(["error_class", "video_id"])
    return failed[["video_id", "error_class", "retries"]].set_index("video_id")


def detections_per_footage_hour(videos: pd.DataFrame) -> pd.DataFrame:
    """Raw detections and tracks per class, per hour of ``ok`` footage. Index: class; columns ``detections``,
    ``tracks``, ``footage_hours``, ``detections_per_hour``, ``tracks_per_hour`` (NaN without footage)."""
    ok = _ok(videos)
    hours = float(ok.duration_seconds.fillna(0.0).sum()) / 3600.0
    rows = []
    for cls in CLASSES:
        detections = int(ok[f"detections_{cls}"].fillna(0).sum())
        tracks = int(ok[f"tracks_{cls}"].fillna(0).sum())
        rows.append({"class": cls, "detections": detections, "tracks": tracks, "footage_hours": hours,
                     "detections_per_hour": detections / hours if hours > 0 else float("nan"),
                     "tracks_per_hour": tracks / hours if hours > 0 else float("nan")})
    return pd.DataFrame(rows).set_index("class")


def detections_per_video(videos: pd.DataFrame, top: int = 20) -> pd.DataFrame:
    """Detections per hour of footage for each ``ok`` video, by ``video_id`` (no path), the ``top`` highest
    (by all classes together) first."""
    ok = _ok(videos)
    hours = ok.duration_seconds.fillna(0.0).to_numpy() / 3600.0
    out = pd.DataFrame({"video_id": ok.video_id.to_numpy(), "footage_seconds": hours * 3600.0})
    for cls in CLASSES:
        counts = ok[f"detections_{cls}"].fillna(0).to_numpy(dtype="float64")
        out[f"detections_per_hour_{cls}"] = [c / h if h > 0 else float("nan") for c, h in zip(counts, hours,
                                                                                               strict=True)]
    rate_columns = [f"detections_per_hour_{cls}" for cls in CLASSES]
    out["_all"] = out[rate_columns].fillna(0.0).sum(axis=1)
    out = out.sort_values(["_all", "video_id"], ascending=[False, True]).drop(columns="_all")
    return out.head(top).set_index("video_id")


def gpus_per_detector(config_json: str | None) -> float:
    """``resources.gpus_per_detector`` from a ``runs.config_json`` (0.0 when absent)."""
    if not config_json:
        return 0.0
    try:
        return float(json.loads(config_json).get("resources", {}).get("gpus_per_detector", 0.0) or 0.0)
    except (ValueError, AttributeError, TypeError):
        return 0.0


def gpu_hours(runs: pd.DataFrame, videos: pd.DataFrame) -> dict[str, Any]:
    """GPU-hours spent and GPU-hours per 100 h of footage, two ways:

    - ``reserved``: sum over runs of ``cluster_gpus x wall_seconds / 3600`` (the GPUs the cluster held for the
      whole run: the number for capacity planning);
    - ``busy``: ``gpus_per_detector x sum(videos.seconds_detect) / 3600`` (each detection actor's GPU share for
      the time it detected; a lower bound, idle GPU time excluded), 0 when the cluster had no GPU.

    Per 100 h of footage: ``GPU-hours / (runs.footage_seconds / 3600) x 100``. On a CPU-only run
    (``cluster_gpus == 0``) both are 0 and ``note`` says so. ``cluster_gpus`` counts the GPUs Ray reported,
    logical ones included.
    """
    footage_hours = float(runs.footage_seconds.fillna(0.0).sum()) / 3600.0
    gpus = runs.cluster_gpus.fillna(0.0).astype("float64")
    wall = runs.wall_seconds.fillna(0.0).astype("float64")
    reserved = float((gpus * wall).sum()) / 3600.0
    busy = 0.0
    for _, row in runs.iterrows():
        if (row.cluster_gpus or 0.0) > 0:
            rows = _worked(videos[videos.run_id == row.run_id])
            busy += gpus_per_detector(row.config_json) * float(rows.seconds_detect.fillna(0.0).sum()) / 3600.0
    note = ""
    if runs.empty:
        note = "no runs row yet (the run is still going on): GPU-hours need its wall time"
    elif float(gpus.max()) == 0.0:
        note = "CPU-only run: the cluster had no GPU, so 0 GPU-hours"

    def per_100h(value: float) -> float:
        return value / footage_hours * 100.0 if footage_hours > 0 else float("nan")

    return {"cluster_gpus": float(gpus.max()) if len(gpus) else 0.0, "wall_hours": float(wall.sum()) / 3600.0,
            "footage_hours": footage_hours, "gpu_hours_reserved": reserved, "gpu_hours_busy": busy,
            "gpu_hours_per_100h_reserved": per_100h(reserved), "gpu_hours_per_100h_busy": per_100h(busy),
            "note": note}


def fidelity_per_video(videos: pd.DataFrame) -> pd.DataFrame:
    """Per ok file: video bitrate in and out (bit/s) and their ratio, PSNR outside the masks (dB), latency from
    the run's start to the output (s). Indexed by video id; columns a table of an older version lacks are NaN."""
    ok = _ok(videos)
    frame = pd.DataFrame(index=pd.Index(ok.video_id, name="video_id"))
    for column in ("video_bitrate_in", "video_bitrate_out", "psnr_outside_masks", "latency_seconds"):
        frame[column] = ok[column].astype(float).to_numpy() if column in ok else np.nan
    frame.insert(2, "bitrate_ratio", frame.video_bitrate_out / frame.video_bitrate_in)
    return frame


def run_summary(runs: pd.DataFrame, videos: pd.DataFrame) -> pd.Series:
    """Headline numbers of a run (or several): outcome counts, footage, wall time, footage hours per wall hour,
    failure rate, latency, output bitrate against input, GPU-hours per 100 h of footage. No path, no host name."""
    counts = videos.status.value_counts()
    per_video = fidelity_per_video(videos)
    worked = int(counts.get("ok", 0)) + int(counts.get("failed", 0))
    footage = float(_ok(videos).duration_seconds.fillna(0.0).sum())
    wall = float(runs.wall_seconds.fillna(0.0).sum()) if len(runs) else float("nan")
    gpu = gpu_hours(runs, videos)
    return pd.Series({
        "videos_ok": int(counts.get("ok", 0)), "videos_failed": int(counts.get("failed", 0)),
        "videos_skipped": int(counts.get("skipped", 0)),
        "frames": int(_ok(videos).frames_out.fillna(0).sum()), "footage_hours": footage / 3600.0,
        "wall_hours": wall / 3600.0,
        "footage_hours_per_wall_hour": footage / wall if wall and wall > 0 else float("nan"),
        "frames_per_wall_second": float(_ok(videos).frames_out.fillna(0).sum()) / wall if wall and wall > 0
        else float("nan"),
        "failure_rate": int(counts.get("failed", 0)) / worked if worked else float("nan"),
        "latency_median_seconds": float(per_video.latency_seconds.median()),
        "bitrate_ratio_max": float(per_video.bitrate_ratio.max()),
        "psnr_outside_masks_min": float(per_video.psnr_outside_masks.min()),
        "gpu_hours_per_100h_reserved": gpu["gpu_hours_per_100h_reserved"],
        "gpu_hours_per_100h_busy": gpu["gpu_hours_per_100h_busy"],
    }, dtype="object", name="value")


# ---------------------------------------------------------------------------------------------- figures


def _figure(width: float = 7.0, height: float = 3.5):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.add_subplot()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_throughput(per_interval: pd.DataFrame, freq: str = "1min"):
    """Frames (bars) and footage seconds (line, right axis) finished per interval."""
    fig, ax = _figure()
    ax.set_title(f"Throughput: finished per {freq} (UTC)")
    if per_interval.empty:
        _empty(ax, "no finished video")
        return fig
    x = per_interval.index.tz_convert("UTC").tz_localize(None)
    width = pd.to_timedelta(pd.tseries.frequencies.to_offset(freq)).total_seconds() / 86400.0 * 0.8
    ax.bar(x, per_interval.frames, width=width, align="edge", label="frames", color="tab:blue")
    ax.set_ylabel("frames")
    right = ax.twinx()
    right.plot(x, per_interval.footage_seconds, "o-", color="tab:orange", label="footage seconds")
    right.set_ylabel("footage seconds")
    right.set_ylim(bottom=0)
    fig.autofmt_xdate()
    fig.legend(loc="outside upper right", ncols=2)
    return fig


def plot_stage_seconds(stages: pd.DataFrame):
    fig, ax = _figure()
    ax.set_title("Time per stage (seconds, summed over files)")
    if float(stages.seconds.sum()) <= 0:
        _empty(ax, "no stage time recorded")
        return fig
    bars = ax.bar(stages.index, stages.seconds, color="tab:green")
    ax.bar_label(bars, labels=[f"{s:.0%}" for s in stages.share])
    ax.margins(y=0.12)
    ax.set_ylabel("seconds")
    return fig


def plot_failures(counts: pd.Series):
    fig, ax = _figure(7.0, max(2.0, 0.4 * len(counts) + 1.0))
    ax.set_title("Failure reasons (files per error_class)")
    if counts.empty:
        _empty(ax, "no failed file")
        return fig
    ordered = counts.iloc[::-1]
    bars = ax.barh(ordered.index, ordered.values, color="tab:red")
    ax.bar_label(bars)
    ax.set_xlabel("failed files")
    return fig


def plot_detections(per_hour: pd.DataFrame):
    fig, ax = _figure(6.0, 3.5)
    ax.set_title("Detections and tracks per hour of footage")
    if per_hour.detections_per_hour.isna().all():
        _empty(ax, "no ok footage")
        return fig
    x = range(len(per_hour))
    ax.bar([i - 0.2 for i in x], per_hour.detections_per_hour, width=0.4, label="detections")
    ax.bar([i + 0.2 for i in x], per_hour.tracks_per_hour, width=0.4, label="tracks")
    ax.set_xticks(list(x), per_hour.index)
    ax.set_ylabel("per footage hour")
    ax.legend()
    return fig


def plot_gpu_hours(gpu: dict[str, Any]):
    fig, ax = _figure(6.0, 3.0)
    ax.set_title("GPU-hours per 100 h of footage")
    if gpu["note"] and gpu["gpu_hours_reserved"] == 0.0:
        _empty(ax, gpu["note"])
        return fig
    values = [gpu["gpu_hours_per_100h_reserved"], gpu["gpu_hours_per_100h_busy"]]
    bars = ax.bar(["reserved\n(GPUs x wall)", "busy\n(GPU share x detect)"], values, color="tab:purple")
    ax.bar_label(bars, fmt="%.4g")
    ax.margins(y=0.12)
    ax.set_ylabel("GPU-hours / 100 h footage")
    return fig


def plot_fidelity(per_video: pd.DataFrame, max_ratio: float = 1.25, min_psnr: float = 35.0):
    """Output bitrate / input bitrate against PSNR outside the masks, one point per file, with the default
    limits (encoder.max_bitrate_ratio, qa.min_psnr_outside_masks) drawn; and the files' latency."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.0, 3.5), layout="constrained")
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    left.set_title("Output against input, per file")
    right.set_title("Latency: run start to output")
    shown = per_video.dropna(subset=["bitrate_ratio", "psnr_outside_masks"])
    if shown.empty:
        _empty(left, "no file with both figures")
    else:
        left.scatter(shown.bitrate_ratio, shown.psnr_outside_masks, color="tab:blue")
        left.axvline(max_ratio, color="tab:red", linestyle="--", label=f"bitrate cap {max_ratio:g}x")
        left.axhline(min_psnr, color="tab:orange", linestyle="--", label=f"low_fidelity under {min_psnr:g} dB")
        left.set_xlabel("video bitrate out / in")
        left.set_ylabel("PSNR outside the masks (dB)")
        left.legend(loc="lower right")
    latency = per_video.latency_seconds.dropna()
    if latency.empty:
        _empty(right, "no latency recorded")
    else:
        right.hist(latency, bins=min(30, max(5, len(latency))), color="tab:green")
        right.set_xlabel("seconds")
        right.set_ylabel("files")
    return fig
