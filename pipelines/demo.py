"""`make demo`: the main job end to end on a small built-in sample.

sample sources -> `inf30 build` (with dedupe) -> printed summary. Later stages are added here as they land.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inf30.build import BuildOptions, build
from inf30.sample import write_sample
from inf30.sources import load_sources


def run_demo(out: str | Path, workers: int = 0) -> dict:
    """Run the demo into ``out``; returns the paths it produced."""
    out = Path(out)
    src = out / "sources"
    info = write_sample(src)
    print(f"[1] sample sources: {info['files']} files in {src}")
    dataset = out / "inf30-demo"
    summary = build(load_sources([str(src)], out_dir=dataset), dataset, BuildOptions(workers=workers))
    print(f"[2] built {dataset}\n{summary.table()}")
    return {"sources": str(src), "dataset": str(dataset)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--workers", type=int, default=0)
    args = ap.parse_args()
    run_demo(args.out, args.workers)


if __name__ == "__main__":
    main()
