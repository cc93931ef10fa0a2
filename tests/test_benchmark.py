"""scripts/benchmark.py runs end to end on the tiny model and writes its table, JSON and chart.

Timings are never asserted: the machines running the tests are shared and noisy.
"""

import json

import pytest
from helpers import REPO, run_main, run_python

from hf_vit import benchmark


@pytest.mark.slow
def test_benchmark_quick_run_writes_table_json_and_png(tmp_path):
    out = tmp_path / "bench"
    # one thread: on a busy 2-core machine two threads of tiny ops mostly wait on each other
    done = run_python(
        [
            str(REPO / "scripts" / "benchmark.py"),
            "--quick",
            "--threads",
            "1",
            "--reps",
            "5",
            "--memory",
            "--memory-contenders",
            "hf_vit-sdpa",
            "--out-dir",
            str(out),
        ],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    table = (out / "benchmark.md").read_text()
    assert "| model | mode | batch | contender |" in table and "hf_vit-sdpa" in table
    assert table.strip() in done.stdout  # the table is also printed

    report = json.loads((out / "benchmark.json").read_text())
    rows = {(r["mode"], r["contender"]) for r in report["results"]}
    native = benchmark.native_bf16("cpu")
    assert report["machine"]["native_bf16"] == native
    for contender in ("hf_vit-sdpa", "hf_vit-eager", "transformers-sdpa", "transformers-eager", "timm"):
        assert ("infer-fp32", contender) in rows
        assert (("infer-bf16", contender) in rows) == native  # emulated bf16 would take minutes: skipped, noted
    for contender in ("hf_vit-sdpa", "transformers-sdpa", "timm"):
        assert ("train-fp32", contender) in rows
    for r in report["results"]:
        assert len(r["times_s"]) == 5 and r["images_per_s"] > 0 and r["vs_timm"] > 0 and r["vs_transformers"] > 0
    assert {p["dtype"] for p in report["matmul_peaks"]} == ({"float32", "bfloat16"} if native else {"float32"})
    assert {p["n"] for p in report["matmul_peaks"]} == {512}
    assert bool(report["skipped"]) != native and ("no native bf16" in table) != native
    assert [m["gradient_checkpointing"] for m in report["memory"]] == [False, True]
    assert all(m["peak_mb"] > 0 for m in report["memory"])
    assert report["machine"]["torch_threads"] == 1

    png = (out / "benchmark.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_benchmark_rejects_unknown_names(tmp_path):
    done = run_main(["scripts/benchmark.py", "--quick", "--contenders", "nope", "--out-dir", str(tmp_path)])
    assert done.returncode == 2 and "unknown contender" in done.stderr


def test_native_bf16_is_read_from_the_cpu_flags():
    assert benchmark.native_bf16("cpu", {"avx2", "fma", "avx512f", "avx512_bf16"})  # AVX-512 EPYC (Zen 4)
    assert benchmark.native_bf16("cpu", {"avx2", "amx_bf16", "amx_tile"})  # Sapphire Rapids
    assert not benchmark.native_bf16("cpu", {"avx2", "fma", "f16c"})  # AVX2-only EPYC: emulated
    assert not benchmark.native_bf16("cpu", set())  # unknown: assume emulated, keep --quick quick
    assert benchmark.native_bf16("cuda", set())


@pytest.mark.parametrize("explicit", [False, True])
def test_bf16_groups_are_skipped_and_noted_without_native_bf16(monkeypatch, explicit):
    """What an AVX2-only CPU gets, whatever CPU runs the test: bf16 skipped with a note, unless asked for by name."""
    monkeypatch.setattr(benchmark, "native_bf16", lambda device, flags=None: False)
    monkeypatch.setattr(benchmark, "time_interleaved", lambda steps, *a, **k: {name: [1e-3] for name in steps})
    lines = []
    opts = benchmark.Options(
        models=["tiny"],
        modes=["infer-fp32", "infer-bf16"],
        contenders=["hf_vit-sdpa", "timm"],
        reps=1,
        quick=True,
        emulated_bf16=explicit,
    )
    report = benchmark.run_benchmark(opts, log=lines.append)
    modes = {r["mode"] for r in report["results"]}
    if explicit:
        assert modes == {"infer-fp32", "infer-bf16"} and not report["skipped"]
    else:
        assert modes == {"infer-fp32"}
        assert "skipped infer-bf16: this CPU has no native bf16" in report["skipped"][0]
        assert report["skipped"][0] in lines and "no native bf16" in benchmark.markdown(report)


def test_benchmark_out_dir_that_is_a_file_is_refused_before_running(tmp_path):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    done = run_main(["scripts/benchmark.py", "--quick", "--out-dir", str(target)])
    assert done.returncode == 2 and "--out-dir" in done.stderr and "is a file" in done.stderr
    assert done.stderr.count("\n") == 1 and "batch" not in done.stderr  # one line; no group was started
    assert target.read_text() == "mine"


def test_inference_contenders_compiled_onnxruntime_int8_and_token_merging_run_side_by_side(monkeypatch):
    """Every inference path in one interleaved group (tiny model). Inductor's compile takes minutes on a loaded 2-core
    machine, so torch.compile runs with the eager backend here: the benchmark's compiled-contender plumbing is what is
    tested; inductor itself is exercised where the benchmark is run for its figures."""
    import torch

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda net, **kwargs: real_compile(net, backend="eager"))
    names = ["hf_vit-sdpa", "timm", "hf_vit-sdpa-int8", "hf_vit-sdpa-tome2", "hf_vit-sdpa-tome2-int8"]
    names += ["hf_vit-onnxruntime", "hf_vit-sdpa-int8static"]
    opts = benchmark.Options(
        models=["tiny"], modes=["infer-fp32", "train-fp32"], contenders=names, train_contenders=["hf_vit-sdpa"]
    )
    opts.compile, opts.reps, opts.iters, opts.warmup, opts.quick = True, 2, 1, 0, True
    report = benchmark.run_benchmark(opts, log=lambda line: None)
    rows = {(r["mode"], r["contender"]): r for r in report["results"]}
    for name in names + ["hf_vit-sdpa+compile", "timm+compile"]:
        assert rows[("infer-fp32", name)]["images_per_s"] > 0
    assert rows[("infer-fp32", "hf_vit-sdpa+compile")]["compile_s"] is not None
    # FLOP rates only for the dense float contenders
    assert rows[("infer-fp32", "hf_vit-sdpa-tome2")]["gflops"] is None
    assert rows[("infer-fp32", "hf_vit-sdpa-int8")]["pct_of_peak"] is None
    assert rows[("infer-fp32", "hf_vit-sdpa-int8static")]["gflops"] is None
    assert rows[("infer-fp32", "hf_vit-onnxruntime")]["gflops"] > 0
    assert {name for mode, name in rows if mode == "train-fp32"} == {"hf_vit-sdpa", "hf_vit-sdpa+compile"}
    table = benchmark.markdown(report)
    assert "| hf_vit-sdpa-tome2-int8 |" not in table and "**hf_vit-sdpa-tome2-int8**" in table


def test_benchmark_cli_flags_add_the_inference_contenders(monkeypatch, tmp_path):
    from helpers import run_main

    from hf_vit.commands import benchmark as command

    seen = {}

    def fake_run(opts, log, on_progress):
        seen["opts"] = opts
        return benchmark.run_benchmark(benchmark.Options(models=[], quick=True), log=log)

    monkeypatch.setattr(command, "run_benchmark", fake_run)
    args = ["scripts/benchmark.py", "--quick", "--out-dir", tmp_path, "--token_merging_r", "8,13", "--int8", "--onnx"]
    done = run_main([*args, "--int8_static"])
    assert done.returncode == 0, done.stderr
    assert seen["opts"].contenders[5:] == [
        "hf_vit-sdpa-tome8",
        "hf_vit-sdpa-tome13",
        "hf_vit-sdpa-int8",
        "hf_vit-sdpa-tome8-int8",
        "hf_vit-sdpa-tome13-int8",
        "hf_vit-sdpa-int8static",
        "hf_vit-sdpa-tome8-int8static",
        "hf_vit-sdpa-tome13-int8static",
        "hf_vit-onnxruntime",
        "transformers-onnxruntime",
    ]
    done = run_main(
        ["scripts/benchmark.py", "--quick", "--out-dir", tmp_path, "--train-contenders", "hf_vit-sdpa-int8"]
    )
    assert done.returncode == 2 and "is an inference contender" in done.stderr
