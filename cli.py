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
    """Print ``error: message`` (one line) and exit: 1 failed, 2 bad usage (the default), 130 interrupted."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _exit_code(exc: BaseException) -> int:
    """0 done, 1 failed, 2 bad usage, 130 interrupted (see README, "When things go wrong")."""
    if isinstance(exc, UserError):
        return exc.exit_code  # UsageError 2; JobFailed (busy folder, full disk, nothing usable) 1
    if isinstance(exc, (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ValueError)):
        return 2  # a path or value given on the command line that is not usable
    return 1  # other OSError: permissions, I/O errors during the work


def _guard(fn, *args, **kwargs):
    """Call a library function, turning expected user errors into one-line messages."""
    try:
        return fn(*args, **kwargs)
    except (UserError, OSError, ValueError) as exc:  # OSError: missing files, permissions, a full disk, ...
        fail(str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__, code=_exit_code(exc))
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
# The inf30 commands take each option's default and help from its options dataclass field (`opt`); the
# dataclasses (BuildOptions, ScrapeOptions, PublishOptions, ReportOptions, EntropyOptions, SampleOptions) are
# the one source of truth, and tests/test_cli_options.py checks that every field is reachable here.
from inf30.build import BuildOptions  # noqa: E402
from inf30.entropy import EntropyOptions  # noqa: E402
from inf30.options import default_of, help_of  # noqa: E402
from inf30.publish import PublishOptions  # noqa: E402
from inf30.report import ReportOptions  # noqa: E402
from inf30.sample import SampleOptions  # noqa: E402
from inf30.scrape.options import MB, ScrapeOptions  # noqa: E402


def opt(cls: type, name: str, *flags: str, to_cli=None, help: str | None = None, **kw):  # noqa: A002
    """A ``typer.Option`` for field ``name`` of the options dataclass ``cls``: its default (through
    ``to_cli`` where the CLI shows it in another form, e.g. ``1,99`` for a tuple) and its help."""
    value = default_of(cls, name)
    return typer.Option(value if to_cli is None else to_cli(value), *flags, help=help or help_of(cls, name), **kw)


def csv_text(values) -> str:
    """``(1.0, 99.0)`` -> ``"1,99"``, ``("phash",)`` -> ``"phash"``: a tuple option as the CLI shows it."""
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)


def csv_items(text: str) -> tuple[str, ...]:
    """``"phash, dhash"`` -> ``("phash", "dhash")`` (empty items dropped)."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def no_progress(progress: bool) -> bool:
    """``progress`` as ``--quiet`` shows it."""
    return not progress


def bytes_to_mb(n: int) -> float:
    return n / MB


def mb_to_bytes(mb: float) -> int | float:
    """MB (MiB) -> bytes; NaN or infinity pass through for ScrapeOptions.validate to refuse in one line."""
    return int(mb * MB) if mb * 0 == 0 else mb


def none_as_zero(value: float | None) -> float:
    return value or 0.0


@inf30_app.command("sample")
def sample_cmd(
    out: Annotated[Path, typer.Argument(help="Folder to write the sample source tree into.")],
    seed: int = opt(SampleOptions, "seed"),
    n_scenes: int = opt(SampleOptions, "n_scenes"),
    overwrite: bool = opt(SampleOptions, "overwrite", "--overwrite"),
) -> None:
    """Write a small deterministic sample source tree (synthetic thermal scenes, a video, an archive,
    planted duplicates, tiny and broken files). OUT must be new, empty or an earlier sample (only the
    files the sample wrote are replaced).

    Example: inf30 sample demo-src
    """
    from inf30.sample import write_sample

    info = _guard(write_sample, out, seed=seed, n_scenes=n_scenes, overwrite=overwrite)
    typer.echo(f"wrote {info['files']} files to {out}")


@inf30_app.command("build")
def build_cmd(
    sources: Annotated[list[str] | None, typer.Argument(help="Folders, globs, archives, videos (or URLs).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output dataset folder.")] = Path("inf30-out"),
    config: Annotated[Path | None, typer.Option(help="YAML file listing sources (see README).")] = None,
    workers: int = opt(BuildOptions, "workers"),
    video_every: float = opt(BuildOptions, "video_every"),
    min_size: int = opt(BuildOptions, "min_size"),
    min_side: int = opt(BuildOptions, "min_side"),
    agc: str = opt(BuildOptions, "agc_percentiles", "--agc", to_cli=csv_text),
    max_pixels: int = opt(BuildOptions, "max_pixels"),
    shard: str | None = opt(BuildOptions, "shard"),
    drop_pseudocolor: bool = opt(BuildOptions, "drop_pseudocolor"),
    dedupe: bool = opt(BuildOptions, "dedupe", "--dedupe/--no-dedupe"),
    hashes: str = opt(BuildOptions, "hashes", to_cli=csv_text),
    part_size: int = opt(BuildOptions, "part_size"),
    max_archive_bytes: int = opt(BuildOptions, "max_archive_bytes"),
    max_archive_files: int = opt(BuildOptions, "max_archive_files"),
    max_archive_depth: int = opt(BuildOptions, "max_archive_depth"),
    glob_: Annotated[bool, typer.Option("--glob", help="Take every SOURCE as a glob pattern (by default an existing "
                                        "path is a path even when its name holds *, ? or [).")] = False,
    quiet: bool = opt(BuildOptions, "progress", "--quiet", "-q", to_cli=no_progress, help="No progress bar."),
) -> None:
    """Build a clean, normalized, fully accounted image set with a manifest.

    Example: inf30 build data/flir/ videos/*.mp4 archive.tar.gz --out inf30
    """
    from pipelines.build import build_sources

    if not sources and config is None:
        fail("give at least one SOURCE or --config sources.yaml")
    opts = BuildOptions(
        workers=workers,
        video_every=video_every,
        min_size=min_size,
        min_side=min_side,
        agc_percentiles=csv_items(agc),
        max_pixels=max_pixels,
        shard=shard,
        drop_pseudocolor=drop_pseudocolor,
        dedupe=dedupe,
        hashes=csv_items(hashes),
        progress=not quiet,
        part_size=part_size,
        max_archive_bytes=max_archive_bytes,
        max_archive_files=max_archive_files,
        max_archive_depth=max_archive_depth,
    )
    _guard(opts.validate)  # bad options: exit 2 before any work, before --out exists
    summary = _guard(build_sources, list(sources or []), out, opts, config=config, patterns=glob_)
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


@inf30_app.command("scrape")
def scrape_cmd(
    sources: Annotated[list[str] | None, typer.Argument(help="URL lists (.txt/.csv/.parquet), page or file URLs, hf:ID; KIND:LOCATION forces a kind (urls, page, url, hf).")] = None,
    out: Annotated[Path, typer.Option("--out", "-o", help="Download folder (cache, files, scrape_manifest.parquet).")] = Path("inf30-scrape"),
    config: Annotated[Path | None, typer.Option(help="YAML file listing sources (see docs/scrape.md).")] = None,
    licence: Annotated[str | None, typer.Option(help="Licence recorded for SOURCE arguments.")] = None,
    concurrency: int = opt(ScrapeOptions, "concurrency"),
    per_host: int = opt(ScrapeOptions, "per_host"),
    rate: float = opt(ScrapeOptions, "rate", to_cli=none_as_zero, help="Requests per second over all hosts (0 = unlimited)."),
    connect_timeout: float = opt(ScrapeOptions, "connect_timeout"),
    read_timeout: float = opt(ScrapeOptions, "read_timeout"),
    total_timeout: float = opt(ScrapeOptions, "total_timeout"),
    retries: int = opt(ScrapeOptions, "retries"),
    backoff: float = opt(ScrapeOptions, "backoff_base", "--backoff"),
    backoff_max: float = opt(ScrapeOptions, "backoff_max"),
    depth: int = opt(ScrapeOptions, "depth"),
    same_host: bool = opt(ScrapeOptions, "same_host", "--same-host/--any-host"),
    allow_host: list[str] = opt(ScrapeOptions, "allow_hosts", "--allow-host", help="Page crawl: an extra host a crawl may visit; repeatable."),
    max_pages: int = opt(ScrapeOptions, "max_pages"),
    include: list[str] = opt(ScrapeOptions, "include", help="URL glob (or re:REGEX) a file must match; repeatable."),
    exclude: list[str] = opt(ScrapeOptions, "exclude", help="URL glob (or re:REGEX) to skip; repeatable."),
    robots: bool = opt(ScrapeOptions, "respect_robots", "--robots/--no-robots"),
    max_image_mb: float = opt(ScrapeOptions, "max_image_bytes", to_cli=bytes_to_mb, help="Largest image file, MB."),
    max_archive_mb: float = opt(ScrapeOptions, "max_archive_bytes", to_cli=bytes_to_mb, help="Largest archive or video file, MB."),
    max_page_mb: float = opt(ScrapeOptions, "max_page_bytes", to_cli=bytes_to_mb, help="Largest HTML page or URL list, MB."),
    max_redirects: int = opt(ScrapeOptions, "max_redirects"),
    user_agent: str = opt(ScrapeOptions, "user_agent"),
    keep_html: bool = opt(ScrapeOptions, "keep_html", "--keep-html"),
    fsync: bool = opt(ScrapeOptions, "fsync", "--fsync"),
    chunk_size: int = opt(ScrapeOptions, "chunk_size"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Download remote sources (URL lists, pages, remote archives/videos, Hub datasets) for `inf30 build`.

    Example: inf30 scrape urls.csv page:https://example.org/data.html hf:org/thermal --out raw
    """
    from inf30.scrape import parse_source, scrape
    from inf30.sources import load_config

    if not sources and config is None:
        fail("give at least one SOURCE or --config sources.yaml")
    specs = [_guard(parse_source, s, licence=licence) for s in sources or []]
    if config is not None:
        specs += _guard(load_config, config)
    opts = ScrapeOptions(
        concurrency=concurrency, per_host=per_host, rate=rate or None, connect_timeout=connect_timeout,
        read_timeout=read_timeout, total_timeout=total_timeout, retries=retries, backoff_base=backoff,
        backoff_max=backoff_max, depth=depth, same_host=same_host, allow_hosts=list(allow_host or []),
        max_pages=max_pages, include=list(include or []), exclude=list(exclude or []), respect_robots=robots,
        max_image_bytes=mb_to_bytes(max_image_mb), max_archive_bytes=mb_to_bytes(max_archive_mb),
        max_page_bytes=mb_to_bytes(max_page_mb), max_redirects=max_redirects, user_agent=user_agent,
        keep_html=keep_html, fsync=fsync, chunk_size=chunk_size,
    )
    _guard(opts.validate)  # bad options: exit 2 before any work
    result = _guard(scrape, specs, out, opts, progress=not quiet)
    typer.echo(result.table())


# --- inf30 dedupe (issues 4, 17) ---
# Every DedupeOptions field and every SceneParams field (scene_params) is an option, declared from the field
# (cli.opt: the dataclass holds the default and the help).
from inf30.dedupe import DedupeOptions  # noqa: E402
from inf30.scene import SceneParams  # noqa: E402


@inf30_app.command("dedupe")
def dedupe_cmd(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder (with manifest.parquet).")],
    hashes: str = opt(DedupeOptions, "hashes", to_cli=csv_text),
    hash_threshold: int = opt(DedupeOptions, "hash_threshold"),
    scene: bool = opt(DedupeOptions, "scene", "--scene/--no-scene"),
    neighbors: int = opt(DedupeOptions, "neighbors"),
    votes: int = opt(DedupeOptions, "votes"),
    vote_keypoints: int = opt(DedupeOptions, "vote_keypoints"),
    window: int = opt(DedupeOptions, "window"),
    min_similarity: float = opt(DedupeOptions, "min_similarity"),
    hops: int = opt(DedupeOptions, "hops"),
    vocab_size: int = opt(DedupeOptions, "vocab_size"),
    order: str = opt(DedupeOptions, "order", to_cli=csv_text),
    workers: int = opt(DedupeOptions, "workers"),
    sheet_groups: int = opt(DedupeOptions, "sheet_groups"),
    side: int = opt(SceneParams, "side"),
    nfeatures: int = opt(SceneParams, "nfeatures"),
    fast_threshold: int = opt(SceneParams, "fast_threshold"),
    min_keypoints: int = opt(SceneParams, "min_keypoints"),
    ratio: float = opt(SceneParams, "ratio"),
    ransac_px: float = opt(SceneParams, "ransac_px"),
    min_inliers: int = opt(SceneParams, "min_inliers"),
    min_inlier_ratio: float = opt(SceneParams, "min_inlier_ratio"),
    max_scale: float = opt(SceneParams, "max_scale"),
    clahe: float = opt(SceneParams, "clahe"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Drop near-copies (perceptual hash) and scene-level near-duplicates (local features): each group of
    images connected by verified links (within --hops of its anchor) keeps the anchor; writes
    DATASET/dedupe/groups.parquet and groups.png. Safe to re-run; takes the dataset folder's lock.

    Example: inf30 dedupe inf30 --hash-threshold 6 --min-inliers 30 --window 0
    """
    import dataclasses

    from inf30.dedupe import dedupe_dataset

    given = dict(locals())
    scene_params = SceneParams(**{f.name: given[f.name] for f in dataclasses.fields(SceneParams)})
    fields = {f.name for f in dataclasses.fields(DedupeOptions)} - {"scene_params"}
    kw = {k: (csv_items(given[k]) if k in ("hashes", "order") else given[k]) for k in fields}
    opts = DedupeOptions(scene_params=scene_params, **kw)
    _guard(opts.validate)  # bad options: exit 2 before any work
    summary = _guard(dedupe_dataset, dataset, opts, progress=not quiet)
    typer.echo(summary.table())


@inf30_app.command("entropy")
def entropy_cmd(
    paths: Annotated[list[str], typer.Argument(help="Folders, image files, globs or built datasets.")],
    compare: Annotated[list[str] | None, typer.Option(help="Second set to compare with (repeat for several paths).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON (every statistic, all failures).")] = False,
    workers: int = opt(EntropyOptions, "workers"),
    raw: bool = opt(EntropyOptions, "raw"),
    n_boot: int = opt(EntropyOptions, "n_boot"),
    ci: float = opt(EntropyOptions, "ci"),
    seed: int = opt(EntropyOptions, "seed"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Entropy statistics (paper Eq. 1) of folders or built datasets, without building; with --compare,
    the difference of the two sets' means and its bootstrap confidence interval.

    Example: inf30 entropy data/ir/ --compare data/visible/
    """
    import json

    from inf30.entropy import analyze

    result = _guard(analyze, paths, compare=compare, workers=workers, raw=raw, n_boot=n_boot, ci=ci, seed=seed,
                    progress=not quiet)
    typer.echo(json.dumps(result.to_dict(), indent=2) if json_out else result.table())


@inf30_app.command("report")
def report_cmd(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder (with manifest.parquet).")],
    samples: int = opt(ReportOptions, "samples_per_source", "--samples"),
    extremes: int = opt(ReportOptions, "extremes"),
    dup_groups: int = opt(ReportOptions, "dup_groups"),
    dup_members: int = opt(ReportOptions, "dup_members"),
    embed: bool = opt(ReportOptions, "embed"),
    entropy_maps: bool = opt(ReportOptions, "entropy_maps", "--entropy-maps/--no-entropy-maps"),
    seed: int = opt(ReportOptions, "seed"),
    workers: int = opt(ReportOptions, "workers"),
    quiet: bool = opt(ReportOptions, "progress", "--quiet", "-q", to_cli=no_progress, help="No progress bar."),
) -> None:
    """Write DIR/report/index.html, report.md and PNG plots: funnel per source, entropy, resolution,
    samples, duplicate groups, licences.

    Example: inf30 report inf30-demo
    """
    from inf30.report import write_report

    opts = ReportOptions(samples_per_source=samples, extremes=extremes, dup_groups=dup_groups,
                         dup_members=dup_members, embed=embed, entropy_maps=entropy_maps, seed=seed, workers=workers,
                         progress=not quiet)
    _guard(opts.validate)  # bad options: exit 2 before any work
    rep = _guard(write_report, dataset, opts)
    typer.echo(f"wrote {rep.html} and {rep.markdown} ({len(rep.plots)} plots)")


@inf30_app.command("publish")
def publish_cmd(
    dataset: Annotated[Path, typer.Argument(help="Built dataset folder (from `inf30 build`), or a published folder to push.")],
    to: Annotated[Path | None, typer.Option("--to", help="Folder to write the Hub-ready dataset repository into.")] = None,
    repo_id: str | None = opt(PublishOptions, "repo_id", "--repo-id"),
    push: bool = opt(PublishOptions, "push", "--push"),
    private: bool = opt(PublishOptions, "private", "--private"),
    max_side: int | None = opt(PublishOptions, "max_side", "--max-side"),
    shard_size: str = opt(PublishOptions, "shard_size", "--shard-size"),
    overwrite: bool = opt(PublishOptions, "overwrite", "--overwrite"),
    pretty_name: str = opt(PublishOptions, "pretty_name"),
    endpoint: str | None = opt(PublishOptions, "endpoint"),
    quiet: bool = opt(PublishOptions, "progress", "--quiet", "-q", to_cli=no_progress, help="No progress bar."),
) -> None:
    """Publish a built dataset as a Hugging Face dataset (parquet shards, dataset card, dropped list); push it.
    The Hub token comes from HF_TOKEN or `hf auth login`, never from the command line.

    Example: inf30 publish inf30 --to inf30-hf --max-side 512 --repo-id me/inf30 --push
    """
    from inf30.publish import is_published, publish
    from inf30.publish import push as push_folder

    if push and not repo_id:
        fail("--push needs --repo-id USER/NAME")
    if to is None:
        if push and is_published(dataset):
            url = _guard(push_folder, dataset, repo_id, private=private, endpoint=endpoint)
            typer.echo(f"pushed: {url}")
            return
        fail("give --to OUT (or push an already published folder: inf30 publish OUT --repo-id USER/NAME --push)")
    opts = PublishOptions(repo_id=repo_id, push=push, private=private, max_side=max_side, shard_size=shard_size,
                          overwrite=overwrite, pretty_name=pretty_name, endpoint=endpoint, progress=not quiet)
    result = _guard(publish, dataset, to, opts)
    typer.echo(result.table())



# ---------------------------------------------------------------------------------------------- infmae
# --- infmae pretrain / visualize / export (issue 8) ---
@infmae_app.command("pretrain")
def pretrain_cmd(
    data: Annotated[str, typer.Option(help="Built Inf30 folder, published dataset / datasets path / Hub id, image folder, or a pack (`infmae pack`).")],
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
    save_every: Annotated[int, typer.Option(help="Epochs between checkpoint-EPOCH folders (0 = only after the last epoch).")] = 40,
    latest_every: Annotated[int, typer.Option(help="Optimizer steps between checkpoint-latest updates (0 = only at the end).")] = 200,
    vis_every: Annotated[int, typer.Option(help="Epochs between reconstruction PNGs (0 = only at the end).")] = 5,
    log_every: Annotated[int, typer.Option(help="Optimizer steps between metrics lines (>= 1).")] = 10,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps in total (>= 1).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop (with a checkpoint) after this many minutes.")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic algorithms (slower on GPU).")] = False,
    loader: Annotated[str, typer.Option(help="auto (the packed loader for a pack, else decode), packed or decode.")] = "auto",
    schedule: Annotated[str, typer.Option(help="After warm-up: cosine or poly (power 0.9).")] = "cosine",
    min_lr: Annotated[float, typer.Option(help="Final learning rate of the schedule.")] = 0.0,
    drop_path: Annotated[float, typer.Option(help="Stochastic depth rate of the encoder.")] = 0.0,
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
        loader=loader, schedule=schedule, min_lr=min_lr, drop_path=drop_path,
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Image to write; its extension sets the format (.png, .jpg, ...).")] = Path("reconstruction.png"),
    input_size: Annotated[int | None, typer.Option(help="View size, a positive multiple of 16 (default: the checkpoint's training size, else its preprocessing input size).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N.")] = "cpu",
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
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the encoder (model.safetensors + config.json + README.md); other files in it are kept.")],
    push: Annotated[str | None, typer.Option("--push", help="Also upload the folder to this Hub model repo (ORG/NAME; token from HF_TOKEN or `hf auth login`).")] = None,
) -> None:
    """Write the pre-trained encoder alone (no decoder, no optimizer) for downstream use.

    Example: infmae export runs/base/checkpoint-0400 --out infmae-base-encoder --push me/infmae-base-encoder
    """
    from infmae.export import export_encoder

    info = _guard(export_encoder, ckpt, out, push=push)
    typer.echo(f"wrote {info['path']} ({info['params']:,} encoder parameters)")
    if info.get("url"):
        typer.echo(f"pushed to {info['url']}")


# --- infmae convert (issue 14) ---
@infmae_app.command("convert")
def convert_cmd(
    ckpt: Annotated[Path, typer.Argument(help="The authors' InfMAE or ConvMAE checkpoint (.pth), e.g. checkpoint-399.pth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (model.safetensors + config.json + README.md + conversion.json).")],
    num_heads: Annotated[int | None, typer.Option(help="Encoder attention heads (stored nowhere; default: the preset with the same widths).")] = None,
    decoder_heads: Annotated[int | None, typer.Option(help="Decoder attention heads (default: the preset with the same decoder width).")] = None,
    allow_unknown: Annotated[bool, typer.Option("--allow-unknown", help="Drop keys that are not part of the format instead of failing.")] = False,
    push: Annotated[str | None, typer.Option("--push", help="Also upload the folder to this Hub model repo (ORG/NAME).")] = None,
) -> None:
    """Convert the published InfMAE (or ConvMAE) weights to this toolkit's format, loaded safely.

    Example: infmae convert checkpoint-399.pth --out infmae-base --push me/infmae-base
    """
    from infmae.convert import convert_checkpoint

    report = _guard(convert_checkpoint, ckpt, out, num_heads=num_heads, decoder_heads=decoder_heads,
                    allow_unknown=allow_unknown, push=push)
    what = "encoder" if report.encoder_only else "model"
    typer.echo(f"wrote {out} ({report.kind} {what}, preset {report.config['preset']}; {len(report.mapped)} keys mapped, "
               f"{len(report.ignored)} ignored, {len(report.unknown)} unknown)")
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.url:
        typer.echo(f"pushed to {report.url}")


# --- infmae pack (issue 19) ---
@infmae_app.command("pack")
def pack_cmd(
    src: Annotated[str, typer.Argument(help="Any --data source of `infmae pretrain`: built Inf30 folder, published dataset, Hub id, image folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pack folder to write (re-run to resume); PACK/ or DATASET/pack is used by `infmae pretrain`.")],
    short_side: Annotated[int | None, typer.Option(help="Resize so the shorter side is at most this (never upscales). [default: 256]")] = None,
    shard: Annotated[str | None, typer.Option(help="Build only the shards s with s % N == K, as K/N (parallel jobs into the same --out).")] = None,
    images_per_shard: Annotated[int | None, typer.Option(help="Images per shard file (the unit of resumption). [default: 2048]")] = None,
    workers: Annotated[int | None, typer.Option(help="Processes building shards (0 = all cores); never changes the pack. [default: 1]")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Decode every image once into memory-mapped uint8 shards for the packed (on-device augmenting) loader.

    Example: infmae pack inf30 --out inf30/pack --short-side 256 ; infmae pretrain --data inf30 --out runs/base
    """
    from infmae.pack import PackOptions, pack

    opts = PackOptions(shard=shard, progress=not quiet)
    if short_side is not None:
        opts.short_side = short_side
    if images_per_shard is not None:
        opts.images_per_shard = images_per_shard
    if workers is not None:
        opts.workers = workers
    _guard(opts.validate)  # bad options: exit 2 before any work
    summary = _guard(pack, src, out, opts)
    typer.echo(summary.table())


# --- infmae finetune / evaluate / predict / compare (issue 15) ---
_FT = "[default: the task's]"


@infmae_app.command("finetune")
def finetune_cmd(
    task: Annotated[str, typer.Argument(help="Downstream task: irstd, segment or detect.")],
    data: Annotated[str, typer.Option(help="The task's data folder (e.g. NUAA-SIRST, MSRS, a COCO folder).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder (checkpoints, metrics, results.json); re-run to resume.")],
    init: Annotated[str, typer.Option(help="scratch, an `infmae pretrain` run folder or checkpoint, an export/convert folder, or a Hub id.")] = "scratch",
    head: Annotated[str | None, typer.Option(help="Task head (segment: fcn or upernet).")] = None,
    preset: Annotated[str | None, typer.Option(help="Backbone preset for --init scratch. [default: infmae_base]")] = None,
    epochs: Annotated[int | None, typer.Option(help=f"Epochs of the schedule. {_FT}")] = None,
    warmup_epochs: Annotated[float | None, typer.Option(help="Linear warm-up epochs. [default: 1]")] = None,
    batch: Annotated[int | None, typer.Option(help=f"Effective batch per optimizer step, over all processes. {_FT}")] = None,
    lr: Annotated[float | None, typer.Option(help=f"Peak learning rate. {_FT}")] = None,
    min_lr: Annotated[float | None, typer.Option(help="Final learning rate. [default: 0]")] = None,
    weight_decay: Annotated[float | None, typer.Option(help=f"AdamW weight decay (weights only). {_FT}")] = None,
    layer_decay: Annotated[float | None, typer.Option(help="Layer-wise lr decay over the backbone depth (1 = none). [default: 0.75]")] = None,
    drop_path: Annotated[float | None, typer.Option(help="Stochastic depth rate of the backbone. [default: 0]")] = None,
    schedule: Annotated[str | None, typer.Option(help=f"cosine or poly (power 0.9). {_FT}")] = None,
    accum: Annotated[int | None, typer.Option(help="Gradient accumulation steps. [default: 1]")] = None,
    input_size: Annotated[int | None, typer.Option(help=f"Training crop size, a multiple of 32. {_FT}")] = None,
    precision: Annotated[str | None, typer.Option(help="auto (bf16 on GPU, fp32 on CPU), bf16, fp16 or fp32.")] = None,
    compile: Annotated[bool, typer.Option("--compile", help="torch.compile the model.")] = False,
    workers: Annotated[int | None, typer.Option(help="DataLoader worker processes per process. [default: 4]")] = None,
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads per process (0 = torch's default).")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cuda or cpu.")] = None,
    nproc: Annotated[int | None, typer.Option(help="Processes per node (0 = number of GPUs, 1 on CPU).")] = None,
    nnodes: Annotated[int | None, typer.Option(help="Number of nodes.")] = None,
    node_rank: Annotated[int | None, typer.Option(help="This node's rank (multi-node).")] = None,
    master_addr: Annotated[str | None, typer.Option(help="Rendezvous host (multi-node).")] = None,
    master_port: Annotated[int | None, typer.Option(help="Rendezvous port (multi-node).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of the head's initialization, order and augmentation.")] = None,
    save_every: Annotated[int | None, typer.Option(help="Epochs between checkpoint-EPOCH folders (0 = none). [default: 0]")] = None,
    latest_every: Annotated[int | None, typer.Option(help="Optimizer steps between checkpoint-latest updates (0 = only at the end). [default: 100]")] = None,
    log_every: Annotated[int | None, typer.Option(help="Optimizer steps between metrics lines (>= 1). [default: 10]")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Epochs between evaluations (the best checkpoint is kept). [default: 1]")] = None,
    vis_count: Annotated[int | None, typer.Option(help="Images of the fixed prediction sample drawn at the end. [default: 4]")] = None,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many optimizer steps in total (>= 1).")] = None,
    max_minutes: Annotated[float | None, typer.Option(help="Stop (with a checkpoint) after this many minutes.")] = None,
    deterministic: Annotated[bool, typer.Option("--deterministic", help="Deterministic algorithms (slower on GPU).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Fine-tune InfMAE on a downstream task; evaluates every epoch, keeps the best checkpoint, writes
    results.json; re-run the same command to resume.

    Example: infmae finetune irstd --data ../shared/data/sirst --init runs/tiny --out runs/sirst-tiny --epochs 20
    """
    from infmae.distributed import LaunchError
    from infmae.finetune import FinetuneConfig, finetune

    given = {k: v for k, v in dict(
        init=init, preset=preset, epochs=epochs, warmup_epochs=warmup_epochs, batch=batch, lr=lr, min_lr=min_lr,
        weight_decay=weight_decay, layer_decay=layer_decay, drop_path=drop_path, schedule=schedule, accum=accum,
        input_size=input_size, precision=precision, workers=workers, threads=threads, device=device, nproc=nproc,
        nnodes=nnodes, node_rank=node_rank, master_addr=master_addr, master_port=master_port, seed=seed,
        save_every=save_every, latest_every=latest_every, log_every=log_every, eval_every=eval_every,
        vis_count=vis_count, max_steps=max_steps, max_minutes=max_minutes).items() if v is not None}
    cfg = FinetuneConfig(data=data, out=str(out), task=task, task_options={"head": head} if head else {},
                         compile=compile, deterministic=deterministic, progress=not quiet, **given)
    try:
        result = _guard(finetune, cfg)
    except LaunchError as exc:
        fail(str(exc), code=1)
    if result and "step" in result:
        typer.echo(f"step {result['step']}/{result['total_steps']} ({result['stopped']}), loss {result['loss']}\n"
                   f"results: {result.get('results', '')}\nmetrics: {result['metrics']}")


@infmae_app.command("evaluate")
def evaluate_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder of `infmae finetune`.")],
    data: Annotated[str, typer.Option(help="The task's data folder.")],
    split: Annotated[str, typer.Option(help="Split to evaluate (train, val or test).")] = "test",
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint folder in RUN (default: checkpoint-best, else -latest).")] = None,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
) -> None:
    """Re-evaluate a fine-tuned checkpoint; prints the task's metrics as JSON.

    Example: infmae evaluate runs/sirst-tiny --data ../shared/data/sirst --split test
    """
    import json

    from infmae.finetune import evaluate_run

    metrics = _guard(evaluate_run, run, data, split=split, checkpoint=checkpoint, device=device)
    typer.echo(json.dumps(metrics, indent=2, default=str))


@infmae_app.command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder of `infmae finetune`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the maps / overlays.")],
    save_json: Annotated[bool, typer.Option("--save-json", help="Also write the raw predictions as JSON (task-specific).")] = False,
    checkpoint: Annotated[str | None, typer.Option(help="Checkpoint folder in RUN (default: checkpoint-best, else -latest).")] = None,
    device: Annotated[str, typer.Option(help="auto, cuda or cpu.")] = "auto",
) -> None:
    """Run a fine-tuned model on images: probability maps, label maps or boxes, with overlays.

    Example: infmae predict runs/sirst-tiny frame1.png frame2.png --out preds
    """
    from infmae.finetune import predict_run

    kwargs = {"save_json": True} if save_json else {}
    paths = _guard(predict_run, run, images, out, checkpoint=checkpoint, device=device, **kwargs)
    typer.echo(f"wrote {len(paths)} files to {out}")


@infmae_app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of `infmae finetune` (with results.json).")],
    split: Annotated[str | None, typer.Option(help="Split to show (default: test, else val).")] = None,
) -> None:
    """Print a paper-style markdown table, one row per run.

    Example: infmae compare runs/sirst-scratch runs/sirst-iam
    """
    from infmae.finetune import compare_runs

    typer.echo(_guard(compare_runs, runs, split=split))


def main() -> None:  # pragma: no cover - convenience for `python cli.py`
    prog = Path(sys.argv[0]).name
    (infmae_app if prog.startswith("infmae") else inf30_app)()


if __name__ == "__main__":  # pragma: no cover
    main()
