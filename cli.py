"""Command-line entry points: `inf30` (dataset toolkit) and `infmae` (model).

The CLI is thin: every command parses its options and calls one library function. Errors that a user can
fix are printed as one line (``error: ...``) with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from inf30.errors import UserError

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


def fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _guard(fn, *args, **kwargs):
    """Call a library function, turning expected user errors into one-line messages."""
    try:
        return fn(*args, **kwargs)
    except (UserError, OSError, ValueError) as exc:  # OSError: missing files, permissions, a full disk, ...
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
    part_size: Annotated[int, typer.Option(help="Images per unit of work (and of resumption).")] = 256,
    max_archive_bytes: Annotated[int, typer.Option(help="Extraction limit per archive, bytes.")] = 64 << 30,
    max_archive_files: Annotated[int, typer.Option(help="Extraction limit per archive, members.")] = 1_000_000,
    max_archive_depth: Annotated[
        int, typer.Option(help="Archives inside archives are extracted up to this many levels (outer one included).")
    ] = 3,
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
    srcs = _guard(load_sources, list(sources or []), config=config, out_dir=out, progress=not quiet)
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
        part_size=part_size,
        max_archive_bytes=max_archive_bytes,
        max_archive_files=max_archive_files,
        max_archive_depth=max_archive_depth,
    )
    summary = _guard(build, srcs, out, opts)
    typer.echo(summary.table())


@inf30_app.command("merge")
def merge_cmd(
    dirs: Annotated[list[Path], typer.Argument(help="Shard output folders from `inf30 build --shard`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged dataset folder.")],
    dedupe: Annotated[bool, typer.Option("--dedupe/--no-dedupe", help="Run near-duplicate removal across shards.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Combine shard outputs into one dataset (cross-shard exact duplicates dropped).

    Example: inf30 merge shards/0 shards/1 shards/2 --out inf30
    """
    from inf30.merge import merge

    summary = _guard(merge, dirs, out, dedupe=dedupe, progress=not quiet)
    typer.echo(summary.table())


# --- inf30 scrape (issue 3) ---
@inf30_app.command("scrape")
def scrape_cmd(
    sources: Annotated[list[str] | None, typer.Argument(help="URL lists (.txt/.csv/.parquet), page or file URLs, hf:ID; KIND:LOCATION forces a kind (urls, page, url, hf).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Download folder (cache, files, scrape_manifest.parquet).")] = Path("inf30-scrape"),
    config: Annotated[Path | None, typer.Option(help="YAML file listing sources (see docs/scrape.md).")] = None,
    licence: Annotated[str | None, typer.Option(help="Licence recorded for SOURCE arguments.")] = None,
    concurrency: Annotated[int, typer.Option(help="Downloads in flight at once.")] = 16,
    per_host: Annotated[int, typer.Option(help="Downloads in flight per host.")] = 8,
    rate: Annotated[float, typer.Option(help="Requests per second over all hosts (0 = unlimited).")] = 0.0,
    connect_timeout: Annotated[float, typer.Option(help="Seconds to connect.")] = 10.0,
    read_timeout: Annotated[float, typer.Option(help="Seconds without a byte before a try fails.")] = 30.0,
    retries: Annotated[int, typer.Option(help="Extra tries on timeouts, connection errors, 429 and 5xx.")] = 4,
    backoff: Annotated[float, typer.Option(help="First retry backoff in seconds (doubles, with jitter).")] = 0.5,
    depth: Annotated[int, typer.Option(help="Page crawl: link hops from a page to a file.")] = 1,
    same_host: Annotated[bool, typer.Option("--same-host/--any-host", help="Page crawl: stay on the pages' hosts.")] = True,
    include: Annotated[list[str] | None, typer.Option(help="URL glob (or re:REGEX) a file must match; repeatable.")] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="URL glob (or re:REGEX) to skip; repeatable.")] = None,
    robots: Annotated[bool, typer.Option("--robots/--no-robots", help="Respect robots.txt.")] = True,
    max_image_mb: Annotated[float, typer.Option(help="Largest image file, MB.")] = 64.0,
    max_archive_mb: Annotated[float, typer.Option(help="Largest archive or video file, MB.")] = 512.0,
    max_redirects: Annotated[int, typer.Option(help="Most redirects followed per URL.")] = 10,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download remote sources (URL lists, pages, remote archives/videos, Hub datasets) for `inf30 build`.

    Example: inf30 scrape urls.csv page:https://example.org/data.html hf:org/thermal --out raw
    """
    from inf30.scrape import ScrapeOptions, parse_source, scrape

    if not sources and config is None:
        fail("give at least one SOURCE or --config sources.yaml")
    specs = [_guard(parse_source, s, licence=licence) for s in sources or []]
    if config is not None:
        try:
            from inf30.sources import load_config
        except ImportError:
            fail("--config needs inf30.sources.load_config (not available in this version)")
        specs += _guard(load_config, config)
    mb = 1024 * 1024
    opts = ScrapeOptions(
        concurrency=concurrency, per_host=per_host, rate=rate or None, connect_timeout=connect_timeout,
        read_timeout=read_timeout, retries=retries, backoff_base=backoff, depth=depth, same_host=same_host,
        include=list(include or []), exclude=list(exclude or []), respect_robots=robots,
        max_image_bytes=int(max_image_mb * mb), max_archive_bytes=int(max_archive_mb * mb), max_redirects=max_redirects,
    )
    result = _guard(scrape, specs, out, opts, progress=not quiet)
    typer.echo(result.table())


# --- inf30 dedupe (issue 4) ---
@inf30_app.command("dedupe")
def dedupe_cmd(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder (with manifest.parquet).")],
    hashes: Annotated[str, typer.Option(help="Stage 2 hashes, comma-separated (phash,dhash,whash,ahash).")] = "phash",
    hash_threshold: Annotated[int, typer.Option(help="Stage 2: max Hamming distance per 64-bit hash.")] = 8,
    scene: Annotated[bool, typer.Option("--scene/--no-scene", help="Run stage 3 (scene-level, ORB + RANSAC).")] = True,
    min_inliers: Annotated[int, typer.Option(help="Stage 3: RANSAC inliers to call a pair the same scene.")] = 25,
    neighbors: Annotated[int, typer.Option(help="Stage 3: candidates verified per image.")] = 40,
    expand: Annotated[int, typer.Option(help="Stage 3: also verify pairs of images both verified as duplicates of "
                                             "a common one, among its N strongest links (0 = off).")] = 10,
    order: Annotated[str, typer.Option(help="Anchor order keys, descending, comma-separated (size,entropy).")] = "size,entropy",
    workers: Annotated[int, typer.Option(help="Processes (0 = all cores); never changes the result.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Drop near-copies (perceptual hash) and scene-level near-duplicates (local features), keeping one
    anchor per group; writes DATASET/dedupe/groups.parquet and groups.png. Safe to re-run.

    Example: inf30 dedupe inf30 --hash-threshold 6 --min-inliers 30
    """
    from dataclasses import replace

    from inf30.dedupe import DedupeOptions, dedupe_dataset
    from inf30.scene import SceneParams

    if min_inliers < 4:
        fail(f"--min-inliers must be at least 4, got {min_inliers}")
    opts = DedupeOptions(
        hashes=tuple(h.strip() for h in hashes.split(",") if h.strip()),
        hash_threshold=hash_threshold,
        scene=scene,
        scene_params=replace(SceneParams(), min_inliers=min_inliers),
        neighbors=neighbors,
        expand=expand,
        order=tuple(k.strip() for k in order.split(",") if k.strip()),
        workers=workers,
    )
    summary = _guard(dedupe_dataset, dataset, opts, progress=not quiet)
    typer.echo(summary.table())


# --- inf30 entropy / report (issue 5) ---
@inf30_app.command("entropy")
def entropy_cmd(
    paths: Annotated[list[str], typer.Argument(help="Folders, image files, globs or built datasets.")],
    compare: Annotated[list[str] | None, typer.Option(help="Second set to compare with (repeat for several paths).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (every statistic, all failures).")] = False,
    workers: Annotated[int, typer.Option(help="Decode processes (0 = all cores).")] = 0,
    raw: Annotated[bool, typer.Option(help="Also the entropy of 16-bit/float inputs' raw values (256 bins).")] = False,
    n_boot: Annotated[int, typer.Option(help="Bootstrap resamples for the comparison's interval.")] = 2000,
    seed: Annotated[int, typer.Option(help="Random seed of the bootstrap.")] = 0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Entropy statistics (paper Eq. 1) of folders or built datasets, without building; with --compare,
    the difference of the two sets' means and its bootstrap confidence interval.

    Example: inf30 entropy data/ir/ --compare data/visible/
    """
    import json

    from inf30.entropy import analyze

    if n_boot < 1:
        fail("--n-boot must be at least 1")
    result = _guard(analyze, paths, compare=compare, workers=workers, raw=raw, n_boot=n_boot, seed=seed, progress=not quiet)
    typer.echo(json.dumps(result.to_dict(), indent=2) if json_out else result.table())


@inf30_app.command("report")
def report_cmd(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder (with manifest.parquet).")],
    samples: Annotated[int, typer.Option(help="Random sample images per source.")] = 8,
    embed: Annotated[bool, typer.Option(help="Embed the plots in index.html (one portable file).")] = False,
    entropy_maps: Annotated[bool, typer.Option("--entropy-maps/--no-entropy-maps", help="Local entropy maps of the extremes.")] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Write DIR/report/index.html, report.md and PNG plots: funnel per source, entropy, resolution,
    samples, duplicate groups, licences.

    Example: inf30 report inf30-demo
    """
    from inf30.report import ReportOptions, write_report

    opts = ReportOptions(samples_per_source=samples, embed=embed, entropy_maps=entropy_maps, progress=not quiet)
    rep = _guard(write_report, dataset, opts)
    typer.echo(f"wrote {rep.html} and {rep.markdown} ({len(rep.plots)} plots)")


# --- inf30 publish (issue 6) ---
@inf30_app.command("publish")
def publish_cmd(
    dataset: Annotated[Path, typer.Argument(help="Built dataset folder (from `inf30 build`), or a published folder to push.")],
    to: Annotated[Path | None, typer.Option("--to", help="Folder to write the Hub-ready dataset repository into.")] = None,
    repo_id: Annotated[str | None, typer.Option("--repo-id", help="Hub dataset repository USER/NAME.")] = None,
    push: Annotated[bool, typer.Option("--push", help="Create or update the Hub repo and upload (token: HF_TOKEN or `hf auth login`).")] = False,
    private: Annotated[bool, typer.Option("--private", help="Create the Hub repo as private.")] = False,
    max_side: Annotated[int | None, typer.Option("--max-side", help="Also write config max_side_N: images downscaled so the longer side is at most N.")] = None,
    shard_size: Annotated[str, typer.Option("--shard-size", help="Most image bytes per parquet shard (500MB, 2GB).")] = "500MB",
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing non-empty --to folder.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Publish a built dataset as a Hugging Face dataset (parquet shards, dataset card, dropped list); push it.

    Example: inf30 publish inf30 --to inf30-hf --max-side 512 --repo-id me/inf30 --push
    """
    from inf30.publish import PublishOptions, is_published, publish
    from inf30.publish import push as push_folder

    if push and not repo_id:
        fail("--push needs --repo-id USER/NAME")
    if to is None:
        if push and is_published(dataset):
            url = _guard(push_folder, dataset, repo_id, private=private)
            typer.echo(f"pushed: {url}")
            return
        fail("give --to OUT (or push an already published folder: inf30 publish OUT --repo-id USER/NAME --push)")
    opts = PublishOptions(
        repo_id=repo_id,
        push=push,
        private=private,
        max_side=max_side,
        shard_size=shard_size,
        overwrite=overwrite,
        progress=not quiet,
    )
    result = _guard(publish, dataset, to, opts)
    typer.echo(result.table())



# ---------------------------------------------------------------------------------------------- infmae
# --- infmae pretrain / visualize / export (issue 8) ---
@infmae_app.command("pretrain")
def pretrain_cmd(
    data: Annotated[str, typer.Option(help="Built Inf30 folder, published dataset / datasets path / Hub id, or image folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, metrics, PNGs); re-run to resume.")],
    preset: Annotated[str, typer.Option(help="Model preset (infmae_tiny, infmae_small, infmae_base, ...).")] = "infmae_base",
    epochs: Annotated[int, typer.Option(help="Epochs of the cosine schedule.")] = 400,
    warmup_epochs: Annotated[float, typer.Option(help="Linear warm-up epochs (per-iteration).")] = 40.0,
    batch: Annotated[int, typer.Option(help="Effective batch per optimizer step, over all processes and --accum.")] = 256,
    blr: Annotated[float, typer.Option(help="Base learning rate; lr = blr x batch / 256.")] = 1.5e-4,
    lr: Annotated[float | None, typer.Option(help="Absolute peak learning rate (overrides --blr).")] = None,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay (weights only).")] = 0.05,
    accum: Annotated[int, typer.Option(help="Gradient accumulation steps.")] = 1,
    input_size: Annotated[int, typer.Option(help="Square crop size, a multiple of 16.")] = 224,
    mask_stride: Annotated[int, typer.Option(help="Information-aware masking stride S (1 - 1/S masked).")] = 4,
    norm_pix_loss: Annotated[bool, typer.Option(help="Per-patch normalized targets.")] = False,
    precision: Annotated[str, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.")] = "auto",
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    workers: Annotated[int, typer.Option(help="DataLoader worker processes per training process.")] = 8,
    threads: Annotated[int, typer.Option(help="Torch CPU threads per process (0 = torch's default).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
    nproc: Annotated[int, typer.Option(help="Processes per node (0 = number of GPUs, 1 on CPU).")] = 0,
    nnodes: Annotated[int, typer.Option(help="Number of nodes.")] = 1,
    node_rank: Annotated[int, typer.Option(help="This node's rank (multi-node).")] = 0,
    master_addr: Annotated[str, typer.Option(help="Rendezvous host (multi-node).")] = "127.0.0.1",
    master_port: Annotated[int | None, typer.Option(help="Rendezvous port (multi-node; free port on one node).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of initialization, sample order and augmentation.")] = 0,
    save_every: Annotated[int, typer.Option(help="Epochs between checkpoint-EPOCH folders.")] = 40,
    latest_every: Annotated[int, typer.Option(help="Optimizer steps between checkpoint-latest updates.")] = 200,
    vis_every: Annotated[int, typer.Option(help="Epochs between reconstruction PNGs (0 = only at the end).")] = 5,
    log_every: Annotated[int, typer.Option(help="Optimizer steps between metrics lines.")] = 10,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps in total.")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop (with a checkpoint) after this many minutes.")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic algorithms (slower on GPU).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Pre-train InfMAE on a dataset (paper recipe); launches one worker per GPU; re-run to resume.

    Example: infmae pretrain --data inf30-demo --out runs/tiny --preset infmae_tiny --epochs 2 --batch 32 --input-size 96
    """
    from infmae.distributed import LaunchError
    from infmae.train import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data=data, out=str(out), preset=preset, epochs=epochs, warmup_epochs=warmup_epochs, batch=batch, blr=blr,
        lr=lr, weight_decay=weight_decay, accum=accum, input_size=input_size, mask_stride=mask_stride,
        norm_pix_loss=norm_pix_loss, precision=precision, compile=compile, workers=workers, threads=threads, device=device,
        nproc=nproc, nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port,
        seed=seed, save_every=save_every, latest_every=latest_every, vis_every=vis_every, log_every=log_every,
        max_steps=max_steps, max_minutes=max_minutes, deterministic=deterministic, progress=not quiet,
    )
    try:
        result = _guard(pretrain, cfg)
    except LaunchError as exc:
        fail(str(exc), code=1)
    if result and "step" in result:
        typer.echo(
            f"step {result['step']}/{result['total_steps']} ({result['stopped']}), loss {result['loss']}\n"
            f"checkpoint: {result['checkpoint']}\nreconstruction: {result['png']}\nmetrics: {result['metrics']}"
        )


@infmae_app.command("visualize")
def visualize_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint folder (e.g. RUN_DIR/checkpoint-latest) or model.safetensors.")],
    images: Annotated[list[Path], typer.Argument(help="Image files (any size and mode).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="PNG to write.")] = Path("reconstruction.png"),
    input_size: Annotated[int | None, typer.Option(help="View size (default: the checkpoint's training size).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
) -> None:
    """Reconstruct images with a checkpoint: original | visible patches | reconstruction | pasted.

    Example: infmae visualize runs/tiny/checkpoint-latest frame1.png frame2.jpg --out recon.png
    """
    from infmae.visualize import visualize_images

    path = _guard(visualize_images, ckpt, [str(p) for p in images], out, input_size=input_size, device=device)
    typer.echo(f"wrote {path}")


@infmae_app.command("export")
def export_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint folder (e.g. RUN_DIR/checkpoint-latest).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the encoder (model.safetensors + config.json).")],
) -> None:
    """Write the pre-trained encoder alone (no decoder, no optimizer) for downstream use.

    Example: infmae export runs/base/checkpoint-0400 --out infmae-base-encoder
    """
    from infmae.export import export_encoder

    info = _guard(export_encoder, ckpt, out)
    typer.echo(f"wrote {info['path']} ({info['params']:,} encoder parameters)")



def main() -> None:  # pragma: no cover - convenience for `python cli.py`
    prog = Path(sys.argv[0]).name
    (infmae_app if prog.startswith("infmae") else inf30_app)()


if __name__ == "__main__":  # pragma: no cover
    main()
