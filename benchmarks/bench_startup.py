"""Start-up of `relaxkd predict` against `python -c "import torch"` (BENCHMARKS.md, "Start-up").

Each round runs, one after the other in fresh processes (side by side, so both see the same load):

- ``python -c "import torch"`` (the floor: predict needs torch),
- ``relaxkd predict --model EXPORT one.png`` (one image, the TorchScript export),
- ``relaxkd predict --model /nonexistent one.png`` and ``--model EXPORT /nonexistent.png`` (bad paths).

It prints the median wall time of each over ``--rounds`` rounds, the ratio predict / import torch
(target: at most 1.5) and the machine's cores and load average before and after.

    python benchmarks/bench_startup.py                      # an export of the demo's student (tiny_cnn, 16 px)
    python benchmarks/bench_startup.py --model export/      # an export you made (`relaxkd export ... --out export`)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def demo_export(folder: Path) -> Path:
    """What `relaxkd export configs/demo.yaml` writes, with random weights: the demo's student
    (tiny_cnn, 10 classes, 16 px) as safetensors + TorchScript and the export's manifest."""
    import torch
    from safetensors.torch import save_file

    from relaxkd.models import build_backbone
    from relaxkd.stages.export import _write_export_manifest
    from relaxkd.stages.predict import INFO, TORCHSCRIPT, WEIGHTS, quiet_torchscript

    classes = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
    model = build_backbone("tiny_cnn", len(classes), "none").eval()
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / WEIGHTS))
    info = {"arch": "tiny_cnn", "num_classes": len(classes), "classes": classes, "image_size": 16, "input_stats": "imagenet"}
    (folder / INFO).write_text(json.dumps(info))
    with quiet_torchscript():
        torch.jit.trace(model, torch.zeros(1, 3, 16, 16)).save(str(folder / TORCHSCRIPT))
    _write_export_manifest(folder, [folder / WEIGHTS, folder / INFO, folder / TORCHSCRIPT])
    return folder


def relaxkd_command() -> list[str]:
    """The console script beside this interpreter (what users type), else ``python -m relaxkd``."""
    script = Path(sys.executable).with_name("relaxkd")
    return [str(script)] if script.exists() else [sys.executable, "-m", "relaxkd"]


def wall(command: list[str], expect_code: int) -> float:
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if proc.returncode != expect_code:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}, expected {expect_code}:\n{proc.stderr}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="an export folder (default: a random-weight export of the demo's student)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or demo_export(Path(tmp) / "export")
        image = Path(tmp) / "one.png"
        Image.new("RGB", (16, 16), (200, 30, 30)).save(image)
        relaxkd = relaxkd_command()
        commands = {
            "import_torch": ([sys.executable, "-c", "import torch"], 0),
            "predict_one_image": ([*relaxkd, "predict", "--model", str(model), str(image)], 0),
            "predict_bad_model": ([*relaxkd, "predict", "--model", "/nonexistent", str(image)], 2),
            "predict_bad_image": ([*relaxkd, "predict", "--model", str(model), "/nonexistent.png"], 2),
        }
        load_before = os.getloadavg()
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (command, code) in commands.items():
                times[name].append(wall(command, code))
        load_after = os.getloadavg()

    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        print(f"{name:18s} median {medians[name]:.2f} s   ({', '.join(f'{v:.2f}' for v in values)})")
    ratio = medians["predict_one_image"] / medians["import_torch"]
    print(f"predict / import torch: {ratio:.2f} (target <= 1.5); bad paths answered in "
          f"{max(medians['predict_bad_model'], medians['predict_bad_image']):.2f} s (target < 1.5)")
    print(f"machine: {os.cpu_count()} cores, load average {load_before[0]:.2f} before, {load_after[0]:.2f} after; "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}")
    print(json.dumps({"startup_predict_over_import_torch": round(ratio, 3),
                      **{f"startup_{name}_seconds": round(value, 3) for name, value in medians.items()},
                      "load_average_before": round(load_before[0], 2), "load_average_after": round(load_after[0], 2)}))


if __name__ == "__main__":
    main()
