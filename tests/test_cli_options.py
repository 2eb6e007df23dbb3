"""Every field of the options dataclasses (inf30's and infmae's) is reachable from the CLI, with the
dataclass's default and help (the CLI takes both from the field, ``cli.opt``); a build and a pre-training
run with a non-default value for every option record exactly those values."""

from __future__ import annotations

import dataclasses
import inspect
import json
import operator
from pathlib import Path

import click
import pytest
import typer.main
from typer.testing import CliRunner

from cli import csv_items, inf30_app, infmae_app, mb_to_bytes
from inf30.build import BuildOptions
from inf30.entropy import EntropyOptions
from inf30.options import default_of, help_of
from inf30.publish import PublishOptions
from inf30.report import ReportOptions
from inf30.sample import SampleOptions
from inf30.scrape.options import ScrapeOptions
from infmae.convert import convert_checkpoint
from infmae.export import export_encoder
from infmae.finetune import compare_runs, evaluate_run, predict_run
from infmae.options import (
    CompareOptions,
    ConvertOptions,
    EvaluateOptions,
    ExportOptions,
    FinetuneConfig,
    PredictOptions,
    PretrainConfig,
    VisualizeOptions,
    parse_assignments,
)
from infmae.pack import PackOptions
from infmae.visualize import visualize_images


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in csv_items(text))


# (command, options class) -> {field: (CLI parameter, how the command turns the CLI value into the field's)};
# a field not listed is the parameter of the same name, taken as it is
CASES: dict[tuple[str, type], dict[str, tuple[str, object]]] = {
    ("build", BuildOptions): {
        "agc_percentiles": ("agc", _floats), "hashes": ("hashes", csv_items), "progress": ("quiet", operator.not_),
    },
    ("scrape", ScrapeOptions): {
        "rate": ("rate", lambda v: v or None), "backoff_base": ("backoff", None), "allow_hosts": ("allow_host", list),
        "include": ("include", list), "exclude": ("exclude", list), "respect_robots": ("robots", None),
        "max_image_bytes": ("max_image_mb", mb_to_bytes), "max_archive_bytes": ("max_archive_mb", mb_to_bytes),
        "max_page_bytes": ("max_page_mb", mb_to_bytes),
    },
    ("publish", PublishOptions): {"progress": ("quiet", operator.not_)},
    ("report", ReportOptions): {"samples_per_source": ("samples", None), "progress": ("quiet", operator.not_)},
    ("entropy", EntropyOptions): {},
    ("sample", SampleOptions): {},
}
#: Fields deliberately not on the command line, and why.
NOT_ON_CLI = {(PublishOptions, "token"): "a secret: HF_TOKEN or `hf auth login`, never an argument (ps, shell history)"}


def _params(app, command: str) -> dict[str, click.Parameter]:
    group = typer.main.get_command(app)
    return {p.name: p for p in group.commands[command].params}


def _fields():
    for (command, cls), renames in CASES.items():
        for f in dataclasses.fields(cls):
            if (cls, f.name) not in NOT_ON_CLI:
                yield pytest.param(command, cls, f.name, renames.get(f.name, (f.name, None)),
                                   id=f"{command}-{f.name}")


@pytest.mark.parametrize(("command", "cls", "name", "mapping"), list(_fields()))
def test_every_field_is_an_option_with_the_dataclass_default(command, cls, name, mapping):
    param_name, convert = mapping
    params = _params(inf30_app, command)
    assert param_name in params, f"{cls.__name__}.{name} is not reachable from `inf30 {command}`"
    param = params[param_name]
    value = param.default
    if convert is not None:
        value = convert(value)
    assert value == default_of(cls, name)
    assert help_of(cls, name), f"{cls.__name__}.{name} has no help text"
    if convert is None:
        assert param.help == help_of(cls, name)


def test_every_field_has_help_text():
    missing = [f"{cls.__name__}.{f.name}" for (_c, cls) in CASES for f in dataclasses.fields(cls)
               if not help_of(cls, f.name)]
    assert missing == []


def test_fields_kept_off_the_cli_exist():
    """The exceptions name real fields (a renamed field must not leave a stale exception behind)."""
    for cls, name in NOT_ON_CLI:
        default_of(cls, name)
        assert name not in _params(inf30_app, "publish")


def test_pack_options_are_reachable_from_infmae_pack():
    """``infmae pack`` (PackOptions): every field but ``progress`` (``--quiet``) is a parameter of its name,
    whose default is the field's or None (the command then keeps the dataclass default)."""
    params = _params(infmae_app, "pack")
    for f in dataclasses.fields(PackOptions):
        if f.name == "progress":
            assert params["quiet"].default is (not default_of(PackOptions, "progress"))
        else:
            assert params[f.name].default in (None, default_of(PackOptions, f.name)), f.name


def test_build_records_every_option_given_on_the_command_line(frames_folder, tmp_path: Path):
    """A real build with a non-default value for every BuildOptions field: build.json's options are those
    values (so each flag reaches its field, not only its default)."""
    src = frames_folder(4)
    out = tmp_path / "out"
    args = ["build", str(src), "--out", str(out), "--workers", "1", "--video-every", "2.5", "--min-size", "5",
            "--min-side", "3", "--agc", "2,98", "--max-pixels", "123456789", "--shard", "0/1", "--drop-pseudocolor",
            "--no-dedupe", "--hashes", "phash,dhash", "--part-size", "7", "--max-archive-bytes", "1000000",
            "--max-archive-files", "99", "--max-archive-depth", "2", "--quiet"]
    res = CliRunner().invoke(inf30_app, args)
    assert res.exit_code == 0, res.output
    got = json.loads((out / "build.json").read_text())["options"]
    want = {"workers": 1, "video_every": 2.5, "min_size": 5, "min_side": 3, "agc_percentiles": [2.0, 98.0],
            "max_pixels": 123456789, "shard": "0/1", "drop_pseudocolor": True, "dedupe": False,
            "hashes": ["phash", "dhash"], "progress": False, "part_size": 7, "max_archive_bytes": 1000000,
            "max_archive_files": 99, "max_archive_depth": 2}
    # every field is given above, but the Ray backend's (a Ray cluster: tests/test_distribute.py starts one)
    assert set(want) | {"distributor", "ray_address"} == {f.name for f in dataclasses.fields(BuildOptions)}
    assert {k: got[k] for k in want} == want
    for k, v in want.items():
        assert v != default_of(BuildOptions, k) and not (isinstance(v, list) and tuple(v) == default_of(BuildOptions, k)), k


# ---------------------------------------------------------------------------------------------- infmae
def _assignments(values: list[str]) -> dict:
    return parse_assignments(values, "--x")


INFMAE_CASES: dict[tuple[str, type], dict[str, tuple[str, object]]] = {
    ("pretrain", PretrainConfig): {"model_overrides": ("model_override", _assignments),
                                   "progress": ("quiet", operator.not_)},
    ("finetune", FinetuneConfig): {"task_options": ("task_option", _assignments),
                                   "progress": ("quiet", operator.not_)},
    ("visualize", VisualizeOptions): {},
    ("export", ExportOptions): {},
    ("convert", ConvertOptions): {},
    ("pack", PackOptions): {"progress": ("quiet", operator.not_)},
    ("evaluate", EvaluateOptions): {},
    ("predict", PredictOptions): {},
    ("compare", CompareOptions): {},
}
#: Fields with a default in the dataclass that the command line requires anyway, and why.
REQUIRED_ON_CLI = {(FinetuneConfig, "task"): "the TASK argument: a fine-tuning run names its task"}


def _infmae_fields():
    for (command, cls), renames in INFMAE_CASES.items():
        for f in dataclasses.fields(cls):
            yield pytest.param(command, cls, f, renames.get(f.name, (f.name, None)), id=f"{command}-{f.name}")


@pytest.mark.parametrize(("command", "cls", "field", "mapping"), list(_infmae_fields()))
def test_every_infmae_field_is_an_option_with_the_dataclass_default(command, cls, field, mapping):
    """A field without a default (--data, --out) is a required option; every other one an option whose
    default is the field's (through the command's conversion) with the field's help."""
    param_name, convert = mapping
    params = _params(infmae_app, command)
    assert param_name in params, f"{cls.__name__}.{field.name} is not reachable from `infmae {command}`"
    param = params[param_name]
    assert help_of(cls, field.name), f"{cls.__name__}.{field.name} has no help text"
    if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
        assert param.required, f"{cls.__name__}.{field.name} has no default: the option must be required"
    elif (cls, field.name) in REQUIRED_ON_CLI:
        assert param.required and param.param_type_name == "argument"
    else:
        assert not param.required
        value = param.default if convert is None else convert(param.default)
        assert value == default_of(cls, field.name)
    if convert is None:
        assert param.help == help_of(cls, field.name)


def test_the_library_functions_default_as_their_options_dataclasses():
    """``infmae visualize/export/convert/evaluate/predict/compare`` call a library function with the
    dataclass's fields as keywords: the function's own defaults are the same values (one default, not two
    that can drift)."""
    for fn, cls in ((visualize_images, VisualizeOptions), (export_encoder, ExportOptions),
                    (convert_checkpoint, ConvertOptions), (evaluate_run, EvaluateOptions),
                    (predict_run, PredictOptions), (compare_runs, CompareOptions)):
        sig = inspect.signature(fn).parameters
        for f in dataclasses.fields(cls):
            assert sig[f.name].default == default_of(cls, f.name), (fn.__name__, f.name)


def test_assignments_parse_json_values_and_refuse_malformed_items():
    assert parse_assignments(["depth=4", "masking=random", "scale=[0.5, 2]", "on=true", "name=a=b"], "--x") == {
        "depth": 4, "masking": "random", "scale": [0.5, 2], "on": True, "name": "a=b"}
    from inf30.errors import UsageError

    for bad in (["depth"], ["=4"], ["a b=1"], ["depth=1", "depth=2"]):
        with pytest.raises(UsageError, match="--x"):
            parse_assignments(bad, "--x")


def _one_line_exit_2(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[0]


@pytest.mark.parametrize(("override", "words"), [
    ("no_such_option=1", "no_such_option: not a model option"),
    ("depth", "expected KEY=VALUE"),
    ("masking=bogus", "unknown masking"),
])
def test_bad_model_overrides_exit_2_before_any_work(frames_folder, tmp_path: Path, override: str, words: str):
    run = tmp_path / "run"
    res = CliRunner().invoke(infmae_app, ["pretrain", "--data", str(frames_folder(4)), "--out", str(run),
                                          "--preset", "infmae_tiny", "--device", "cpu", "--model-override", override])
    assert words in _one_line_exit_2(res)
    assert not run.exists()


def test_layer_decay_needs_the_multiscale_encoder(frames_folder, tmp_path: Path):
    run = tmp_path / "run"
    res = CliRunner().invoke(infmae_app, ["pretrain", "--data", str(frames_folder(4)), "--out", str(run),
                                          "--preset", "mae_base", "--device", "cpu", "--layer-decay", "0.9"])
    assert "--layer-decay needs the multiscale encoder" in _one_line_exit_2(res)
    assert not run.exists()


@pytest.mark.parametrize(("task", "extra", "words"), [
    ("irstd", ["--task-option", "no_such=1"], "irstd has no such option"),
    ("segment", ["--task-option", "head=bogus"], "unknown segmentation head"),
    ("segment", ["--head", "fcn", "--task-option", "head=upernet"], "disagree"),
    ("irstd", ["--task-option", "channels"], "expected KEY=VALUE"),
])
def test_bad_task_options_exit_2_before_any_work(sirst_dir: Path, tmp_path: Path, task: str, extra: list[str],
                                                 words: str):
    run = tmp_path / "run"
    res = CliRunner().invoke(infmae_app, ["finetune", task, "--data", str(sirst_dir), "--out", str(run),
                                          "--device", "cpu", *extra])
    assert words in _one_line_exit_2(res)
    assert not run.exists()


#: PretrainConfig fields a one-process CPU run cannot take another value for (the rest are all given below).
PRETRAIN_LEFT_AT_DEFAULT = {"data", "out", "compile", "nnodes", "node_rank", "master_addr", "master_port"}


def test_pretrain_records_every_option_given_on_the_command_line(frames_folder, tmp_path: Path):
    """A real one-step infmae_tiny run with a non-default value for every other PretrainConfig field: the
    checkpoint's train_config.json holds exactly those values (each flag reaches its field)."""
    import torch

    torch.set_num_threads(1)
    run = tmp_path / "run"
    want = {"preset": "infmae_tiny", "epochs": 2, "warmup_epochs": 0.5, "batch": 4, "blr": 2e-4, "lr": 1e-3,
            "weight_decay": 0.01, "layer_decay": 0.9, "accum": 2, "input_size": 32, "mask_stride": 2,
            "norm_pix_loss": True, "model_overrides": {"decoder_depth": 1}, "precision": "fp32", "workers": 0,
            "threads": 1, "device": "cpu", "nproc": 1, "seed": 3, "save_every": 0, "latest_every": 0,
            "vis_every": 0, "vis_count": 2, "log_every": 1, "max_steps": 1, "max_minutes": 30.0,
            "deterministic": True, "loader": "decode", "schedule": "poly", "min_lr": 1e-6, "drop_path": 0.1,
            "tensorboard": False, "progress": False}
    assert set(want) | PRETRAIN_LEFT_AT_DEFAULT == {f.name for f in dataclasses.fields(PretrainConfig)}
    args = ["pretrain", "--data", str(frames_folder(4)), "--out", str(run), "--preset", "infmae_tiny",
            "--epochs", "2", "--warmup-epochs", "0.5", "--batch", "4", "--blr", "2e-4", "--lr", "1e-3",
            "--weight-decay", "0.01", "--layer-decay", "0.9", "--accum", "2", "--input-size", "32",
            "--mask-stride", "2", "--norm-pix-loss", "--model-override", "decoder_depth=1", "--precision", "fp32",
            "--workers", "0", "--threads", "1", "--device", "cpu", "--nproc", "1", "--seed", "3",
            "--save-every", "0", "--latest-every", "0", "--vis-every", "0", "--vis-count", "2", "--log-every", "1",
            "--max-steps", "1", "--max-minutes", "30", "--deterministic", "--loader", "decode", "--schedule", "poly",
            "--min-lr", "1e-6", "--drop-path", "0.1", "--no-tensorboard", "--quiet"]
    res = CliRunner().invoke(infmae_app, args)
    assert res.exit_code == 0, res.output
    got = json.loads((run / "checkpoint-latest" / "train_config.json").read_text())["train"]
    assert {k: got[k] for k in want} == want
    for k, v in want.items():
        assert v != default_of(PretrainConfig, k), k
    assert not (run / "tb").exists()  # --no-tensorboard reached the engine, not only the config


#: FinetuneConfig fields a one-process CPU run from scratch cannot take another value for (the rest: below).
FINETUNE_LEFT_AT_DEFAULT = {"data", "out", "task", "init", "compile", "nnodes", "node_rank", "master_addr",
                            "master_port"}


def test_finetune_records_every_option_given_on_the_command_line(sirst_dir: Path, tmp_path: Path):
    """A real one-step irstd run with a non-default value for every other FinetuneConfig field: the
    checkpoint's train_config.json holds exactly those values."""
    import torch
    from conftest import mini_sirst

    torch.set_num_threads(1)
    data, run = mini_sirst(sirst_dir, tmp_path / "sirst", n_train=8, n_val=2, n_test=0), tmp_path / "run"
    want = {"preset": "infmae_tiny", "task_options": {"channels": 16, "scale": [0.8, 1.2]}, "epochs": 2,
            "warmup_epochs": 0.5, "batch": 4, "lr": 2e-3, "min_lr": 1e-6, "weight_decay": 0.01, "layer_decay": 0.9,
            "drop_path": 0.1, "schedule": "poly", "accum": 2, "input_size": 64, "precision": "fp32", "workers": 0,
            "threads": 1, "device": "cpu", "nproc": 1, "seed": 3, "save_every": 1, "latest_every": 1,
            "log_every": 2, "eval_every": 2, "vis_count": 1, "max_steps": 1, "max_minutes": 30.0,
            "deterministic": True, "tensorboard": False, "progress": False}
    assert set(want) | FINETUNE_LEFT_AT_DEFAULT == {f.name for f in dataclasses.fields(FinetuneConfig)}
    args = ["finetune", "irstd", "--data", str(data), "--out", str(run), "--preset", "infmae_tiny",
            "--task-option", "channels=16", "--task-option", "scale=[0.8, 1.2]", "--epochs", "2",
            "--warmup-epochs", "0.5", "--batch", "4", "--lr", "2e-3", "--min-lr", "1e-6", "--weight-decay", "0.01",
            "--layer-decay", "0.9", "--drop-path", "0.1", "--schedule", "poly", "--accum", "2", "--input-size", "64",
            "--precision", "fp32", "--workers", "0", "--threads", "1", "--device", "cpu", "--nproc", "1",
            "--seed", "3", "--save-every", "1", "--latest-every", "1", "--log-every", "2", "--eval-every", "2",
            "--vis-count", "1", "--max-steps", "1", "--max-minutes", "30", "--deterministic", "--no-tensorboard",
            "--quiet"]
    res = CliRunner().invoke(infmae_app, args)
    assert res.exit_code == 0, res.output
    got = json.loads((run / "checkpoint-latest" / "train_config.json").read_text())["train"]
    assert {k: got[k] for k in want} == want
    for k, v in want.items():
        assert v != default_of(FinetuneConfig, k), k
    assert not (run / "tb").exists()


def test_pack_records_every_option_given_on_the_command_line(frames_folder, tmp_path: Path):
    """A real `infmae pack` of 4 real frames with a non-default value for every PackOptions field: pack.json
    holds the ones that shape the pack, the shards follow them, --shard took its own lock folder and --quiet
    drew no bar (--workers 0, all cores, never changes the pack and is not recorded)."""
    import numpy as np
    import pyarrow.parquet as pq

    out = tmp_path / "pack"
    want = {"short_side": 32, "shard": "0/1", "images_per_shard": 3, "workers": 0, "progress": False}
    assert set(want) == {f.name for f in dataclasses.fields(PackOptions)}
    res = CliRunner().invoke(infmae_app, ["pack", str(frames_folder(4)), "--out", str(out), "--short-side", "32",
                                          "--shard", "0/1", "--images-per-shard", "3", "--workers", "0", "--quiet"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "pack.json").read_text())
    assert (meta["short_side"], meta["images_per_shard"], meta["images"]) == (32, 3, 4)
    assert sorted(p.name for p in (out / "shards").glob("*.parquet")) == ["00000.parquet", "00001.parquet"]
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert (np.minimum(index["height"], index["width"]) == 32).all()  # every real frame is larger: resized
    assert (out / ".work" / "shard-0-of-1").is_dir()
    assert "img/s]" not in res.output and len(res.output.strip().splitlines()) == 2  # the summary alone
    for k, v in want.items():
        assert v != default_of(PackOptions, k), k


@pytest.mark.parametrize(("args", "words", "made"), [
    (["pack", "SRC", "--out", "OUT", "--workers", "-1"], "--workers must be 0 (all cores) or more", "OUT"),
    (["evaluate", "RUN", "--data", "SRC", "--split", "bogus"], "--split must be one of train, val, test", None),
    (["evaluate", "RUN", "--data", "SRC", "--device", "bogus"], "--device 'bogus' is not a device", None),
    (["predict", "RUN", "IMG", "--out", "OUT", "--device", "bogus"], "--device 'bogus' is not a device", "OUT"),
    (["compare", "RUN", "--split", "train"], "--split must be one of val, test", None),
])
def test_bad_evaluate_predict_compare_pack_options_exit_2_before_any_work(frames_folder, tmp_path: Path,
                                                                         args: list[str], words: str, made):
    """Each command checks its options dataclass first: one line, exit 2, nothing read or written (RUN does
    not even exist: the options are refused before it is looked at)."""
    src = frames_folder(4)
    names = {"SRC": str(src), "OUT": str(tmp_path / "out"), "RUN": str(tmp_path / "run"),
             "IMG": str(next(src.iterdir()))}
    res = CliRunner().invoke(infmae_app, [names.get(a, a) for a in args])
    assert words in _one_line_exit_2(res)
    assert not (tmp_path / "out").exists() and not (tmp_path / "run").exists()


def test_library_functions_check_their_options_first(tmp_path: Path):
    """Called from Python, evaluate_run / predict_run / compare_runs refuse a bad option (UsageError) before
    looking at the run folder (which does not exist here)."""
    from inf30.errors import UsageError

    run = tmp_path / "run"
    with pytest.raises(UsageError, match="--split"):
        evaluate_run(run, tmp_path, split="validation")
    with pytest.raises(UsageError, match="--device"):
        predict_run(run, [], tmp_path / "pred", device="gpu0")
    with pytest.raises(UsageError, match="--split"):
        compare_runs([run], split="testing")
    assert not (tmp_path / "pred").exists()


def test_importing_the_cli_and_building_its_commands_imports_no_torch():
    """`import cli` and building every command (as `--help` does) read only the torch-free options modules:
    a real interpreter, so that modules imported by other tests cannot hide an import."""
    import subprocess
    import sys

    code = ("import sys, typer.main, cli; [typer.main.get_command(a) for a in (cli.infmae_app, cli.inf30_app)]; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
