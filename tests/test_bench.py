"""bench/scale.py: the real shapes are the published models', and the script runs end to end (tiny shapes)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def scale():
    sys.path.insert(0, str(BENCH))
    try:
        import scale

        yield scale
    finally:
        sys.path.remove(str(BENCH))


def test_the_real_shapes_have_the_published_parameter_counts(scale):
    """Counts from the model cards and checkpoints (Llama-3-8B 8,030,261,248; Qwen2.5-7B 7,615,616,512;
    SDXL's UNet 2,567,463,684; CLIP ViT-L/14's text tower 123,060,480; T5-XXL's encoder 4,762,310,656)."""
    sdxl = scale.plan("llama3-8b", "sdxl")
    assert sdxl["llama3-8b"] == 8_030_261_248
    assert sdxl["SDXL UNet"] == 2_567_463_684
    assert sdxl["CLIP-L"] == 123_060_480
    sd3 = scale.plan("qwen2.5-7b", "sd3.5-medium")
    assert sd3["qwen2.5-7b"] == 7_615_616_512
    assert sd3["T5-XXL encoder"] == 4_762_310_656


def test_the_scale_bench_runs_at_tiny_shapes(tmp_path):
    out = tmp_path / "scale.json"
    args = ["--shapes", "tiny", "--steps", "3", "--batch", "1", "--sample-steps", "2", "--json", str(out)]
    done = subprocess.run([sys.executable, str(BENCH / "scale.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "pairs/s" in done.stdout and "rows/s" in done.stdout
    results = json.loads(out.read_text())["results"]
    assert list(results) == [
        "bf16, LoRA, adapter reference",
        "+ gradient checkpointing",
        "+ cached reference",
    ]
    assert all(r["step_s"] > 0 and r["peak_mb"] > 0 for r in results.values())
    assert results["bf16, LoRA, adapter reference"]["sample_s"] > 0
