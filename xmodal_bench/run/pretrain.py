"""`xmodal-bench pretrain`: build the tiny scale's pretrained start, `synthclip`.

The recipe is data (`benchmarks/pretrain/synthclip.yaml`): one `bench` run of CLIP on
`synth_pretrain` from random weights (resumable with `--resume`, with Lightning's progress bar),
then its backbone's weights are written as float16 safetensors under the data root,
`{data_root}/synthclip/synthclip-xmb-tiny.safetensors`, beside a record of how they were made
(sha256, the command, the corpus's generator and manifest hash, the run's steps, time and test
metrics on the corpus's held-out split). `--install` also copies them over the copy that ships with
the package (what `backbone.pretrained=synthclip` loads).
"""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.backbones.pretrained import named_weights, sha256
from xmodal_bench.backbones.weights import extract_open_clip_state
from xmodal_bench.config import benchmarks_dir, read_layer
from xmodal_bench.errors import UserError
from xmodal_bench.run.bench import bench
from xmodal_bench.run.folders import run_dir_for
from xmodal_bench.run.request import RunRequest
from xmodal_bench.safe_load import safe_load

RECIPE = "synthclip"


def recipe_request(data_root: str | None, runs_dir: str | None, max_epochs: int | None) -> RunRequest:
    """The pretraining run of the recipe file, as a `RunRequest`."""
    path = benchmarks_dir() / "pretrain" / f"{RECIPE}.yaml"
    recipe = read_layer(path)
    try:
        return RunRequest(
            method=str(recipe["method"]),
            dataset=str(recipe["dataset"]),
            scale=str(recipe.get("scale", "tiny")),
            seed=int(recipe.get("seed", 0)),
            data_root=data_root,
            runs_dir=runs_dir,
            max_epochs=max_epochs,
            overrides=tuple(str(item) for item in recipe.get("overrides") or []),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path}: not a pretraining recipe ({exc})") from None


def export_weights(checkpoint: Path, out: Path) -> Path:
    """The backbone of a `bench` checkpoint as float16 open_clip safetensors (written atomically)."""
    state = extract_open_clip_state(safe_load(checkpoint))
    half = {
        key: value.to(torch.float16) if value.is_floating_point() else value for key, value in state.items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.tmp")
    save_file({key: value.contiguous() for key, value in half.items()}, str(partial))
    partial.replace(out)
    return out


def pretrain(
    data_root: str = "data",
    runs_dir: str = "runs",
    resume: bool = False,
    max_epochs: int | None = None,
    install: bool = False,
    command: str = "xmodal-bench pretrain",
) -> dict[str, Any]:
    """Train the recipe, export the weights, write their record; returns the record."""
    request = recipe_request(data_root, runs_dir, max_epochs)
    cfg = request.compose()
    result = bench(cfg, resume=resume)
    run_dir = run_dir_for(cfg)
    model, shipped = named_weights(RECIPE)
    out = Path(data_root) / RECIPE / shipped.name
    export_weights(run_dir / "checkpoints" / "last.ckpt", out)
    manifest = Path(cfg.data.root) / cfg.data.name / "manifest.json"
    record = {
        "name": RECIPE,
        "model": model,
        "file": out.name,
        "dtype": "float16",
        "sha256": sha256(out),
        "bytes": out.stat().st_size,
        "command": command,
        "recipe": f"benchmarks/pretrain/{RECIPE}.yaml",
        "corpus": {"dataset": cfg.data.name, "manifest_sha256": sha256(manifest)},
        "run": {
            "run_id": result["run_id"],
            "steps": result["training"]["steps"],
            "epochs": result["training"]["epochs"],
            "fit_seconds": round(result["efficiency"].get("fit_seconds", 0.0), 1),
            "train_samples_per_s": result["efficiency"].get("train_samples_per_s"),
            "test_metrics": result["metrics"],
            "hardware": result["environment"]["hardware"],
            "versions": result["environment"]["versions"],
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    atomic_write_json(out.with_suffix(".json"), record)
    if install:
        shutil.copyfile(out, shipped)
        atomic_write_json(shipped.with_suffix(".json"), record)
    return record
