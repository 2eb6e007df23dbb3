"""The Hugging Face Hub for InfMAE checkpoints: `from_pretrained` sources, `push_to_hub`, model cards.

A model repo holds exactly our checkpoint folder (``infmae.checkpoint``)::

    model.safetensors   weights (a full InfMAE, or the encoder alone for ``infmae export``)
    config.json         the model config (or the exported encoder's config, with the model config inside)
    README.md           model card: YAML metadata (library_name, license, tags) + how it was made

Downloads and uploads go through huggingface_hub (``hf_hub_download``, ``HfApi.upload_folder``), so its cache,
``revision``, ``token``, ``HF_ENDPOINT`` and offline mode (``HF_HUB_OFFLINE=1`` or ``local_files_only``) apply.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

from inf30.errors import JobFailed, UsageError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
CARD = "README.md"
CARD_MARKER = "<!-- written by infmae; edit freely: a later export or convert keeps an edited card -->"
REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


class HubError(JobFailed):
    """A Hub download or upload failed (one line, no token in it; exit 1)."""


def is_repo_id(name: str | os.PathLike) -> bool:
    """True for "org/name" that is not an existing local path."""
    s = str(name)
    return bool(REPO_ID.fullmatch(s)) and not Path(s).exists()


def resolve(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """A local checkpoint path as is, or the cached folder of a Hub repo's config.json + model.safetensors."""
    if not is_repo_id(name_or_path):
        path = Path(name_or_path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such checkpoint folder or file (nor a Hub repo id ORG/NAME)")
        return path
    from huggingface_hub import hf_hub_download

    repo_id = str(name_or_path)
    kwargs: dict[str, Any] = dict(repo_id=repo_id, revision=revision, cache_dir=cache_dir, token=token,
                                  local_files_only=local_files_only)  # fmt: skip
    try:
        config = hf_hub_download(filename=CONFIG, **kwargs)
        hf_hub_download(filename=WEIGHTS, **kwargs)
    except Exception as exc:  # noqa: BLE001 - every Hub/network/cache failure becomes one clean line
        raise HubError(f"cannot get {repo_id}{'@' + revision if revision else ''} from the Hub (and there is no "
                       f"such local path): {_one_line(exc, token)}") from None  # fmt: skip
    return Path(config).parent


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    commit_message: str = "Upload InfMAE weights",
) -> str:
    """Create (or reuse) the model repo `repo_id` and upload `folder`'s files (hidden files and the folder
    lock excluded); returns the repo URL. The token only travels in the Authorization header."""
    from huggingface_hub import HfApi

    from inf30.publish import resolve_token

    check_repo_id(repo_id)
    token = resolve_token(token)
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="model", private=private or None, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="model", folder_path=str(folder), revision=revision,
                          commit_message=commit_message, ignore_patterns=[".*", "**/.*"])  # fmt: skip
    except Exception as exc:  # noqa: BLE001
        raise HubError(f"push to {repo_id} failed: {_one_line(exc, token)}; the local folder {folder} is "
                       "complete: retry the push") from None  # fmt: skip
    return str(url)


def push_model(model: Any, repo_id: str, **kwargs: Any) -> str:
    """`model.push_to_hub`: save the model (+ a card) to a temporary folder and push it."""
    from .checkpoint import save_model

    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="infmae-push-") as tmp:
        save_model(model, tmp)
        write_card(Path(tmp), model_card(model.config, title=f"InfMAE ({model.config.get('preset')})"))
        return push_folder(tmp, repo_id, **kwargs)


def check_repo_id(repo_id: str | None) -> str:
    if not repo_id or not REPO_ID.fullmatch(repo_id):
        raise UsageError(f"--push must be a Hub repo id ORG/NAME, got {repo_id!r}")
    return repo_id


def check_push(repo_id: str) -> str:
    """Before any work: a valid repo id and a token (given, HF_TOKEN or the saved login); returns the token."""
    from inf30.publish import resolve_token

    check_repo_id(repo_id)
    return resolve_token()


def _one_line(exc: Exception, token: str | bool | None) -> str:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    text = (getattr(exc, "server_message", None) or str(exc) or exc.__class__.__name__).strip()
    first = text.splitlines()[0] if text else exc.__class__.__name__
    if isinstance(token, str) and token:
        first = first.replace(token, "***")
    return f"HTTP {status}: {first}" if status else f"{exc.__class__.__name__}: {first}"


# ------------------------------------------------------------------------------------------------ cards


def model_card(
    config: dict[str, Any], *, title: str, source: dict[str, Any] | None = None, body: str = ""
) -> str:
    """A model card: YAML metadata (library_name, license, tags, source file + sha256) and a short text."""
    import yaml

    meta: dict[str, Any] = {
        "library_name": "infmae",
        "license": "other",
        "license_name": "same-as-source",
        "tags": ["infrared", "masked-image-modeling", "infmae", "image-feature-extraction"],
        "pipeline_tag": "image-feature-extraction",
    }
    if source:
        meta["source_file"] = source.get("file")
        meta["source_sha256"] = source.get("sha256")
    model_cfg = config.get("model", config)
    pre = model_cfg.get("preprocessing") or config.get("normalization") or {}
    lines = [
        "---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", CARD_MARKER, "", f"# {title}", "",
        "Loading (library `infmae` of this repository's toolkit):", "", "```python",
        "from infmae import InfMAE, InfMAEBackbone",
        *(["model = InfMAE.from_pretrained('ORG/NAME')            # full masked autoencoder"]
          if "decoder_dim" in config else []),
        "backbone = InfMAEBackbone.from_pretrained('ORG/NAME')  # F1..F4 feature pyramid", "```", "",
        f"Preprocessing: gray infrared replicated to 3 channels, x / 255, mean {pre.get('mean')}, "
        f"std {pre.get('std')}; input size {pre.get('input_size')}, patch size {pre.get('patch_size', 16)}.",
        "", "The licence of the weights is the licence of their source (see below); the `license: other` field "
        "says so.", "", "",
    ]
    return "\n".join(lines) + (body.rstrip() + "\n" if body else "")


def write_card(folder: Path, text: str) -> bool:
    """Write folder/README.md unless the user replaced ours with their own card (no marker): True if written."""
    from inf30.atomic import atomic_path

    path = folder / CARD
    if path.exists() and CARD_MARKER not in path.read_text(errors="replace"):
        return False
    with atomic_path(path) as tmp:
        Path(tmp).write_text(text)
    return True
