"""Command-line entry points: `inf30` (dataset toolkit) and `infmae` (model).

The CLI is thin: every command parses its options and calls one library function. Errors that a user can
fix are printed as one line (``error: ...``) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

__version__ = "0.1.0"

inf30_app = typer.Typer(
    name="inf30",
    help=(
        "Build the Inf30 infrared pre-training dataset from folders, archives, videos and remote sources.\n\n"
        "Examples:\n\n"
        "  inf30 sample demo-src\n\n"
        "  inf30 build demo-src/ --out inf30-demo\n\n"
        "  inf30 build --config sources.yaml --out inf30 --shard 0/8"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
infmae_app = typer.Typer(
    name="infmae",
    help=(
        "Pre-train and use the InfMAE infrared foundation model.\n\n"
        "Examples:\n\n"
        "  infmae pretrain --data inf30-demo --out runs/tiny --preset infmae_tiny --epochs 2\n\n"
        "  infmae visualize runs/tiny/checkpoint-latest frame.png --out recon.png"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


class UserError(Exception):
    """An error the user can fix; printed as one line by :func:`run_cli`."""


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    """Call a library function, turning expected user errors into one-line messages."""
    try:
        return fn(*args, **kwargs)
    except (UserError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError, ValueError) as exc:
        fail(str(exc) or exc.__class__.__name__)
    except KeyboardInterrupt:
        fail("interrupted; re-run the same command to resume", code=130)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"infmae-toolkit {__version__}")
        raise typer.Exit()


@inf30_app.callback()
def _inf30_main(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True)] = False,
) -> None:
    """Inf30 dataset toolkit."""


@infmae_app.callback()
def _infmae_main(
    version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True)] = False,
) -> None:
    """InfMAE model toolkit."""


# ----------------------------------------------------------------------------------------------- inf30
@inf30_app.command("sample")
def sample_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the sample source tree into.")],
    seed: Annotated[int, typer.Option(help="Random seed (the tree is deterministic for a seed).")] = 0,
) -> None:
    """Write a small deterministic sample source tree (synthetic thermal scenes, a video, an archive,
    planted duplicates, tiny and broken files).

    Example: inf30 sample demo-src
    """
    from inf30.sample import write_sample

    info = _guard(write_sample, out, seed=seed)
    typer.echo(f"wrote {info['files']} files to {out}")


@inf30_app.command("build")
def build_cmd(
    sources: Annotated[list[str] | None, typer.Argument(help="Folders, globs, archives, videos (or URLs).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder.")] = Path("inf30-out"),
    config: Annotated[Path | None, typer.Option(help="YAML file listing sources (see README).")] = None,
    workers: Annotated[int, typer.Option(help="Decode processes (0 = all cores).")] = 0,
    video_every: Annotated[float, typer.Option(help="Seconds between sampled video frames.")] = 1.0,
    min_size: Annotated[int, typer.Option(help="Drop images whose width AND height are below this.")] = 20,
    min_side: Annotated[int, typer.Option(help="Also drop images whose shorter side is below this (0 = off).")] = 0,
    agc: Annotated[str, typer.Option(help="Percentiles for 16-bit/float gain control, LOW,HIGH.")] = "1,99",
    max_pixels: Annotated[int, typer.Option(help="Decompression-bomb limit in pixels.")] = 300_000_000,
    shard: Annotated[str | None, typer.Option(help="Build only shard K of N (K from 0 to N-1), as K/N.")] = None,
    drop_pseudocolor: Annotated[bool, typer.Option(help="Drop pseudo-coloured / visible images.")] = False,
    dedupe: Annotated[bool, typer.Option("--dedupe/--no-dedupe", help="Run near-duplicate removal after the build.")] = True,
    hashes: Annotated[str, typer.Option(help="Perceptual hashes to store, comma-separated (phash,dhash,whash,ahash).")] = "phash",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Build a clean, normalized, fully accounted image set with a manifest.

    Example: inf30 build data/flir/ videos/*.mp4 archive.tar.gz --out inf30
    """
    from inf30.build import BuildOptions, build
    from inf30.sources import load_sources

    if not sources and config is None:
        fail("give at least one SOURCE or --config sources.yaml")
    try:
        lo, hi = (float(x) for x in agc.split(","))
    except ValueError:
        fail(f"--agc must be two numbers LOW,HIGH, got {agc!r}")
    srcs = _guard(load_sources, list(sources or []), config=config, out_dir=out)
    opts = BuildOptions(
        workers=workers,
        video_every=video_every,
        min_size=min_size,
        min_side=min_side,
        agc_percentiles=(lo, hi),
        max_pixels=max_pixels,
        shard=shard,
        drop_pseudocolor=drop_pseudocolor,
        dedupe=dedupe,
        hashes=tuple(h.strip() for h in hashes.split(",") if h.strip()),
        progress=not quiet,
    )
    summary = _guard(build, srcs, out, opts)
    typer.echo(summary.table())


@inf30_app.command("merge")
def merge_cmd(
    dirs: Annotated[list[Path], typer.Argument(help="Shard output folders from `inf30 build --shard`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged dataset folder.")],
    dedupe: Annotated[bool, typer.Option("--dedupe/--no-dedupe", help="Run near-duplicate removal across shards.")] = True,
) -> None:
    """Combine shard outputs into one dataset (cross-shard exact duplicates dropped).

    Example: inf30 merge shards/0 shards/1 shards/2 --out inf30
    """
    from inf30.merge import merge

    summary = _guard(merge, dirs, out, dedupe=dedupe)
    typer.echo(summary.table())


# --- inf30 scrape (issue 3) ---

# --- inf30 dedupe (issue 4) ---

# --- inf30 entropy / report (issue 5) ---

# --- inf30 publish (issue 6) ---


# ---------------------------------------------------------------------------------------------- infmae
# --- infmae pretrain / visualize / export (issue 8) ---


def main() -> None:  # pragma: no cover - convenience for `python cli.py`
    prog = Path(sys.argv[0]).name
    (infmae_app if prog.startswith("infmae") else inf30_app)()


if __name__ == "__main__":  # pragma: no cover
    main()
