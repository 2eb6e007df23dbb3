"""Pre-training step throughput (forward, backward, AdamW step) of InfMAE and its baselines, against
transformers' ViTMAEForPreTraining (ViT-B, 8-block 512-wide decoder, SDPA attention), in one run.

CPU (default): batch 8 at 224, fp32 then bf16 autocast, all cores. The models are timed round-robin (one
step of each in turn) so that load from other processes hits all of them alike; the median step time gives
img/s and the ratio to the transformers model from the same run.

    python benchmarks/model_throughput.py                      # CPU, all four models
    python benchmarks/model_throughput.py --steps 5 --no-bf16
    python benchmarks/model_throughput.py --device cuda --compile --batch 128 --precision bf16 \\
        --models infmae_base                                   # what benchmarks/gpu_pretrain.sh runs
    python benchmarks/model_throughput.py --models infmae_tiny --gray --no-bf16   # gray [B,1,H,W] vs 3-channel

With --gray each of our models is also timed on the gray input [B, 1, H, W] (a second instance, same init,
same round-robin; `model:gray` rows) and the ratio of gray to 3-channel step rate is printed. The 3-channel
input is made once, outside the timing, so the ratio leaves out the 3x copy the loader no longer makes.

On CUDA it also prints the model FLOP utilization (MFU): the FLOPs of one training step counted by
torch.utils.flop_counter (matmuls, convolutions, attention) divided by step time and the GPU's peak dense
bf16 FLOP/s.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from infmae.model import create_model  # noqa: E402

HF_NAME = "hf_vitmae_base"
OPTIMIZER = "fused"
OURS = ("infmae_base", "convmae_base", "mae_base")

# peak dense bf16 tensor FLOP/s by GPU name fragment (first match wins)
PEAK_BF16 = [
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),
    ("A100", 312.0e12),
    ("L40S", 362.0e12),
    ("L4", 121.0e12),
    ("A10", 125.0e12),
    ("V100", 125.0e12),
]


def build(name: str, device: torch.device) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """A model and its loss function imgs -> scalar loss (`name:gray`: the same model, fed gray input)."""
    name = name.removesuffix(":gray")
    if name == HF_NAME:
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        cfg = ViTMAEConfig(
            hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
            decoder_hidden_size=512, decoder_num_hidden_layers=8, decoder_num_attention_heads=16,
            decoder_intermediate_size=2048, mask_ratio=0.75, image_size=224, patch_size=16,
            attn_implementation="sdpa",
        )
        model = ViTMAEForPreTraining(cfg).to(device)
        return model, lambda x: model(pixel_values=x).loss
    model = create_model(name).to(device)
    return model, lambda x: model(x)[0]


def step_fn(
    model: torch.nn.Module, loss_fn: Callable, precision: str, device: torch.device, compile_: bool
) -> Callable[[torch.Tensor], float]:
    # the same optimizer for every model (the optimizer is not part of the model): fused AdamW as
    # infmae's trainer uses it, or PyTorch's default implementation with --optimizer default
    opt = torch.optim.AdamW(
        model.parameters(), lr=1.0e-4, betas=(0.9, 0.95), weight_decay=0.05, fused=OPTIMIZER == "fused"
    )
    fwd = torch.compile(loss_fn) if compile_ else loss_fn

    def step(x: torch.Tensor) -> float:
        ctx = torch.autocast(device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
        with ctx:
            loss = fwd(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def count_flops(loss_fn: Callable, x: torch.Tensor, precision: str) -> float:
    """FLOPs of one forward + backward (matmul, conv, attention) counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    counter = FlopCounterMode(display=False)
    with counter:
        with ctx:
            loss = loss_fn(x)
        loss.backward()
    ops = {str(k): v for k, v in counter.get_flop_counts().get("Global", {}).items()}
    total = float(sum(ops.values()))
    # the counter ignores `groups` in convolution_backward, overcounting depthwise convs by the channel count;
    # count a convolution's backward as twice its forward instead (exact for the grads of input and weight)
    conv_fwd, conv_bwd = ops.get("aten.convolution", 0), ops.get("aten.convolution_backward", 0)
    return total - conv_bwd + min(conv_bwd, 2 * conv_fwd)


def peak_flops(device: torch.device) -> tuple[str, float | None]:
    if device.type != "cuda":
        return "cpu", None
    name = torch.cuda.get_device_name(device)
    for frag, peak in PEAK_BF16:
        if frag in name:
            return name, peak
    return name, None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run(args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.models
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    gpu_name, peak = peak_flops(device)
    print(
        f"device {gpu_name}, torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, "
        f"size {args.size}, warm-up {args.warmup}, measured steps {args.steps}, compile {args.compile}, "
        f"AdamW {OPTIMIZER}"
    )
    # images normalized like the pre-training data (mean .425, std .2 on gray replicated to 3 channels)
    gray = torch.rand(args.batch, 1, args.size, args.size, device=device)
    x = ((gray - 0.425) / 0.2).expand(-1, 3, -1, -1).contiguous()
    if args.gray:
        names = [*names, *(f"{n}:gray" for n in names if n != HF_NAME)]
    inputs = {n: x[:, :1].contiguous() if n.endswith(":gray") else x for n in names}

    models = {}
    for name in names:
        try:
            torch.manual_seed(0)  # a gray twin starts from the same weights
            models[name] = build(name, device)
        except ImportError as e:
            print(f"skipping {name}: {e}")
    for precision in args.precision:
        steps = {n: step_fn(m, f, precision, device, args.compile) for n, (m, f) in models.items()}
        times: dict[str, list[float]] = {n: [] for n in steps}
        for r in range(args.warmup + args.steps):
            for name, step in steps.items():
                sync(device)
                t0 = time.perf_counter()
                loss = step(inputs[name])
                sync(device)
                dt = time.perf_counter() - t0
                if r >= args.warmup:
                    times[name].append(dt)
                if not torch.isfinite(torch.tensor(loss)):
                    raise RuntimeError(f"{name}: non-finite loss {loss}")
        print(f"\n{precision}:")
        print("| model | params (M) | step s (median) | img/s | vs transformers ViTMAE-B |")
        print("|---|---|---|---|---|")
        ref = statistics.median(times[HF_NAME]) if HF_NAME in times else None
        for name, ts in times.items():
            med = statistics.median(ts)
            nparam = sum(p.numel() for p in models[name][0].parameters()) / 1e6
            ratio = f"{ref / med:.2f}x" if ref else "n/a"
            print(f"| {name} | {nparam:.1f} | {med:.3f} | {args.batch / med:.2f} | {ratio} |")
        for name in (n for n in times if n.endswith(":gray")):
            base = name.removesuffix(":gray")
            gain = statistics.median(times[base]) / statistics.median(times[name])
            print(f"{base}: gray input [B,1,H,W] steps {gain:.3f}x as fast as the 3-channel input")
        if device.type == "cuda":
            for name, (_, loss_fn) in models.items():
                flops = count_flops(loss_fn, inputs[name], precision)
                med = statistics.median(times[name])
                achieved = flops / med
                mfu = f"{100 * achieved / peak:.1f} %" if peak else "n/a (unknown peak)"
                print(
                    f"{name}: {flops / args.batch / 1e9:.1f} GFLOP/img (fwd+bwd), {achieved / 1e12:.1f} TFLOP/s, "
                    f"MFU {mfu} of {gpu_name} bf16 peak"
                )
        del steps
        gc.collect()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default, all cores)")
    ap.add_argument("--models", nargs="+", default=[*OURS, HF_NAME])
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--no-bf16", dest="precision", action="store_const", const=["fp32"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the forward + loss")
    ap.add_argument("--gray", action="store_true", help="also time our models on gray [B,1,H,W] input")
    ap.add_argument("--optimizer", choices=["fused", "default"], default="fused",
                    help="AdamW implementation, the same for every model")
    args = ap.parse_args(argv)
    global OPTIMIZER
    OPTIMIZER = args.optimizer
    run(args)


if __name__ == "__main__":
    main()
