"""scripts/benchmark.py runs end to end on the tiny model and writes its table, JSON and chart.

Timings are never asserted: the machines running the tests are shared and noisy (DESIGN.md, Benchmarks).
"""

import json

from helpers import REPO, run_python


def test_benchmark_quick_run_writes_table_json_and_png(tmp_path):
    out = tmp_path / "bench"
    # one thread: on a busy 2-core machine two threads of tiny ops mostly wait on each other
    done = run_python(
        [str(REPO / "scripts" / "benchmark.py"), "--quick", "--threads", "1", "--reps", "5",
         "--memory", "--memory-contenders", "hf_vit-sdpa", "--out-dir", str(out)],
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    table = (out / "benchmark.md").read_text()
    assert "| model | mode | batch | contender |" in table and "hf_vit-sdpa" in table
    assert table.strip() in done.stdout  # the table is also printed

    report = json.loads((out / "benchmark.json").read_text())
    rows = {(r["mode"], r["contender"]) for r in report["results"]}
    for contender in ("hf_vit-sdpa", "hf_vit-eager", "transformers-sdpa", "transformers-eager", "timm"):
        assert ("infer-fp32", contender) in rows and ("infer-bf16", contender) in rows
    for contender in ("hf_vit-sdpa", "transformers-sdpa", "timm"):
        assert ("train-fp32", contender) in rows
    for r in report["results"]:
        assert len(r["times_s"]) == 5 and r["images_per_s"] > 0 and r["vs_timm"] > 0 and r["vs_transformers"] > 0
    assert {p["dtype"] for p in report["matmul_peaks"]} == {"float32", "bfloat16"}
    assert [m["gradient_checkpointing"] for m in report["memory"]] == [False, True]
    assert all(m["peak_mb"] > 0 for m in report["memory"])
    assert report["machine"]["torch_threads"] == 1

    png = (out / "benchmark.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_benchmark_rejects_unknown_names(tmp_path):
    done = run_python([str(REPO / "scripts" / "benchmark.py"), "--quick", "--contenders", "nope", "--out-dir", str(tmp_path)])
    assert done.returncode != 0 and "unknown contender" in done.stderr
