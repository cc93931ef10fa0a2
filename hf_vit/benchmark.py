"""Speed and memory of hf_vit against timm's and transformers' ViT, measured in one run on one machine.

The measuring logic behind `scripts/benchmark.py`. The rules that make one run's figures comparable:

* identical shapes for every contender (same depth/width/heads/MLP/patch/image size, a 1000-class head), random init;
* every contender is built and warmed up first, then the repetitions are *interleaved* (rep 1 of A, B, C, then rep 2
  of B, C, A, ...), so load drift on a shared machine hits all of them alike; the figure is the median of the reps,
  and the comparisons are ratios of medians from the same run;
* the matmul peak (one big square matmul in fp32 or bf16) is timed as one more interleaved contender of each group, so
  "% of peak" divides two figures measured under the same load;
* peak memory is measured in a fresh subprocess per contender (peak RSS on CPU, `max_memory_allocated` on CUDA), with
  and without gradient checkpointing, because a process's peak never goes down.

Achieved GFLOP/s use `hf_vit.stats.forward_flops` (matmuls and the patch convolution, 2 FLOPs per multiply-add); a
training step is counted as 3x the forward (backward ~ 2x forward), the usual convention.
"""

from __future__ import annotations

import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .configuration_hf_vit import PRESETS, HfViTConfig
from .extras import require
from .stats import count_parameters, forward_flops

NUM_CLASSES = 1000
# The quick-run model: small enough that a whole benchmark takes seconds (and the same shape as the tests' TINY).
TINY_SHAPE = dict(
    image_size=32, patch_size=8, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128
)
MODEL_SHAPES = {"tiny": TINY_SHAPE, **PRESETS}

CONTENDERS = ("hf_vit-sdpa", "hf_vit-eager", "transformers-sdpa", "transformers-eager", "timm")
# Not in the default set: hf_vit with its oneDNN fp32 inference linears switched off (plain F.linear), the before/after
# of that choice in the same run; hf_vit's int8 dynamic quantization; hf_vit's and transformers' models exported to
# ONNX and run by onnxruntime; hf_vit's static int8 (PT2E, compiled: calibrated on 64 random images). Besides these,
# "hf_vit-sdpa-tome<R>" (token merging, R pairs per block), "hf_vit-sdpa-tome<R>-int8" and
# "hf_vit-sdpa-tome<R>-int8static" are contenders for any R.
EXTRA_CONTENDERS = (
    "hf_vit-sdpa-flinear",
    "hf_vit-sdpa-int8",
    "hf_vit-sdpa-int8static",
    "hf_vit-onnxruntime",
    "transformers-onnxruntime",
)
# Contenders that run float32 inference on the CPU only (int8 kernels, onnxruntime's CPU provider): other modes and
# devices skip them.
CPU_FP32_INFERENCE_ONLY = ("-int8", "-int8static", "-onnxruntime")
CALIBRATION_IMAGES = 64
MODES = ("infer-fp32", "infer-bf16", "train-fp32", "train-bf16")
BASELINE = "timm"
HF_BASELINE = "transformers-sdpa"
MATMUL = "matmul-peak"


def model_config(model: str) -> HfViTConfig:
    if model not in MODEL_SHAPES:
        raise ValueError(f"unknown model {model!r}; known: {', '.join(MODEL_SHAPES)}")
    return HfViTConfig(**MODEL_SHAPES[model], num_labels=NUM_CLASSES)


# ---------------------------------------------------------------------------------------------------------------
# Contenders: the same ViT shape from each library, as `forward(pixel_values) -> logits`
# ---------------------------------------------------------------------------------------------------------------
class _LogitsOf(nn.Module):
    """Wraps a Hugging Face classifier so that every contender is called the same way and returns plain logits."""

    def __init__(self, model: nn.Module, onednn_linear: bool = True):
        super().__init__()
        self.model = model
        self.onednn_linear = onednn_linear

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if self.onednn_linear:
            return self.model(pixel_values=pixel_values).logits
        from . import modeling_hf_vit

        saved, modeling_hf_vit._ONEDNN_LINEAR = modeling_hf_vit._ONEDNN_LINEAR, False
        try:
            return self.model(pixel_values=pixel_values).logits
        finally:
            modeling_hf_vit._ONEDNN_LINEAR = saved


_TOKEN_MERGING = re.compile(r"^hf_vit-sdpa-tome(\d+)(-int8|-int8static)?$")


def is_contender(name: str) -> bool:
    """Whether `name` is a known contender: one of CONTENDERS or EXTRA_CONTENDERS, or hf_vit with token merging
    ("hf_vit-sdpa-tome<R>", optionally "-int8" or "-int8static"), each optionally suffixed "+compile"."""
    base = name.removesuffix("+compile")
    return base in CONTENDERS + EXTRA_CONTENDERS or _TOKEN_MERGING.match(base) is not None


def cpu_fp32_inference_only(name: str) -> bool:
    return name.endswith(CPU_FP32_INFERENCE_ONLY)


class _OnnxRuntimeLogits(nn.Module):
    """A classifier exported to ONNX (dynamo exporter, dynamic batch) and run by onnxruntime's CPU provider with as
    many intra-op threads as torch uses; `forward(pixel_values) -> logits` as the other contenders."""

    def __init__(self, model: nn.Module, image_size: int):
        super().__init__()
        import tempfile

        import onnxruntime
        from torch.export import Dim

        model.eval()
        example = torch.randn(2, 3, image_size, image_size)
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "model.onnx"
            program = torch.onnx.export(
                _LogitsOf(model).eval(),
                (example,),
                dynamo=True,
                dynamic_shapes=({0: Dim.AUTO},),
                input_names=["pixel_values"],
                output_names=["logits"],
                verbose=False,
            )
            program.save(path)
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = torch.get_num_threads()
            options.inter_op_num_threads = 1
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(None, {"pixel_values": pixel_values.cpu().numpy()})[0])


def _transformers_vit(config: HfViTConfig) -> nn.Module:
    from transformers import ViTConfig, ViTForImageClassification

    tf_config = ViTConfig(
        image_size=config.image_size,
        patch_size=config.patch_size,
        hidden_size=config.hidden_size,
        num_hidden_layers=config.num_hidden_layers,
        num_attention_heads=config.num_attention_heads,
        intermediate_size=config.intermediate_size,
        num_labels=NUM_CLASSES,
    )
    return ViTForImageClassification(tf_config)


def build_contender(name: str, model: str, gradient_checkpointing: bool = False) -> nn.Module:
    """`name` is a contender (`is_contender`), optionally suffixed "+compile" (compiling is done by the caller)."""
    base = name.removesuffix("+compile")
    config = model_config(model)
    if not is_contender(name):
        raise ValueError(
            f"unknown contender {name!r}; known: {', '.join(CONTENDERS + EXTRA_CONTENDERS)}, hf_vit-sdpa-tome<R>"
            "[-int8|-int8static] (each optionally +compile)"
        )
    if base.endswith("-onnxruntime"):
        if base.startswith("hf_vit-"):
            from .modeling_hf_vit import HfViTForImageClassification

            return _OnnxRuntimeLogits(HfViTForImageClassification(config), config.image_size)
        return _OnnxRuntimeLogits(_transformers_vit(config), config.image_size)
    if base.startswith("hf_vit-"):
        from .modeling_hf_vit import HfViTForImageClassification

        config._attn_implementation = base.split("-")[1]
        merging = _TOKEN_MERGING.match(base)
        if merging:
            config.token_merging_r = int(merging[1])
        net = HfViTForImageClassification(config)
        if gradient_checkpointing:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if base.endswith("-int8"):
            from .quantization import quantize_int8

            net = quantize_int8(net, inplace=True)
        elif base.endswith("-int8static"):  # already compiled: its own contender, not a +compile variant
            from .quantization import quantize_int8_static

            size = config.image_size
            calibration = torch.randn(CALIBRATION_IMAGES, 3, size, size, generator=torch.Generator().manual_seed(0))
            net = quantize_int8_static(net, calibration)
        return _LogitsOf(net, onednn_linear=not base.endswith("-flinear"))
    if base.startswith("transformers-"):
        net = _transformers_vit(config)
        net.set_attn_implementation(base.split("-", 1)[1])
        if gradient_checkpointing:
            net.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return _LogitsOf(net)
    if base == "timm":
        from timm.models.vision_transformer import VisionTransformer

        net = VisionTransformer(
            img_size=config.image_size,
            patch_size=config.patch_size,
            embed_dim=config.hidden_size,
            depth=config.num_hidden_layers,
            num_heads=config.num_attention_heads,
            mlp_ratio=config.intermediate_size / config.hidden_size,
            num_classes=NUM_CLASSES,
        )
        net.set_grad_checkpointing(gradient_checkpointing)
        return net
    raise ValueError(f"unknown contender {name!r}")


# ---------------------------------------------------------------------------------------------------------------
# One step of each kind
# ---------------------------------------------------------------------------------------------------------------
def _autocast(device: str, mode: str):
    enabled = mode.endswith("bf16")
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


def make_step(net: nn.Module, mode: str, batch_size: int, image_size: int, device: str) -> Callable[[], None]:
    """A closure that runs one inference forward or one training step (forward, loss, backward, AdamW) of `net`."""
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(batch_size, 3, image_size, image_size, generator=generator).to(device)
    if mode.startswith("infer"):
        net.eval()

        def step():
            with torch.inference_mode(), _autocast(device, mode):
                net(pixel_values)

        return step
    labels = torch.randint(0, NUM_CLASSES, (batch_size,), generator=generator).to(device)
    net.train()
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)

    def step():
        with _autocast(device, mode):
            loss = F.cross_entropy(net(pixel_values), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def matmul_size(device: str, quick: bool = False) -> int:
    if quick:  # the tiny model's groups take milliseconds; a big matmul would dominate the run
        return 512
    return 8192 if device == "cuda" else 2048


# The flags that matter for these figures: oneDNN/MKL pick their kernels by them.
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# CPU flags meaning bf16 matmuls run in hardware (x86 AVX512-BF16 / AMX, Arm BF16). Without them oneDNN emulates
# bf16, and a 1024² bf16 matmul took ~4.6 s on an AVX2-only EPYC: minutes for one benchmark group.
NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 "flags", Arm "Features"); empty where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return set(value.split())
    except OSError:
        pass
    return set()


def native_bf16(device: str, flags: set[str] | None = None) -> bool:
    if device == "cuda":
        return True
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def make_matmul(dtype: torch.dtype, device: str, n: int) -> Callable[[], None]:
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)

    def step():
        torch.mm(a, b, out=out)

    return step


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_interleaved(
    steps: dict[str, Callable[[], None]], reps: int, iters: int, warmup: int, device: str
) -> dict[str, list[float]]:
    """Seconds per step of each closure: `warmup` untimed rounds, then `reps` rounds, each round timing `iters` steps
    of every closure in turn; the starting closure rotates each round so that none always runs first."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names) :] + names[: rep % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                steps[name]()
            _sync(device)
            times[name].append((time.perf_counter() - start) / iters)
    return times


# ---------------------------------------------------------------------------------------------------------------
# Peak memory, one fresh process per measurement
# ---------------------------------------------------------------------------------------------------------------
def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_probe(
    contender: str,
    model: str,
    batch_size: int,
    gradient_checkpointing: bool,
    device: str,
    mode: str,
    steps: int = 1,
    threads: int | None = None,
) -> dict:
    """Run in a fresh process: build one contender, run `steps` training steps, report the peak memory (MiB).

    One step is enough: the peak is in its backward (activations alive) or at its AdamW update (state created).

    On CPU the peak is the process's peak RSS (everything: libraries, weights, AdamW state, activations); `base_mb` is
    the RSS after building the model, before the first step. On CUDA it is `torch.cuda.max_memory_allocated`."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = build_contender(contender, model, gradient_checkpointing).to(device)
    if contender.endswith("+compile"):
        net = torch.compile(net)
    step = make_step(net, mode, batch_size, model_config(model).image_size, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = _rss_mb()
    seconds = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    if device == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
    return dict(
        contender=contender,
        model=model,
        batch_size=batch_size,
        mode=mode,
        gradient_checkpointing=gradient_checkpointing,
        peak_mb=peak,
        base_mb=base,
        last_step_s=seconds[-1],
    )


def run_memory_probe(spec: dict, timeout: float = 1800) -> dict:
    """`memory_probe(**spec)` in a fresh Python process (same interpreter, environment and thread count)."""
    code = (
        "import json, sys; from hf_vit.benchmark import memory_probe; "
        "print('RESULT ' + json.dumps(memory_probe(**json.loads(sys.argv[1]))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True, timeout=timeout
    )
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    raise RuntimeError(f"memory probe {spec} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")


# ---------------------------------------------------------------------------------------------------------------
# The whole benchmark
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Options:
    models: list[str] = field(default_factory=lambda: ["vit-small-patch16-224", "vit-base-patch16-224"])
    batch_sizes: list[int] = field(default_factory=lambda: [8])
    modes: list[str] = field(default_factory=lambda: ["infer-fp32", "infer-bf16", "train-fp32"])
    contenders: list[str] = field(default_factory=lambda: list(CONTENDERS))
    train_contenders: list[str] = field(default_factory=lambda: ["hf_vit-sdpa", "transformers-sdpa", "timm"])
    compile: bool = False
    reps: int = 5
    iters: int = 1
    warmup: int = 1
    device: str = "cpu"
    threads: int | None = None
    memory: bool = False
    memory_models: list[str] = field(default_factory=lambda: ["vit-base-patch16-224"])
    memory_batch_size: int = 32
    memory_contenders: list[str] = field(default_factory=lambda: ["hf_vit-sdpa", "transformers-sdpa", "timm"])
    quick: bool = False
    # run bf16 groups on a CPU without native bf16 (emulated: minutes per group); otherwise they are skipped, noted
    emulated_bf16: bool = False
    out_dir: str = "benchmark_results"
    command: str = ""


def machine_info(device: str) -> dict:
    import timm
    import transformers

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    flags = cpu_flags()
    info = dict(
        cpu=cpu,
        isa=[flag for flag in ISA_FLAGS if flag in flags],
        native_bf16=native_bf16(device, flags),
        cpu_count=os.cpu_count(),
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        torch=torch.__version__,
        transformers=transformers.__version__,
        timm=timm.__version__,
        device=device,
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    )
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def run_benchmark(
    opts: Options, log: Callable[[str], None] = print, on_progress: Callable[[dict], None] | None = None
) -> dict:
    """Runs every group and memory probe of `opts`; `on_progress(report)` is called with the report so far after
    each, so that a long run interrupted midway still leaves its finished groups written."""
    require("benchmark", "`run_benchmark`")
    if opts.threads:
        torch.set_num_threads(opts.threads)
    device = opts.device
    results, peaks, memory = [], [], []
    load_before = _load()
    started = time.perf_counter()
    report = dict(
        machine=machine_info(device),
        load_before=load_before,
        load_after=None,
        command=opts.command,
        options=opts.__dict__,
        seconds=0.0,
        matmul_peaks=peaks,
        results=results,
        memory=memory,
        notes="img/s: median of interleaved reps; training-step FLOPs = 3x forward FLOPs; % of peak against the "
        "square matmul of the same dtype timed in the same group",
        skipped=[],
    )
    modes = list(opts.modes)
    bf16_modes = [mode for mode in modes if mode.endswith("bf16")]
    if bf16_modes and not native_bf16(device) and not opts.emulated_bf16:
        modes = [mode for mode in modes if mode not in bf16_modes]
        note = (
            f"skipped {', '.join(bf16_modes)}: this CPU has no native bf16 (none of the flags "
            f"{', '.join(NATIVE_BF16_FLAGS)}), so oneDNN would emulate it at a fraction of the fp32 speed "
            "(minutes per group); name the modes with --modes to run them anyway"
        )
        report["skipped"].append(note)
        log(note)

    def progress():
        report.update(load_after=_load(), seconds=time.perf_counter() - started)
        if on_progress is not None:
            on_progress(report)

    for model in opts.models:
        config = model_config(model)
        image_size = config.image_size
        flops = forward_flops(config, num_labels=NUM_CLASSES)
        for batch_size in opts.batch_sizes:
            for mode in modes:
                names = list(opts.train_contenders if mode.startswith("train") else opts.contenders)
                if opts.compile:
                    names += [f"{n}+compile" for n in names if n.endswith("sdpa") or n == "timm"]
                if mode != "infer-fp32" or device != "cpu":
                    skipped = [n for n in names if cpu_fp32_inference_only(n)]
                    names = [n for n in names if n not in skipped]
                    if skipped and mode.startswith("infer"):
                        note = f"{', '.join(skipped)} skipped in {mode} on {device}: CPU float32 inference only"
                        if note not in report["skipped"]:
                            report["skipped"].append(note)
                steps, compile_s, params = {}, {}, {}
                for name in names:
                    torch.manual_seed(0)
                    net = build_contender(name, model).to(device)
                    params[name] = count_parameters(net)
                    if name.endswith("+compile"):
                        net = torch.compile(net)
                    steps[name] = make_step(net, mode, batch_size, image_size, device)
                    if name.endswith("+compile"):  # the first call compiles: keep it out of the warm-up figures
                        start = time.perf_counter()
                        # inference: inductor with freezing (weights folded in as constants, as for deployment)
                        from torch._inductor import config as inductor_config

                        with inductor_config.patch(freezing=mode.startswith("infer")):
                            steps[name]()
                        _sync(device)
                        compile_s[name] = time.perf_counter() - start
                dtype = torch.bfloat16 if mode.endswith("bf16") else torch.float32
                n = matmul_size(device, opts.quick)
                steps[MATMUL] = make_matmul(dtype, device, n)
                log(
                    f"[{time.perf_counter() - started:6.0f}s] {model} batch {batch_size} {mode}: "
                    f"{', '.join(names)} (load {_load()})"
                )
                times = time_interleaved(steps, opts.reps, opts.iters, opts.warmup, device)
                peak_gflops = 2 * n**3 / statistics.median(times.pop(MATMUL)) / 1e9
                peaks.append(
                    dict(
                        model=model,
                        batch_size=batch_size,
                        mode=mode,
                        dtype=str(dtype).removeprefix("torch."),
                        n=n,
                        gflops=peak_gflops,
                    )
                )
                step_flops = flops * batch_size * (3 if mode.startswith("train") else 1)
                group = []
                for name, seconds in times.items():
                    median = statistics.median(seconds)
                    # FLOP rates only where the contender does the dense float math the count describes
                    dense = not (_TOKEN_MERGING.match(name.removesuffix("+compile")) or "-int8" in name)
                    group.append(
                        dict(
                            model=model,
                            batch_size=batch_size,
                            mode=mode,
                            contender=name,
                            parameters=params[name],
                            times_s=seconds,
                            median_s=median,
                            images_per_s=batch_size / median,
                            spread=(max(seconds) - min(seconds)) / median,
                            gflops=step_flops / median / 1e9 if dense else None,
                            pct_of_peak=100 * step_flops / median / 1e9 / peak_gflops if dense else None,
                            compile_s=compile_s.get(name),
                        )
                    )
                by_name = {r["contender"]: r for r in group}
                for r in group:
                    for key, ref in (("vs_timm", BASELINE), ("vs_transformers", HF_BASELINE)):
                        # compiled contenders are compared with the compiled reference when there is one
                        ref_row = by_name.get(ref + "+compile") if r["contender"].endswith("+compile") else None
                        ref_row = ref_row or by_name.get(ref)
                        r[key] = r["images_per_s"] / ref_row["images_per_s"] if ref_row else None
                results += group
                del steps
                progress()
    if opts.memory:
        mode = "train-bf16" if device == "cuda" else "train-fp32"
        for model in opts.memory_models:
            for name in opts.memory_contenders:
                for gc in (False, True):
                    spec = dict(
                        contender=name,
                        model=model,
                        batch_size=opts.memory_batch_size,
                        gradient_checkpointing=gc,
                        device=device,
                        mode=mode,
                        threads=torch.get_num_threads(),
                    )
                    log(f"[{time.perf_counter() - started:6.0f}s] memory: {spec}")
                    r = run_memory_probe(spec)
                    if gc:
                        without = memory[-1]
                        r["cut_pct"] = 100 * (1 - r["peak_mb"] / without["peak_mb"])
                        # the part that checkpointing can act on: the activations on top of the process at rest
                        if device != "cuda":
                            r["cut_above_base_pct"] = 100 * (
                                1 - (r["peak_mb"] - r["base_mb"]) / (without["peak_mb"] - without["base_mb"])
                            )
                    memory.append(r)
                    progress()
    progress()
    return report


# ---------------------------------------------------------------------------------------------------------------
# Outputs: markdown table, JSON, PNG
# ---------------------------------------------------------------------------------------------------------------
def _x(value) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _number(value, unit: str) -> str:
    return "–" if value is None else f"{value:.0f}{unit}"


def markdown(report: dict) -> str:
    m = report["machine"]
    where = m.get("gpu") or (
        f"{m['cpu']} ({' '.join(m.get('isa', [])) or 'ISA flags unknown'}), {m['cpu_count']} cores, "
        f"{m['torch_threads']} torch threads"
    )
    lines = [
        f"Machine: {where}; torch {m['torch']}, transformers {m['transformers']}, timm {m['timm']}; {m['date']}; "
        f"load average (1/5/15 min) {report['load_before']} before, {report['load_after']} after; "
        f"{report['seconds']:.0f} s.",
        "",
        "Matmul peak measured in the same run (interleaved with each group): "
        + "; ".join(
            sorted(
                {
                    f"{p['dtype']} {p['n']}²: {p['gflops']:.0f} GFLOP/s ({p['model']} b{p['batch_size']} {p['mode']})"
                    for p in report["matmul_peaks"]
                }
            )
        ),
        "",
        *[f"Note: {note}." for note in report.get("skipped", [])],
        *([""] if report.get("skipped") else []),
        "| model | mode | batch | contender | img/s | spread | vs timm | vs transformers-sdpa | GFLOP/s | % of peak |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        name = f"**{r['contender']}**" if r["contender"].startswith("hf_vit") else r["contender"]
        lines.append(
            f"| {r['model']} | {r['mode']} | {r['batch_size']} | {name} | "
            f"{r['images_per_s']:.3g} | ±{50 * r['spread']:.0f}% | "
            f"{_x(r['vs_timm'])} | {_x(r['vs_transformers'])} | {_number(r['gflops'], '')} | "
            f"{_number(r['pct_of_peak'], '%')} |"
        )
    lines.append("")
    lines.append(
        "spread: half the (max − min) of the reps, relative to the median. Training-step FLOPs are 3× the forward's. "
        "+compile: torch.compile (inductor; with freezing for inference). -tome<R>: token merging, R pairs per block; "
        "-int8: dynamic int8 linears; -int8static: static int8 (PT2E, compiled); no FLOP rate for these (they skip "
        "part of the dense math or do it in int8)."
    )
    if report["memory"]:
        unit = "max_memory_allocated" if m["device"] == "cuda" else "peak RSS"
        lines += [
            "",
            f"Peak training memory ({unit}, MiB; fresh process per row, {report['memory'][0]['mode']}):",
            "",
            (
                "| model | batch | contender | gradient checkpointing | peak MiB | before 1st step MiB "
                "| cut by checkpointing | cut above before-step | s/step (not interleaved) |"
            ),
            "|---|---:|---|---|---:|---:|---:|---:|---:|",
        ]
        for r in report["memory"]:
            cut = f"{r['cut_pct']:.0f}%" if "cut_pct" in r else ""
            cut_above = f"{r['cut_above_base_pct']:.0f}%" if "cut_above_base_pct" in r else ""
            lines.append(
                f"| {r['model']} | {r['batch_size']} | {r['contender']} | "
                f"{'on' if r['gradient_checkpointing'] else 'off'} | "
                f"{r['peak_mb']:.0f} | {r['base_mb']:.0f} | {cut} | {cut_above} | {r['last_step_s']:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = []
    for r in report["results"]:
        key = (r["model"], r["batch_size"], r["mode"])
        if key not in groups:
            groups.append(key)
    contenders = list(dict.fromkeys(r["contender"] for r in report["results"]))
    memory = report["memory"]
    panels = int(bool(groups)) + int(bool(memory))
    fig, axes = plt.subplots(
        1, max(panels, 1), figsize=(max(6, 1.6 * len(groups)) + 4 * bool(memory), 4.2), squeeze=False
    )
    axes = list(axes[0])
    if memory:  # peak training memory, checkpointing off vs on
        mem_ax = axes.pop()
        labels = [
            f"{r['contender']}\n{r['model'].replace('-patch16-224', '/16')} b{r['batch_size']}"
            for r in memory
            if not r["gradient_checkpointing"]
        ]
        for offset, gc in ((-0.2, False), (0.2, True)):
            values = [r["peak_mb"] for r in memory if r["gradient_checkpointing"] == gc]
            mem_ax.bar(
                [i + offset for i in range(len(values))], values, 0.4, label=f"checkpointing {'on' if gc else 'off'}"
            )
        mem_ax.set_xticks(range(len(labels)))
        mem_ax.set_xticklabels(labels, fontsize=7)
        mem_ax.set_ylabel("peak training memory (MiB)")
        mem_ax.legend(fontsize=7)
    if not groups:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        return
    ax = axes[0]
    width = 0.8 / len(contenders)
    for i, name in enumerate(contenders):
        xs, ys = [], []
        for g, key in enumerate(groups):
            row = next(
                (
                    r
                    for r in report["results"]
                    if (r["model"], r["batch_size"], r["mode"]) == key and r["contender"] == name
                ),
                None,
            )
            if row is not None and row["vs_timm"] is not None:
                xs.append(g + (i - (len(contenders) - 1) / 2) * width)
                ys.append(row["vs_timm"])
        ax.bar(xs, ys, width, label=name)
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{m.replace('-patch16-224', '/16')}\nb{b} {mode}" for m, b, mode in groups], fontsize=8)
    ax.set_ylabel("throughput relative to timm (median)")
    m = report["machine"]
    ax.set_title(
        f"hf_vit vs timm vs transformers ViT — {m.get('gpu') or m['cpu']} ({m['torch_threads']} threads)", fontsize=9
    )
    ax.legend(fontsize=7, ncol=3, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_outputs(report: dict, out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = dict(markdown=out / "benchmark.md", json=out / "benchmark.json", png=out / "benchmark.png")
    from .secrets import redact

    paths["markdown"].write_text(redact(markdown(report)))
    paths["json"].write_text(redact(json.dumps(report, indent=1)))
    plot(report, paths["png"])
    return paths


__all__ = [
    "CONTENDERS",
    "cpu_flags",
    "is_contender",
    "native_bf16",
    "EXTRA_CONTENDERS",
    "MODES",
    "Options",
    "build_contender",
    "markdown",
    "memory_probe",
    "run_benchmark",
    "write_outputs",
]
