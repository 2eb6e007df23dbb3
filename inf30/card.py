"""The dataset card (README.md with YAML front matter) of a published Inf30 dataset.

The numbers come from the manifest itself (kept and dropped rows); figures written by `inf30 report`
(``DIR/report/*.png``) are copied next to the card and shown in it when they exist.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import pandas as pd
import yaml

from inf30.reasons import reason_kind
from inf30.report_tables import funnel_table

# Licence ids the Hub accepts (a subset of https://huggingface.co/docs/hub/repositories-licenses) that
# image datasets actually use; anything else becomes `other` with the per-source list.
HUB_LICENCES = {
    "apache-2.0", "mit", "bsd-2-clause", "bsd-3-clause", "cc0-1.0", "cc-by-2.0", "cc-by-2.5", "cc-by-3.0",
    "cc-by-4.0", "cc-by-sa-3.0", "cc-by-sa-4.0", "cc-by-nc-2.0", "cc-by-nc-3.0", "cc-by-nc-4.0",
    "cc-by-nd-4.0", "cc-by-nc-nd-3.0", "cc-by-nc-nd-4.0", "cc-by-nc-sa-2.0", "cc-by-nc-sa-3.0",
    "cc-by-nc-sa-4.0", "odbl", "odc-by", "pddl", "gpl-3.0", "lgpl-3.0", "openrail", "unknown",
}  # fmt: skip
_ALIASES = {"cc0": "cc0-1.0", "public-domain": "pddl", "apache": "apache-2.0", "apache2": "apache-2.0"}
SIZE_CATEGORIES = [
    (1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B"),
]  # fmt: skip


def hub_licence(text: str | None) -> str:
    """A free-text licence from a source config (``CC BY 4.0``) -> a Hub licence id, or ``other``."""
    if text is None or (isinstance(text, float) and pd.isna(text)) or not str(text).strip():
        return "unknown"
    key = re.sub(r"[\s_]+", "-", str(text).strip().lower())
    key = _ALIASES.get(key, key)
    return key if key in HUB_LICENCES else "other"


def size_category(n: int) -> str:
    """The Hub's ``size_categories`` bucket for ``n`` rows."""
    for limit, name in SIZE_CATEGORIES:
        if n < limit:
            return name
    return "n>1B"


@dataclass
class CardConfig:
    """One ``configs`` entry: a config name and the glob of its train shards."""

    name: str
    path: str
    rows: int
    description: str
    default: bool = False


@dataclass
class CardInputs:
    """Everything the card shows."""

    pretty_name: str
    kept: pd.DataFrame
    dropped: pd.DataFrame
    configs: list[CardConfig]
    total_bytes: int
    figures: list[str] = field(default_factory=list)
    repo_id: str | None = None


def licence_front_matter(kept: pd.DataFrame) -> tuple[dict, list[tuple[str, str, str]]]:
    """YAML licence fields and the per-source list ``(source, licence as given, Hub id)``."""
    per_source = []
    for source, group in kept.groupby("source", sort=True):
        given = group["licence"].dropna().unique().tolist()
        text = ", ".join(str(g) for g in given) if given else "not stated"
        ids = sorted({hub_licence(g) for g in given} or {"unknown"})
        per_source.append((str(source), text, ids[0] if len(ids) == 1 else "other"))
    ids = {hub for _, _, hub in per_source}
    if len(ids) == 1:
        return {"license": ids.pop()}, per_source
    return {"license": "other", "license_name": "inf30-per-source", "license_link": "LICENSE.md"}, per_source


def front_matter(inputs: CardInputs) -> dict:
    """The card's YAML metadata as a dict."""
    meta, _ = licence_front_matter(inputs.kept)
    meta.update(
        {
            "pretty_name": inputs.pretty_name,
            "task_categories": ["image-feature-extraction", "unconditional-image-generation"],
            "tags": ["infrared", "thermal", "self-supervised", "masked-image-modeling", "inf30"],
            "size_categories": [size_category(len(inputs.kept))],
            "configs": [
                {
                    "config_name": c.name,
                    "data_files": [{"split": "train", "path": c.path}],
                    **({"default": True} if c.default else {}),
                }
                for c in inputs.configs
            ],
        }
    )
    return meta


def _fmt(x: float | int | None, digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and pd.isna(x)):
        return "-"
    return f"{x:,.{digits}f}" if isinstance(x, float) else f"{x:,}"


def licence_markdown(per_source: list[tuple[str, str, str]]) -> str:
    """The per-source licence table (card section and LICENSE.md)."""
    lines = ["| source | licence (as given) | Hub id |", "|---|---|---|"]
    lines += [f"| {s} | {t} | `{h}` |" for s, t, h in per_source]
    return "\n".join(lines)


def _report_funnel(df: pd.DataFrame) -> str:
    """The report's funnel table (found -> decoded -> ... -> kept) as markdown."""
    try:
        tab = funnel_table(df)
    except (KeyError, ValueError, TypeError):  # an older/newer manifest the report does not read
        return ""
    head = "| source | " + " | ".join(tab.columns) + " |"
    rows = [f"| {name} | " + " | ".join(f"{int(v):,}" for v in row) + " |" for name, row in tab.iterrows()]
    return "\n".join([head, "|---" * (len(tab.columns) + 1) + "|", *rows])


def card_markdown(inputs: CardInputs) -> str:
    """The full README.md: YAML front matter, then the card body."""
    kept, dropped = inputs.kept, inputs.dropped
    _, per_source = licence_front_matter(kept)
    yaml_text = yaml.safe_dump(front_matter(inputs), sort_keys=False, allow_unicode=True)
    n_kept, n_drop = len(kept), len(dropped)
    ent = pd.to_numeric(kept["entropy"], errors="coerce")
    w, h = kept["width"].astype("float64"), kept["height"].astype("float64")
    load_name = inputs.repo_id or "path/to/this/folder"

    out = [f"---\n{yaml_text}---", f"# {inputs.pretty_name}", ""]
    out += [
        "Infrared (thermal) images for self-supervised pre-training (InfMAE), built with the InfMAE toolkit "
        "(`inf30 build`) and published with `inf30 publish`. Every image is 8-bit single-channel and "
        "content-addressed: `id` is the sha256 of its normalized pixels.",
        "",
        "## Load",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        f'ds = load_dataset("{load_name}", split="train")  # column `image` decodes to PIL (mode L)',
    ]
    for c in inputs.configs:
        if not c.default:
            out.append(f'load_dataset("{load_name}", "{c.name}", split="train")  # config `{c.name}`')
    out += ["```", "", "## Configs", "", "| config | rows | files | content |", "|---|---|---|---|"]
    out += [f"| `{c.name}` | {c.rows:,} | `{c.path}` | {c.description} |" for c in inputs.configs]
    out += [
        "",
        "Columns: `image` (the stored bytes, `datasets.Image`), `id`, `source`, `origin`, `width`, `height`, "
        "`entropy` (Shannon entropy in bits of the 8-bit image), the perceptual hashes (`phash`, ...), "
        "`licence`.",
        "",
        "## Numbers",
        "",
        "| | |",
        "|---|---|",
        f"| images kept | {n_kept:,} |",
        f"| input items dropped | {n_drop:,} |",
        f"| image bytes (default config) | {inputs.total_bytes:,} |",
        f"| entropy mean / median (bits) | {_fmt(ent.mean())} / {_fmt(ent.median())} |",
        f"| width min / median / max | {_fmt(w.min(), 0)} / {_fmt(w.median(), 0)} / {_fmt(w.max(), 0)} |",
        f"| height min / median / max | {_fmt(h.min(), 0)} / {_fmt(h.median(), 0)} / {_fmt(h.max(), 0)} |",
        "",
        "### Per source",
        "",
        "| source | kept | dropped | mean entropy (bits) |",
        "|---|---|---|---|",
    ]
    sources = sorted(set(kept["source"].dropna()) | set(dropped["source"].dropna()))
    for s in sources:
        k = kept[kept["source"] == s]
        d = dropped[dropped["source"] == s]
        out.append(f"| {s} | {len(k):,} | {len(d):,} | {_fmt(pd.to_numeric(k['entropy']).mean())} |")
    funnel = _report_funnel(pd.concat([kept, dropped]))
    if funnel:
        out += ["", "### Funnel per source (`inf30.report`)", "", funnel]
    out += ["", "### Dropped, by reason", ""]
    if n_drop:
        out += ["| reason | items |", "|---|---|"]
        counts = dropped["reason"].map(lambda r: reason_kind(r) or "unknown").value_counts()
        out += [f"| `{r}` | {c:,} |" for r, c in counts.items()]
        out += ["", "Every dropped input item, with its origin and reason, is in `manifest/dropped.parquet`."]
    else:
        out.append("Nothing was dropped.")
    if inputs.figures:
        out += ["", "## Figures", ""]
        out += [f"![{f.rsplit('/', 1)[-1]}]({f})" for f in inputs.figures]
    out += ["", "## Licences", "", "Each image keeps the licence of its source (column `licence`):", ""]
    out += [licence_markdown(per_source), ""]
    out += [
        "Cite the original datasets when you use their images.",
        "",
    ]
    return "\n".join(out)
