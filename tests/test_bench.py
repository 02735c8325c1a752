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
    """Times and memory are measurements, not knowable here: what is checked is the run's structure (each
    setting a row, the measured quantities each row holds, the arguments recorded) and that the printed
    table is the JSON's numbers: pairs/s = batch / step time, the peak memory, and the ratios to the
    first setting (1.00x for the first itself), worked out here from the stored numbers."""
    out = tmp_path / "scale.json"
    args = ["--shapes", "tiny", "--steps", "3", "--batch", "1", "--sample-steps", "2", "--json", str(out)]
    done = subprocess.run([sys.executable, str(BENCH / "scale.py"), *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    stored = json.loads(out.read_text())
    results = stored["results"]
    names = ["bf16, LoRA, adapter reference", "+ gradient checkpointing", "+ cached reference"]
    assert list(results) == names
    assert set(results[names[0]]) == {"step_s", "peak_mb", "sample_s"}  # the first setting also samples
    assert all(set(results[n]) == {"step_s", "peak_mb"} for n in names[1:])
    assert {k: stored["args"][k] for k in ("shapes", "steps", "batch", "sample_steps")} == {
        "shapes": "tiny",
        "steps": "3",
        "batch": "1",
        "sample_steps": "2",
    }
    lines = done.stdout.splitlines()
    header = next(k for k, line in enumerate(lines) if line.startswith("setting"))
    assert lines[header].split() == ["setting", "pairs/s", "peak", "MiB", "speed", "memory"]
    first = results[names[0]]
    for k, name in enumerate(names):
        row = lines[header + 1 + k]
        assert row.startswith(name)
        pairs_per_s, peak, speed, memory = row[len(name) :].split()
        r = results[name]
        assert float(pairs_per_s) == pytest.approx(1 / r["step_s"], abs=0.0005 + 1e-9)  # batch 1, 3 digits
        assert float(peak) == pytest.approx(r["peak_mb"], abs=0.5 + 1e-9)
        assert float(speed.removesuffix("x")) == pytest.approx(
            first["step_s"] / r["step_s"], abs=0.005 + 1e-9
        )
        assert float(memory.removesuffix("x")) == pytest.approx(
            r["peak_mb"] / first["peak_mb"], abs=0.005 + 1e-9
        )
        if k == 0:
            assert speed == memory == "1.00x"
    sampling = next(line for line in lines if line.startswith("sampling: "))
    assert float(sampling.split()[1]) == pytest.approx(1 / first["sample_s"], abs=0.0005 + 1e-9)
    assert sampling.endswith("rows/s (2 denoising steps per image)")
