"""Start a run from another run's weights: `backbone.pretrained=run:METHOD`.

At `base` scale every method fine-tunes the same pretrained CLIP, as the papers do. At `tiny`
scale there is no pretrained model, and a loss that was designed for fine-tuning may not leave
random weights at all (IRRA's SDM falls onto its uniform-distribution plateau). `run:clip` names
the finished `clip` run on the same data (dataset, data root, synthetic sizes, splits), seed,
scale and backbone, under the same runs folder; its best checkpoint (else its last) becomes the
backbone's starting weights. The reference, not the resolved path, is what the run's config and
config id keep, so the run folder does not depend on where the source happens to live.

Only first-stage runs are sources (a source's own `backbone.pretrained` is not a `run:`
reference), so a chain never silently points at a fine-tuned run. When several finished runs
match (e.g. different epochs), the newest is used and named on stdout and in `results.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from xmodal_bench.config import with_values
from xmodal_bench.errors import UserError
from xmodal_bench.registry import parse_method_spec
from xmodal_bench.report.results import RESULTS_FILE

RUN_PREFIX = "run:"
# What makes a source "the same data": the run's dataset identity, not its batch size or workers
_DATA_KEYS = ("name", "root", "synthetic", "train_split")
_CHECKPOINTS = ("best.ckpt", "last.ckpt")


def referenced_method(cfg: DictConfig) -> str | None:
    """The method named by `backbone.pretrained=run:METHOD`, or None for any other value."""
    pretrained = cfg.backbone.get("pretrained")
    if not isinstance(pretrained, str) or not pretrained.startswith(RUN_PREFIX):
        return None
    method = pretrained[len(RUN_PREFIX) :].strip()
    if not method:
        raise UserError("backbone.pretrained=run:METHOD needs a method name, e.g. run:clip")
    return method


def _data_identity(data: dict[str, Any]) -> dict[str, Any]:
    identity = {key: data.get(key) for key in _DATA_KEYS}
    identity["root"] = str(Path(str(identity["root"])).resolve())
    return identity


def _is_source_for(saved: dict[str, Any], cfg: DictConfig) -> bool:
    backbone = saved.get("backbone") or {}
    pretrained = backbone.get("pretrained")
    return (
        saved.get("seed") == cfg.seed
        and saved.get("scale") == cfg.scale
        and backbone.get("model") == cfg.backbone.model
        and not (isinstance(pretrained, str) and pretrained.startswith(RUN_PREFIX))
        and _data_identity(saved.get("data") or {})
        == _data_identity(OmegaConf.to_container(cfg.data, resolve=True))
    )


def _checkpoint(run_dir: Path) -> Path | None:
    return next((p for name in _CHECKPOINTS if (p := run_dir / "checkpoints" / name).is_file()), None)


def find_source_checkpoint(cfg: DictConfig, method: str) -> Path:
    """The checkpoint of the newest finished `method` run that `cfg` may start from."""
    folder = Path(cfg.runs_dir) / cfg.data.name / method
    found: list[tuple[float, Path]] = []
    for results in folder.glob(f"*/{RESULTS_FILE}"):
        run_dir = results.parent
        try:
            saved = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError):
            continue  # a run without a readable config is not a candidate
        checkpoint = _checkpoint(run_dir)
        if isinstance(saved, dict) and checkpoint is not None and _is_source_for(saved, cfg):
            found.append((results.stat().st_mtime, checkpoint))
    if not found:
        raise UserError(
            f"backbone.pretrained=run:{method}: no finished {method} run on {cfg.data.name} "
            f"(seed {cfg.seed}, scale {cfg.scale}, same data settings) under {folder}; train it first: "
            f"xmodal-bench bench --method {method} --data {cfg.data.name} --seed {cfg.seed} "
            f"--scale {cfg.scale} [the same data.* overrides]"
        )
    return max(found)[1]


def resolve_warm_start(cfg: DictConfig) -> tuple[DictConfig, Path | None]:
    """(`cfg` with `run:METHOD` replaced by the source checkpoint's path, that path or None).

    The method named must be registered; anything other than a `run:` reference passes through.
    """
    method = referenced_method(cfg)
    if method is None:
        return cfg, None
    parse_method_spec(method)  # an unknown method: the list of known ones
    checkpoint = find_source_checkpoint(cfg, method)
    return with_values(cfg, {"backbone": {"pretrained": str(checkpoint)}}), checkpoint
