"""Every field of the inf30 options dataclasses is reachable from the CLI, with the dataclass's default and
help (the CLI takes both from the field, ``cli.opt``); a build run with a non-default value for every
option records exactly those values in build.json."""

from __future__ import annotations

import dataclasses
import json
import operator
import shutil
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
from infmae.pack import PackOptions


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


def test_build_records_every_option_given_on_the_command_line(sirst_dir: Path, tmp_path: Path):
    """A real build with a non-default value for every BuildOptions field: build.json's options are those
    values (so each flag reaches its field, not only its default)."""
    src = tmp_path / "src"
    src.mkdir()
    for p in sorted((sirst_dir / "images").glob("*.png"))[:3]:
        shutil.copy(p, src / p.name)
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
    assert set(want) == {f.name for f in dataclasses.fields(BuildOptions)}  # every field is given above
    assert {k: got[k] for k in want} == want
    for k, v in want.items():
        assert v != default_of(BuildOptions, k) and not (isinstance(v, list) and tuple(v) == default_of(BuildOptions, k)), k
