"""Matplotlib figures of the dataset report (``inf30 report``). Each function writes one PNG and returns
its path; none of them needs a display (Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter  # noqa: E402

from inf30.atomic import atomic_path  # noqa: E402

DPI = 100
FUNNEL_STAGES = (
    ("found", "found"),
    ("decoded", "decoded"),
    ("too_small", "after size filter"),
    ("other_dropped", "after other filters"),
    ("exact_duplicates", "after exact dedupe"),
    ("near_copies", "after near-copy dedupe"),
    ("scene_duplicates", "after scene dedupe (kept)"),
)
OUTCOMES = (
    ("kept", "kept", "#2e7d32"),
    ("corrupt", "corrupt / not decoded", "#c62828"),
    ("too_small", "too small", "#ef6c00"),
    ("other_dropped", "other filters", "#8d6e63"),
    ("exact_duplicates", "exact duplicates", "#1565c0"),
    ("near_copies", "near-copies", "#6a1b9a"),
    ("scene_duplicates", "scene duplicates", "#00838f"),
)


def _save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, pil_kwargs={"compress_level": 3})
    plt.close(fig)
    return path


def _empty(ax: plt.Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, fontsize=11, color="#555")
    ax.set_xticks([])
    ax.set_yticks([])


def funnel(table: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Left: images remaining after each stage (all sources). Right: outcome of each source's items.

    ``table`` is the report's funnel table: one row per source plus a ``TOTAL`` row."""
    total = table.loc["TOTAL"]
    per_source = table.drop(index="TOTAL")
    fig, (ax1, ax2) = plt.subplots(
        1, 2, figsize=(13, max(3.5, 0.3 * len(per_source) + 1.5)), gridspec_kw={"width_ratios": [1, 1.3]}
    )
    remaining = [int(total["found"]), int(total["decoded"])]
    for key, _ in FUNNEL_STAGES[2:]:
        remaining.append(remaining[-1] - int(total[key]))
    labels = [label for _, label in FUNNEL_STAGES]
    y = np.arange(len(labels))[::-1]
    ax1.barh(y, remaining, color="#455a64")
    for yi, v in zip(y, remaining, strict=True):
        ax1.text(v, yi, f" {v:,}", va="center", fontsize=9)
    ax1.set_yticks(y, labels)
    ax1.xaxis.set_major_locator(MaxNLocator(4, integer=True))
    ax1.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax1.set_xlabel("images")
    ax1.set_title("Funnel (all sources)")
    ax1.set_xlim(0, max(1, remaining[0]) * 1.18)
    if len(per_source):
        names = list(per_source.index)[::-1]
        left = np.zeros(len(names))
        for key, label, color in OUTCOMES:
            vals = per_source[key].to_numpy()[::-1].astype(float)
            ax2.barh(names, vals, left=left, color=color, label=label)
            left += vals
        ax2.xaxis.set_major_locator(MaxNLocator(5, integer=True))
        ax2.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        ax2.set_xlabel("items")
        ax2.set_title("Outcome per source")
        ax2.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        _empty(ax2, "no sources")
    fig.tight_layout()
    return _save(fig, path)


def entropy_histogram(
    values: np.ndarray,
    by_source: dict[str, np.ndarray],
    references: dict[str, float],
    path: str | os.PathLike,
) -> Path:
    """Histogram of the kept set's entropy, per-source outlines, the set's mean and reference lines."""
    fig, ax = plt.subplots(figsize=(10, 4.5))
    values = np.asarray(values, dtype=float)
    if values.size:
        bins = np.linspace(0, 8, 81)
        ax.hist(values, bins=bins, color="#90a4ae", label=f"kept set (n={values.size:,})")
        if 1 < len(by_source) <= 8:
            for name, v in sorted(by_source.items()):
                ax.hist(v, bins=bins, histtype="step", linewidth=1.4, label=f"{name} (n={len(v):,})")
        ax.axvline(values.mean(), color="black", linewidth=2, label=f"this set, mean {values.mean():.2f}")
        styles = ("--", ":", "-.")
        colors = ("#d84315", "#1565c0", "#6a1b9a")
        for i, (name, v) in enumerate(references.items()):
            ax.axvline(
                v, color=colors[i % 3], linestyle=styles[i % 3], linewidth=2, label=f"{name} mean {v:.2f}"
            )
        ax.set_xlim(0, 8)
        ax.set_xlabel("entropy (bits, Eq. 1)")
        ax.set_ylabel("images")
        ax.legend(fontsize=8, loc="upper left")
    else:
        _empty(ax, "no kept images with an entropy")
    ax.set_title("Information entropy of the kept images")
    fig.tight_layout()
    return _save(fig, path)


def resolution(width: np.ndarray, height: np.ndarray, source: Sequence[str], path: str | os.PathLike) -> Path:
    """Scatter of width by height (log axes, per source) and the histogram of aspect ratios."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    w = np.asarray(width, dtype=float)
    h = np.asarray(height, dtype=float)
    src = np.asarray(source, dtype=object)
    if w.size:
        names = sorted(set(src))
        for name in names if len(names) <= 10 else [None]:
            sel = np.ones(w.size, bool) if name is None else src == name
            dense = w.size > 5000
            ax1.scatter(
                w[sel], h[sel], s=3 if dense else 9, alpha=0.25 if dense else 0.6, label=name, rasterized=True
            )
        ax1.set_xscale("log")
        ax1.set_yscale("log")
        lo = max(1.0, min(w.min(), h.min()) / 1.5)
        hi = max(w.max(), h.max()) * 1.5
        ax1.plot([lo, hi], [lo, hi], color="#bbb", linewidth=0.8, zorder=0)
        ax1.set_xlim(lo, hi)
        ax1.set_ylim(lo, hi)
        for axis in (ax1.xaxis, ax1.yaxis):
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(NullFormatter())
        area = w * h
        for i, tag in ((int(np.argmin(area)), "smallest"), (int(np.argmax(area)), "largest")):
            ax1.scatter([w[i]], [h[i]], s=60, facecolors="none", edgecolors="black")
            ax1.annotate(f"{tag} {w[i]:g}x{h[i]:g}", (w[i], h[i]), textcoords="offset points", xytext=(6, -12),
                         fontsize=8)  # fmt: skip
        ax1.set_xlabel("width (px)")
        ax1.set_ylabel("height (px)")
        if len(names) <= 10:
            ax1.legend(fontsize=8, markerscale=2)
        ar = w / np.maximum(h, 1)
        ax2.hist(np.log2(ar), bins=40, color="#546e7a")
        lo_ar, hi_ar = float(np.log2(ar).min()), float(np.log2(ar).max())
        if hi_ar - lo_ar < 2:
            ticks = [0.5, 0.75, 1, 4 / 3, 1.5, 2, 3]
        else:
            step = max(1, int(np.ceil((hi_ar - lo_ar) / 8)))
            ticks = [2.0**k for k in range(-12 * step, 12 * step + 1, step)]
        tl = [t for t in ticks if lo_ar - 0.3 <= np.log2(t) <= hi_ar + 0.3] or [1]
        ax2.set_xticks(np.log2(tl), [f"{t:.3g}" if t >= 1 else f"1/{1 / t:.3g}" for t in tl])
        ax2.set_xlabel("aspect ratio width/height (log scale)")
        ax2.set_ylabel("images")
    else:
        _empty(ax1, "no kept images")
        _empty(ax2, "no kept images")
    ax1.set_title("Resolution of the kept images")
    ax2.set_title("Aspect ratios")
    fig.tight_layout()
    return _save(fig, path)


def _font(size: int):
    """DejaVu Sans (shipped with matplotlib) at ``size`` px, for captions drawn with Pillow."""
    from matplotlib import font_manager
    from PIL import ImageFont

    try:
        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except OSError:
        return ImageFont.load_default(size)


def _to_rgb(img: np.ndarray, cmap: str, vmax: float) -> np.ndarray:
    """A 2-D array -> uint8 RGB through a matplotlib colormap over [0, vmax]."""
    norm = np.clip(np.asarray(img, dtype=np.float32) / float(vmax), 0.0, 1.0)
    lut = (matplotlib.colormaps[cmap](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return lut[np.rint(norm * 255).astype(np.uint8)]


def image_grid(rows: Sequence[tuple], path: str | os.PathLike, title: str, tile: int = 200) -> Path:
    """A grid of images, one row per ``(label, [(image or None, caption), ...][, cmap[, vmax]])``.

    ``None`` draws an empty tile with its caption (for example an item whose pixels are not stored).
    ``cmap`` defaults to gray and ``vmax`` to 255 (use ``"magma", 8`` for local entropy maps). Composed
    with Pillow (fast for many images); captions in DejaVu Sans."""
    from PIL import Image, ImageDraw

    title_font, label_font, cap_font = _font(18), _font(14), _font(11)
    pad, line = 8, 13
    cap_lines = max([len(str(c).splitlines()) for row in rows for _, c in row[1]] + [1])
    ncols = max([len(row[1]) for row in rows] + [1])
    row_h = 24 + cap_lines * line + tile + pad
    width = pad + ncols * (tile + pad)
    height = 40 + max(1, len(rows)) * row_h
    canvas = Image.new("RGB", (max(width, 400), height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((pad, 10), title, fill="black", font=title_font)
    if not rows:
        draw.text((pad, 50), "nothing to show", fill="#555555", font=label_font)
    for r, row in enumerate(rows):
        label, items = row[0], row[1]
        row_cmap = row[2] if len(row) > 2 else "gray"
        row_vmax = row[3] if len(row) > 3 else 255
        y0 = 40 + r * row_h
        draw.text((pad, y0), str(label), fill="#222222", font=label_font)
        for c, (img, caption) in enumerate(items):
            x = pad + c * (tile + pad)
            for k, text in enumerate(str(caption).splitlines()):
                draw.text((x, y0 + 20 + k * line), text, fill="#333333", font=cap_font)
            ty = y0 + 24 + cap_lines * line
            if img is None:
                draw.rectangle((x, ty, x + tile - 1, ty + tile - 1), fill="#eceff1", outline="#b0bec5")
                continue
            rgb = _to_rgb(img, row_cmap, row_vmax)
            im = Image.fromarray(rgb, "RGB")
            im.thumbnail((tile, tile), Image.Resampling.BILINEAR)
            if max(im.size) < tile:  # small images are enlarged to the tile, pixels kept sharp
                scale = tile / max(im.size)
                size = (max(1, round(im.width * scale)), max(1, round(im.height * scale)))
                im = im.resize(size, Image.Resampling.NEAREST)
            canvas.paste(im, (x, ty))
            draw.rectangle((x - 1, ty - 1, x + im.width, ty + im.height), outline="#90a4ae")
    path = Path(path)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG", compress_level=3)
    return path
