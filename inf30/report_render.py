"""The report's rendering: figures (PNG, via :mod:`inf30.plots`), ``index.html`` and ``report.md`` from
the numbers of :mod:`inf30.report_tables`."""

from __future__ import annotations

import base64
import html
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from inf30.entropy import REFERENCES, local_entropy_map
from inf30.reasons import EXACT_DUPLICATE, reason_kind
from inf30.report_tables import PAPER_RESOLUTION, ReportTables


def _thumb(gray: np.ndarray, side: int = 256) -> np.ndarray:
    from PIL import Image

    if max(gray.shape) <= side:
        return gray
    im = Image.fromarray(gray, "L")
    im.thumbnail((side, side), Image.Resampling.BILINEAR)
    return np.asarray(im)


def _load_stored(root: Path, row: pd.Series | None) -> np.ndarray | None:
    """Pixels of a kept row's stored image (mode L), or None."""
    from PIL import Image

    if row is None or not isinstance(row.get("path"), str):
        return None
    try:
        with Image.open(root / row["path"]) as im:
            return np.asarray(im.convert("L"))
    except Exception:  # noqa: BLE001 - a missing or broken stored file shows as an empty tile
        return None


def _load_member(
    root: Path, row: pd.Series | None, anchor_px: np.ndarray | None
) -> tuple[np.ndarray | None, str]:
    """Pixels of a dropped duplicate: stored file, identical anchor pixels, or the original file."""
    from inf30.entropy import decode_gray

    if row is None:
        return None, "not in manifest"
    px = _load_stored(root, row)
    if px is not None:
        return px, ""
    if anchor_px is not None and reason_kind(row.get("reason")) == EXACT_DUPLICATE:
        return anchor_px, "same pixels"
    origin = row.get("origin")
    if row.get("origin_kind") == "file" and isinstance(origin, str) and Path(origin).is_file():
        try:
            return decode_gray(Path(origin).read_bytes()), "from origin"
        except Exception:  # noqa: BLE001
            return None, "origin unreadable"
    return None, "not stored"


def _caption(text: str, n: int = 28) -> str:
    text = str(text)
    return text if len(text) <= n else "…" + text[-(n - 1) :]


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")[:40] or "source"


# ------------------------------------------------------------------------------------------ figures
@dataclass
class Figures:
    """The report's PNGs: ``named`` (funnel, entropy, resolution, extremes, duplicates) and the sample
    sheets; ``ordered`` is the order they appear in."""

    named: dict[str, Path]
    samples: list[Path]

    @property
    def ordered(self) -> list[Path]:
        values = list(self.named.values())
        return values[:3] + self.samples + values[3:]


def sample_figures(root: Path, out: Path, kept: pd.DataFrame, per_source: int, seed: int) -> list[Path]:
    """Random kept images per source, in figures of at most 10 sources."""
    from inf30 import plots

    rng = np.random.default_rng(seed)
    sample_rows = []
    for name, g in sorted(kept.groupby("source")):
        take = g.iloc[np.sort(rng.choice(len(g), size=min(per_source, len(g)), replace=False))]
        items = []
        for _, row in take.iterrows():
            px = _load_stored(root, row)
            ent = row["entropy"]
            cap = f"{_caption(str(row['item_key']).split(':', 1)[-1], 22)}\nH={ent:.2f}" if ent == ent else ""
            items.append((None if px is None else _thumb(px), cap))
        sample_rows.append((name, items))
    sample_figs = []
    for i in range(0, max(1, len(sample_rows)), 10):
        chunk = sample_rows[i : i + 10]
        name = "samples.png" if len(sample_rows) <= 10 else f"samples_{i // 10 + 1}.png"
        sample_figs.append(plots.image_grid(chunk, out / name, "Random kept images per source"))
    return sample_figs


def extremes_figure(root: Path, out: Path, kept: pd.DataFrame, count: int, maps_too: bool) -> Path:
    """The lowest and highest entropy kept images, with their local entropy maps when ``maps_too``."""
    from inf30 import plots

    ke = kept.dropna(subset=["entropy"]).sort_values("entropy", kind="stable")
    ext_rows: list[tuple] = []
    k = min(count, max(1, len(ke) // 2))  # lowest and highest never show the same image twice
    halves = (("lowest entropy", ke.head(k)), ("highest entropy", ke.iloc[max(k, len(ke) - k) :][::-1]))
    for label, part in halves:
        imgs, maps = [], []
        for _, row in part.iterrows():
            px = _load_stored(root, row)
            cap = f"{row['source']}\nH={row['entropy']:.2f}"
            imgs.append((None if px is None else _thumb(px), cap))
            if maps_too:
                m = None if px is None else local_entropy_map(px, radius=4, max_side=160)
                maps.append((m, "local entropy" if m is not None else "not stored"))
        ext_rows.append((label, imgs))
        if maps_too:
            ext_rows.append(("local entropy, 0-8 bits", maps, "magma", 8.0))
    return plots.image_grid(ext_rows, out / "entropy_extremes.png", "Lowest and highest entropy kept images")


def duplicates_figure(root: Path, out: Path, t: ReportTables, groups: int, members: int) -> Path | None:
    """The largest duplicate groups, anchor first (None when there is none)."""
    from inf30 import plots

    dup_rows = []
    for g in t.groups[:groups]:
        anchor_px = _load_stored(root, g.anchor_row)
        anchor_name = str(g.anchor_row["item_key"]).split(":", 1)[-1] if g.anchor_row is not None else g.anchor
        items = [(None if anchor_px is None else _thumb(anchor_px), f"anchor\n{_caption(anchor_name, 22)}")]
        for _member, row, stage, ev in g.members[:members]:
            px, how = _load_member(root, row, anchor_px)
            note = "\n".join(_caption(part, 26) for part in (ev or how).split(",")[:2])
            items.append((None if px is None else _thumb(px), f"{stage}\n{note}"))
        shown = min(len(g.members), members)
        more = f" ({shown} shown)" if shown < len(g.members) else ""
        dup_rows.append((f"anchor and {len(g.members)} duplicate(s){more}", items))
    if not dup_rows:
        return None
    origin = t.summary["duplicate_groups"]["from"]
    return plots.image_grid(dup_rows, out / "duplicates.png", f"Largest duplicate groups (from {origin})")


def figures(root: Path, out: Path, t: ReportTables, opts: Any) -> Figures:
    """Draw every figure of the report into ``out`` (``opts``: :class:`inf30.report.ReportOptions`)."""
    from inf30 import plots

    kept = t.kept
    named: dict[str, Path] = {}
    named["funnel"] = plots.funnel(t.funnel, out / "funnel.png")
    by_source = {n: g["entropy"].dropna().to_numpy(float) for n, g in kept.groupby("source")}
    named["entropy"] = plots.entropy_histogram(kept["entropy"].dropna().to_numpy(float), by_source, REFERENCES,
                                               out / "entropy_hist.png")
    kr = kept.dropna(subset=["width", "height"])
    named["resolution"] = plots.resolution(kr["width"].to_numpy(float), kr["height"].to_numpy(float),
                                           kr["source"].astype(str).tolist(), out / "resolution.png")
    samples = sample_figures(root, out, kept, opts.samples_per_source, opts.seed)
    named["extremes"] = extremes_figure(root, out, kept, opts.extremes, opts.entropy_maps)
    dup = duplicates_figure(root, out, t, opts.dup_groups, opts.dup_members)
    if dup is not None:
        named["duplicates"] = dup
    return Figures(named, samples)


# ------------------------------------------------------------------------------------------ documents
@dataclass
class _Context:
    root: Path
    summary: dict[str, Any]
    funnel: pd.DataFrame
    reasons: pd.DataFrame
    entropy: pd.DataFrame
    licences: pd.DataFrame
    samples: list[Path]
    figs: dict[str, Path]
    build: dict[str, Any] | None


def _context(root: Path, t: ReportTables, figs: Figures) -> _Context:
    return _Context(root, t.summary, t.funnel, t.reasons, t.entropy, t.licences, figs.samples, figs.named, t.build)


def render_html(root: Path, t: ReportTables, figs: Figures, embed: bool = False) -> str:
    """``index.html``: the tables and figures (linked beside it, or embedded as data URIs)."""
    return _html(_context(root, t, figs), embed)


def render_markdown(root: Path, t: ReportTables, figs: Figures) -> str:
    """``report.md``: the same content as Markdown, figures linked."""
    return _markdown(_context(root, t, figs))


def _fmt(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, (float, np.floating)):
        return f"{v:.3f}"
    if isinstance(v, (int, np.integer)):
        return f"{v:,}"
    return str(v)


def _headline(ctx: _Context) -> list[str]:
    t = ctx.summary["funnel"]["TOTAL"]
    e = ctx.summary["entropy"].get("ALL", {})
    r = ctx.summary["resolution"]
    lines = [
        f"{t['found']:,} items found, {t['decoded']:,} decoded, {t['kept']:,} kept "
        f"({t['corrupt']:,} corrupt, {t['too_small']:,} too small, {t['exact_duplicates']:,} exact duplicates, "
        f"{t['near_copies']:,} near-copies, {t['scene_duplicates']:,} scene duplicates, "
        f"{t['other_dropped']:,} dropped by other filters).",
    ]
    if e.get("n"):
        lines.append(
            f"Mean entropy of the kept images {e['mean']:.2f} bits (std {e['std']:.2f}); the paper reports "
            + " and ".join(f"{k} {v:.2f}" for k, v in REFERENCES.items())
            + "."
        )
    if r.get("n"):
        lines.append(
            f"Resolution from {r['min_resolution']} to {r['max_resolution']} (the paper's Inf30: {PAPER_RESOLUTION})."
        )
    return lines


def _img_src(path: Path, embed: bool) -> str:
    if embed:
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    return path.name


def _html_table(tab: pd.DataFrame, bold_last: bool = False) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [tab.index.name or ""] + list(tab.columns))
    body = []
    for i, (idx, *values) in enumerate(tab.itertuples(name=None)):
        cls = ' class="total"' if bold_last and i == len(tab) - 1 else ""
        cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in values)
        body.append(f"<tr{cls}><th>{html.escape(str(idx))}</th>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _md_table(tab: pd.DataFrame) -> str:
    cols = [tab.index.name or ""] + [str(c) for c in tab.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for idx, *values in tab.itertuples(name=None):
        cells = [str(idx)] + [_fmt(v) for v in values]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;
color:#222;padding:0 1rem}h1{margin-bottom:.2rem}h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;
margin-top:2.2rem}table{border-collapse:collapse;margin:.8rem 0;font-size:.9rem}th,td{border:1px solid #ddd;
padding:.25rem .6rem;text-align:right}thead th{background:#f3f5f7}tbody th{text-align:left;font-weight:500}
tr.total{font-weight:700;background:#fafafa}img{max-width:100%;height:auto;border:1px solid #eee;margin:.4rem 0}
.muted{color:#666;font-size:.9rem}nav a{margin-right:1rem}pre{background:#f6f8fa;padding:.8rem;overflow:auto;
font-size:.8rem}
"""

_SECTIONS = [
    ("funnel", "Funnel"),
    ("entropy", "Entropy"),
    ("resolution", "Resolution"),
    ("samples", "Samples"),
    ("duplicates", "Duplicates"),
    ("licences", "Licences"),
]


def _html(ctx: _Context, embed: bool) -> str:
    s = ctx.summary
    esc = html.escape

    def img(path: Path, alt: str) -> str:
        return f'<img src="{_img_src(path, embed)}" alt="{esc(alt)}">'

    r = s["resolution"]
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>Inf30 dataset report: {esc(ctx.root.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Dataset report: {esc(ctx.root.name)}</h1>",
        f'<p class="muted">{esc(s["dataset"])} · generated {esc(s["generated"])} by <code>inf30 report</code></p>',
        "<nav>" + "".join(f'<a href="#{k}">{t}</a>' for k, t in _SECTIONS) + "</nav>",
        "<ul>" + "".join(f"<li>{esc(line)}</li>" for line in _headline(ctx)) + "</ul>",
    ]
    parts += [f'<p class="muted">Note: {esc(n)}</p>' for n in s["notes"]]
    parts += [
        '<h2 id="funnel">Funnel</h2>',
        "<p>Every input item is one manifest row; each ends in exactly one column. "
        "<em>decoded</em> = found − corrupt.</p>",
        _html_table(ctx.funnel, bold_last=True),
        img(ctx.figs["funnel"], "funnel: images remaining after each stage, and outcome per source"),
        "<h3>Drop reasons</h3>",
        _html_table(ctx.reasons) if len(ctx.reasons) else "<p>Nothing was dropped.</p>",
        '<h2 id="entropy">Entropy</h2>',
        "<p>Information entropy H = −Σ p(x<sub>i</sub>) log<sub>2</sub> p(x<sub>i</sub>) over the 256 levels "
        "of each normalized 8-bit image (paper Eq. 1). Reference lines: the paper's mean for Inf30 "
        f"({REFERENCES['Inf30 (paper)']:.2f}) and ImageNet-1K ({REFERENCES['ImageNet-1K (paper)']:.2f}).</p>",
        img(ctx.figs["entropy"], "entropy histogram of the kept images with reference lines"),
        _html_table(ctx.entropy, bold_last=True),
        '<h2 id="resolution">Resolution</h2>',
    ]
    if r.get("n"):
        parts.append(
            f"<p>Smallest {esc(r['min_resolution'])} ({esc(r['min_item'])}), largest "
            f"{esc(r['max_resolution'])} ({esc(r['max_item'])}), median {esc(r['median_resolution'])}; "
            f"widths {r['min_width']}–{r['max_width']}, heights {r['min_height']}–{r['max_height']}; "
            f"aspect ratio {r['aspect_min']:.2f}–{r['aspect_max']:.2f} (median {r['aspect_median']:.2f}). "
            f"The paper's Inf30 spans {PAPER_RESOLUTION}.</p>"
        )
    parts.append(img(ctx.figs["resolution"], "width by height scatter and aspect ratio histogram"))
    parts.append('<h2 id="samples">Samples</h2>')
    parts += [img(p, "random kept images per source") for p in ctx.samples]
    parts.append(img(ctx.figs["extremes"], "lowest and highest entropy images with local entropy maps"))
    dg = s["duplicate_groups"]
    parts.append('<h2 id="duplicates">Duplicates</h2>')
    if dg["count"]:
        parts.append(f"<p>{dg['count']:,} duplicate groups (from {esc(dg['from'])}); the largest:</p>")
        parts.append(img(ctx.figs["duplicates"], "largest duplicate groups"))
        tab = pd.DataFrame(
            [(g["anchor"], g["members"], ", ".join(g["stages"])) for g in dg["largest"]],
            columns=["anchor", "members", "stages"],
        ).set_index("anchor")
        parts.append(_html_table(tab))
    else:
        parts.append("<p>No duplicate groups (nothing dropped as a duplicate, or dedupe has not run).</p>")
    parts += ['<h2 id="licences">Licences</h2>', _html_table(ctx.licences)]
    if any(v["licence"] == "not given" for v in s["licences"].values()):
        parts.append(
            '<p class="muted">Sources with no licence in their config need one before publishing.</p>'
        )
    if ctx.build is not None:
        parts.append("<details><summary>build.json</summary><pre>")
        parts.append(esc(json.dumps(ctx.build, indent=2, default=str)[:20000]) + "</pre></details>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _markdown(ctx: _Context) -> str:
    s = ctx.summary
    r = s["resolution"]
    lines = [f"# Dataset report: {ctx.root.name}", "", f"{s['dataset']}, generated {s['generated']}.", ""]
    lines += [f"- {line}" for line in _headline(ctx)]
    lines += [f"- Note: {n}" for n in s["notes"]]
    lines += [
        "",
        "## Funnel",
        "",
        _md_table(ctx.funnel),
        "",
        "![funnel](funnel.png)",
        "",
        "### Drop reasons",
        "",
    ]
    lines += [_md_table(ctx.reasons) if len(ctx.reasons) else "Nothing was dropped.", ""]
    lines += [
        "## Entropy",
        "",
        "Entropy of each normalized 8-bit image (paper Eq. 1); reference lines at the paper's means "
        + ", ".join(f"{k} {v:.2f}" for k, v in REFERENCES.items())
        + ".",
        "",
        "![entropy histogram](entropy_hist.png)",
        "",
        _md_table(ctx.entropy),
        "",
        "## Resolution",
        "",
    ]
    if r.get("n"):
        lines += [
            f"Smallest {r['min_resolution']} ({r['min_item']}), largest {r['max_resolution']} ({r['max_item']}), "
            f"median {r['median_resolution']}; aspect ratio {r['aspect_min']:.2f} to {r['aspect_max']:.2f}. "
            f"The paper's Inf30 spans {PAPER_RESOLUTION}.",
            "",
        ]
    lines += ["![resolution](resolution.png)", "", "## Samples", ""]
    lines += [f"![samples]({p.name})" for p in ctx.samples]
    lines += ["", "![entropy extremes](entropy_extremes.png)", "", "## Duplicates", ""]
    dg = s["duplicate_groups"]
    if dg["count"]:
        lines += [
            f"{dg['count']:,} duplicate groups (from {dg['from']}).",
            "",
            "![duplicates](duplicates.png)",
            "",
        ]
        lines += ["| anchor | members | stages |", "|---|---|---|"]
        lines += [f"| {g['anchor']} | {g['members']} | {', '.join(g['stages'])} |" for g in dg["largest"]]
    else:
        lines.append("No duplicate groups.")
    lines += ["", "## Licences", "", _md_table(ctx.licences), ""]
    return "\n".join(lines)
