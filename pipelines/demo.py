"""`make demo`: the main job end to end on a small built-in sample.

sample sources -> `inf30 build` (build, then dedupe: pipelines/build.py) -> printed summary -> `inf30 report` -> a few minutes of
`infmae_tiny` pre-training on the CPU (pipelines/pretrain.py) -> the reconstruction PNG and the report's path.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from inf30.build import BuildOptions
from inf30.sample import write_sample
from pipelines.build import build_sources


def run_demo(out: str | Path, workers: int = 0, pretrain_minutes: float = 3.0) -> dict:
    """Run the demo into ``out``; returns the paths it produced."""
    out = Path(out)
    src = out / "sources"
    info = write_sample(src)
    print(f"[1] sample sources: {info['files']} files in {src}")
    dataset = out / "inf30-demo"
    summary = build_sources([str(src)], dataset, BuildOptions(workers=workers))
    print(f"[2] built {dataset}\n{summary.table()}")
    from inf30.report import ReportOptions, write_report

    report = write_report(dataset, ReportOptions(progress=False))
    print(f"[3] report: {report.html}")
    from pipelines.pretrain import run_pretrain

    run = out / "pretrain-tiny"
    print(f"[4] pre-training infmae_tiny on the CPU for up to {pretrain_minutes:g} min into {run} (re-run to resume)")
    result = run_pretrain(dataset, run, minutes=pretrain_minutes)
    print(f"[4] step {result['step']}/{result['total_steps']}, loss {result['loss']:.4f}; checkpoint {result['checkpoint']}")
    print(f"reconstruction: {result['png']}\nreport: {report.html}")
    return {"sources": str(src), "dataset": str(dataset), "report": str(report.html), "run": str(run),
            "checkpoint": result["checkpoint"], "reconstruction": result["png"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="demo-out")
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--pretrain-minutes", type=float, default=3.0, help="CPU pre-training time budget")
    args = ap.parse_args()
    run_demo(args.out, args.workers, args.pretrain_minutes)


if __name__ == "__main__":
    main()
