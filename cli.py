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
    distributor: str = opt(BuildOptions, "distributor"),
    ray_address: str | None = opt(BuildOptions, "ray_address"),
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
        distributor=distributor,
        ray_address=ray_address,
    )
    _guard(opts.validate)  # bad options: exit 2 before any work, before --out exists
    summary = _guard(build_sources, list(sources or []), out, opts, config=config, patterns=glob_)
    typer.echo(summary.table())


@inf30_app.command("merge")
def merge_cmd(
    dirs: Annotated[list[Path], typer.Argument(help="Shard output folders from `inf30 build --shard`.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged dataset folder.")],
    dedupe: Annotated[bool, typer.Option("--dedupe/--no-dedupe", help="Run near-duplicate removal across shards.")] = True,
    distributor: str = opt(BuildOptions, "distributor", help="Where the cross-shard near-duplicate stage's features and verification run: local (processes) or ray (a Ray cluster)."),
    ray_address: str | None = opt(BuildOptions, "ray_address"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Combine shard outputs into one dataset (cross-shard exact duplicates dropped), then remove
    near-duplicates across shards (features and verification on --distributor).

    Example: inf30 merge shards/0 shards/1 shards/2 --out inf30 --distributor ray --ray-address HEAD:6379
    """
    from pipelines.build import merge_shards

    summary = _guard(merge_shards, dirs, out, dedupe=dedupe, progress=not quiet, distributor=distributor,
                     ray_address=ray_address)
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


# --- inf30 dedupe ---
# Every DedupeOptions field and every SceneParams field (scene_params) is an option, declared from the field
# (cli.opt: the dataclass holds the default and the help).
from inf30.dedupe import DedupeOptions  # noqa: E402
from inf30.scene import SceneParams  # noqa: E402


@inf30_app.command("dedupe")
def dedupe_cmd(
    dataset: Annotated[Path, typer.Argument(help="A built dataset folder (with manifest.parquet).")],
    hashes: str = opt(DedupeOptions, "hashes", to_cli=csv_text),
    hash_threshold: int = opt(DedupeOptions, "hash_threshold"),
    copy_corr: float = opt(DedupeOptions, "copy_corr"),
    scene: bool = opt(DedupeOptions, "scene", "--scene/--no-scene"),
    neighbors: int = opt(DedupeOptions, "neighbors"),
    votes: int = opt(DedupeOptions, "votes"),
    vote_keypoints: int = opt(DedupeOptions, "vote_keypoints"),
    vote_index_keypoints: int = opt(DedupeOptions, "vote_index_keypoints"),
    window: int = opt(DedupeOptions, "window"),
    expand: int = opt(DedupeOptions, "expand"),
    lone_pairs: int = opt(DedupeOptions, "lone_pairs"),
    lone_crops: int = opt(DedupeOptions, "lone_crops"),
    min_similarity: float = opt(DedupeOptions, "min_similarity"),
    hops: int = opt(DedupeOptions, "hops"),
    vocab_size: int = opt(DedupeOptions, "vocab_size"),
    order: str = opt(DedupeOptions, "order", to_cli=csv_text),
    workers: int = opt(DedupeOptions, "workers"),
    distributor: str = opt(DedupeOptions, "distributor"),
    ray_address: str | None = opt(DedupeOptions, "ray_address"),
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
    photo_corr: float = opt(SceneParams, "photo_corr"),
    photo_inliers: int = opt(SceneParams, "photo_inliers"),
    crop_corr: float = opt(SceneParams, "crop_corr"),
    strong_inliers: int = opt(SceneParams, "strong_inliers"),
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
    distributor: str = opt(EntropyOptions, "distributor"),
    ray_address: str | None = opt(EntropyOptions, "ray_address"),
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
                    progress=not quiet, distributor=distributor, ray_address=ray_address)
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
# The infmae commands take each option's default and help from its options dataclass field (`opt`), as the
# inf30 commands do: PretrainConfig, FinetuneConfig, VisualizeOptions, ExportOptions, ConvertOptions,
# PackOptions, EvaluateOptions, PredictOptions and CompareOptions (infmae.options, which imports no torch)
# are the one source of truth; tests/test_cli_options.py checks that every field is reachable here with its
# default.
import dataclasses  # noqa: E402
from typing import Any  # noqa: E402

from infmae.options import (  # noqa: E402
    CompareOptions,
    ConvertOptions,
    EvaluateOptions,
    ExportOptions,
    FinetuneConfig,
    PackOptions,
    PredictOptions,
    PretrainConfig,
    VisualizeOptions,
    format_assignments,
    parse_assignments,
)


def config_from(cls: type, params: dict[str, Any], **given: Any) -> Any:
    """``cls`` from a command's parameters named as its fields (``locals()``), plus ``given``: the fields the
    command renames or converts (``--quiet`` -> ``progress``, ``--model-override`` -> ``model_overrides``)."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in params.items() if k in names and k not in given}, **given)


# --- infmae pretrain / visualize / export ---
_P = PretrainConfig


@infmae_app.command("pretrain")
def pretrain_cmd(
    data: Annotated[str, typer.Option(help=help_of(_P, "data"))],
    out: Annotated[Path, typer.Option("--out", "-o", help=help_of(_P, "out"))],
    preset: str = opt(_P, "preset"),
    epochs: int = opt(_P, "epochs"),
    warmup_epochs: float = opt(_P, "warmup_epochs"),
    batch: int = opt(_P, "batch"),
    blr: float = opt(_P, "blr"),
    lr: float | None = opt(_P, "lr"),
    weight_decay: float = opt(_P, "weight_decay"),
    layer_decay: float | None = opt(_P, "layer_decay"),
    accum: int = opt(_P, "accum"),
    input_size: int = opt(_P, "input_size"),
    mask_stride: int = opt(_P, "mask_stride"),
    norm_pix_loss: bool = opt(_P, "norm_pix_loss"),
    model_override: list[str] = opt(_P, "model_overrides", "--model-override", to_cli=format_assignments),
    precision: str = opt(_P, "precision"),
    compile: bool = opt(_P, "compile", "--compile"),
    workers: int = opt(_P, "workers"),
    threads: int = opt(_P, "threads"),
    device: str = opt(_P, "device"),
    nproc: int = opt(_P, "nproc"),
    nnodes: int = opt(_P, "nnodes"),
    node_rank: int = opt(_P, "node_rank"),
    master_addr: str = opt(_P, "master_addr"),
    master_port: int | None = opt(_P, "master_port"),
    seed: int = opt(_P, "seed"),
    save_every: int = opt(_P, "save_every"),
    latest_every: int = opt(_P, "latest_every"),
    vis_every: int = opt(_P, "vis_every"),
    vis_count: int = opt(_P, "vis_count"),
    log_every: int = opt(_P, "log_every"),
    max_steps: int | None = opt(_P, "max_steps"),
    max_minutes: float | None = opt(_P, "max_minutes"),
    deterministic: bool = opt(_P, "deterministic", "--deterministic"),
    loader: str = opt(_P, "loader"),
    schedule: str = opt(_P, "schedule"),
    min_lr: float = opt(_P, "min_lr"),
    drop_path: float = opt(_P, "drop_path"),
    tensorboard: bool = opt(_P, "tensorboard", "--tensorboard/--no-tensorboard"),
    quiet: bool = opt(_P, "progress", "--quiet", "-q", to_cli=no_progress, help="No progress bar."),
) -> None:
    """Pre-train InfMAE on a dataset (paper recipe); launches one worker per GPU; re-run to resume.

    Example: infmae pretrain --data inf30-demo --out runs/tiny --preset infmae_tiny --epochs 2 --batch 32 --input-size 96
    """
    params = dict(locals())
    from infmae.distributed import LaunchError
    from infmae.train import pretrain

    overrides = _guard(parse_assignments, model_override, "--model-override")
    cfg = config_from(PretrainConfig, params, out=str(out), model_overrides=overrides, progress=not quiet)
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
    input_size: int | None = opt(VisualizeOptions, "input_size"),
    device: str = opt(VisualizeOptions, "device"),
) -> None:
    """Reconstruct images with a checkpoint: original | visible patches | reconstruction | pasted.

    Example: infmae visualize runs/tiny/checkpoint-latest frame1.png frame2.jpg --out recon.png
    """
    from infmae.visualize import visualize_images

    opts = config_from(VisualizeOptions, locals())
    path = _guard(visualize_images, ckpt, [str(p) for p in images], out, **dataclasses.asdict(opts))
    typer.echo(f"wrote {path}")


@infmae_app.command("export")
def export_cmd(
    ckpt: Annotated[Path, typer.Argument(help="Checkpoint folder (e.g. RUN_DIR/checkpoint-latest).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the encoder (model.safetensors + config.json + README.md); other files in it are kept.")],
    push: str | None = opt(ExportOptions, "push", "--push"),
) -> None:
    """Write the pre-trained encoder alone (no decoder, no optimizer) for downstream use.

    Example: infmae export runs/base/checkpoint-0400 --out infmae-base-encoder --push me/infmae-base-encoder
    """
    from infmae.export import export_encoder

    opts = config_from(ExportOptions, locals())
    info = _guard(export_encoder, ckpt, out, **dataclasses.asdict(opts))
    typer.echo(f"wrote {info['path']} ({info['params']:,} encoder parameters)")
    if info.get("url"):
        typer.echo(f"pushed to {info['url']}")


# --- infmae convert ---
@infmae_app.command("convert")
def convert_cmd(
    ckpt: Annotated[Path, typer.Argument(help="The authors' InfMAE or ConvMAE checkpoint (.pth), e.g. checkpoint-399.pth.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder to write (model.safetensors + config.json + README.md + conversion.json).")],
    num_heads: int | None = opt(ConvertOptions, "num_heads"),
    decoder_heads: int | None = opt(ConvertOptions, "decoder_heads"),
    allow_unknown: bool = opt(ConvertOptions, "allow_unknown", "--allow-unknown"),
    push: str | None = opt(ConvertOptions, "push", "--push"),
) -> None:
    """Convert the published InfMAE (or ConvMAE) weights to this toolkit's format, loaded safely.

    Example: infmae convert checkpoint-399.pth --out infmae-base --push me/infmae-base
    """
    from infmae.convert import convert_checkpoint

    opts = config_from(ConvertOptions, locals())
    report = _guard(convert_checkpoint, ckpt, out, **dataclasses.asdict(opts))
    what = "encoder" if report.encoder_only else "model"
    typer.echo(f"wrote {out} ({report.kind} {what}, preset {report.config['preset']}; {len(report.mapped)} keys mapped, "
               f"{len(report.ignored)} ignored, {len(report.unknown)} unknown)")
    for note in report.notes:
        typer.echo(f"note: {note}")
    if report.url:
        typer.echo(f"pushed to {report.url}")


# --- infmae pack ---
@infmae_app.command("pack")
def pack_cmd(
    src: Annotated[str, typer.Argument(help="Any --data source of `infmae pretrain`: built Inf30 folder, published dataset, Hub id, image folder.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Pack folder to write (re-run to resume); PACK/ or DATASET/pack is used by `infmae pretrain`.")],
    short_side: int = opt(PackOptions, "short_side"),
    shard: str | None = opt(PackOptions, "shard"),
    images_per_shard: int = opt(PackOptions, "images_per_shard"),
    workers: int = opt(PackOptions, "workers"),
    quiet: bool = opt(PackOptions, "progress", "--quiet", "-q", to_cli=no_progress, help="No progress bar."),
) -> None:
    """Decode every image once into memory-mapped uint8 shards for the packed (on-device augmenting) loader.

    Example: infmae pack inf30 --out inf30/pack --short-side 256 ; infmae pretrain --data inf30 --out runs/base
    """
    opts = config_from(PackOptions, locals(), progress=not quiet)
    _guard(opts.validate)  # bad options: exit 2 before any work (and before torch is imported)
    from infmae.pack import pack

    summary = _guard(pack, src, out, opts)
    typer.echo(summary.table())


# --- infmae finetune / evaluate / predict / compare ---
_F = FinetuneConfig


@infmae_app.command("finetune")
def finetune_cmd(
    task: Annotated[str, typer.Argument(help=help_of(_F, "task"))],
    data: Annotated[str, typer.Option(help=help_of(_F, "data"))],
    out: Annotated[Path, typer.Option("--out", "-o", help=help_of(_F, "out"))],
    init: str = opt(_F, "init"),
    head: Annotated[str | None, typer.Option(help="Task head (segment: fcn or upernet; detect: faster_rcnn or cascade); the same as --task-option head=NAME.")] = None,
    task_option: list[str] = opt(_F, "task_options", "--task-option", to_cli=format_assignments),
    preset: str = opt(_F, "preset"),
    epochs: int | None = opt(_F, "epochs"),
    warmup_epochs: float = opt(_F, "warmup_epochs"),
    batch: int | None = opt(_F, "batch"),
    lr: float | None = opt(_F, "lr"),
    min_lr: float = opt(_F, "min_lr"),
    weight_decay: float | None = opt(_F, "weight_decay"),
    layer_decay: float | None = opt(_F, "layer_decay"),
    drop_path: float = opt(_F, "drop_path"),
    schedule: str | None = opt(_F, "schedule"),
    accum: int = opt(_F, "accum"),
    input_size: int | None = opt(_F, "input_size"),
    precision: str = opt(_F, "precision"),
    compile: bool = opt(_F, "compile", "--compile"),
    workers: int = opt(_F, "workers"),
    threads: int = opt(_F, "threads"),
    device: str = opt(_F, "device"),
    nproc: int = opt(_F, "nproc"),
    nnodes: int = opt(_F, "nnodes"),
    node_rank: int = opt(_F, "node_rank"),
    master_addr: str = opt(_F, "master_addr"),
    master_port: int | None = opt(_F, "master_port"),
    seed: int = opt(_F, "seed"),
    save_every: int = opt(_F, "save_every"),
    latest_every: int = opt(_F, "latest_every"),
    log_every: int = opt(_F, "log_every"),
    eval_every: int = opt(_F, "eval_every"),
    vis_count: int = opt(_F, "vis_count"),
    max_steps: int | None = opt(_F, "max_steps"),
    max_minutes: float | None = opt(_F, "max_minutes"),
    deterministic: bool = opt(_F, "deterministic", "--deterministic"),
    tensorboard: bool = opt(_F, "tensorboard", "--tensorboard/--no-tensorboard"),
    quiet: bool = opt(_F, "progress", "--quiet", "-q", to_cli=no_progress, help="No progress bar."),
) -> None:
    """Fine-tune InfMAE on a downstream task; evaluates every epoch, keeps the best checkpoint, writes
    results.json; re-run the same command to resume.

    Example: infmae finetune irstd --data ../shared/data/sirst --init runs/tiny --out runs/sirst-tiny --epochs 20
    """
    params = dict(locals())
    from infmae.distributed import LaunchError
    from infmae.finetune import finetune

    task_options = _guard(parse_assignments, task_option, "--task-option")
    if head is not None:
        if task_options.get("head", head) != head:
            fail(f"--head {head} and --task-option head={task_options['head']} disagree; give one")
        task_options["head"] = head
    cfg = config_from(FinetuneConfig, params, out=str(out), task_options=task_options, progress=not quiet)
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
    split: str = opt(EvaluateOptions, "split"),
    checkpoint: str | None = opt(EvaluateOptions, "checkpoint"),
    device: str = opt(EvaluateOptions, "device"),
) -> None:
    """Re-evaluate a fine-tuned checkpoint; prints the task's metrics as JSON.

    Example: infmae evaluate runs/sirst-tiny --data ../shared/data/sirst --split test
    """
    import json

    opts = config_from(EvaluateOptions, locals())
    _guard(opts.validate)  # bad options: exit 2 before any work
    from infmae.finetune import evaluate_run

    metrics = _guard(evaluate_run, run, data, **dataclasses.asdict(opts))
    typer.echo(json.dumps(metrics, indent=2, default=str))


@infmae_app.command("predict")
def predict_cmd(
    run: Annotated[Path, typer.Argument(help="A run folder of `infmae finetune`.")],
    images: Annotated[list[Path], typer.Argument(help="Image files.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the maps / overlays.")],
    save_json: bool = opt(PredictOptions, "save_json", "--save-json"),
    checkpoint: str | None = opt(PredictOptions, "checkpoint"),
    device: str = opt(PredictOptions, "device"),
) -> None:
    """Run a fine-tuned model on images: probability maps, label maps or boxes, with overlays.

    Example: infmae predict runs/sirst-tiny frame1.png frame2.png --out preds
    """
    opts = config_from(PredictOptions, locals())
    _guard(opts.validate)  # bad options: exit 2 before any work
    from infmae.finetune import predict_run

    paths = _guard(predict_run, run, images, out, **dataclasses.asdict(opts))
    typer.echo(f"wrote {len(paths)} files to {out}")


@infmae_app.command("compare")
def compare_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of `infmae finetune` (with results.json).")],
    split: str | None = opt(CompareOptions, "split"),
) -> None:
    """Print a paper-style markdown table, one row per run.

    Example: infmae compare runs/sirst-scratch runs/sirst-iam
    """
    opts = config_from(CompareOptions, locals())
    _guard(opts.validate)  # bad options: exit 2 before any work
    from infmae.finetune import compare_runs

    typer.echo(_guard(compare_runs, runs, **dataclasses.asdict(opts)))


def main() -> None:  # pragma: no cover - convenience for `python cli.py`
    prog = Path(sys.argv[0]).name
    (infmae_app if prog.startswith("infmae") else inf30_app)()


if __name__ == "__main__":  # pragma: no cover
    main()
