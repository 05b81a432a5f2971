"""Run configuration: typed schema + composable YAML layers + `key=value` overrides.

A run's config is built in layers, later layers winning (the lightning-hydra-template idea,
without the framework):

1. the schema defaults below;
2. `benchmarks/methods/<method>.yaml` for each part of the method spec (e.g. `clip`, `bcls`);
3. `benchmarks/data/<dataset>.yaml`;
4. the `scales.<scale>` block of each of those files (the backbone size and what goes with it);
5. command-line flags (`--max-epochs`, `--seed`, ...), then free `key=value` overrides.

The schema is a tree of dataclasses checked by OmegaConf, so an unknown key or a value of the
wrong type is refused with one clear message instead of surfacing deep inside training.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xmodal_bench.errors import UserError

PROTOCOLS = ("caption", "coco", "person")
SCALES = ("tiny", "base")
# Keys of a YAML file that describe it rather than configure a run.
_META_KEYS = ("scales", "about")


def benchmarks_dir() -> Path:
    """The `benchmarks/` folder: the repository's when run from source, else the packaged copy."""
    source = Path(__file__).resolve().parent.parent / "benchmarks"
    return source if source.is_dir() else Path(__file__).resolve().parent / "_benchmarks"


@dataclass
class BackboneConfig:
    model: str = "xmb-tiny"  # any open_clip model name, or one of our tiny configs (xmb-*)
    pretrained: str | None = None  # open_clip tag or a local weights file / Lightning checkpoint
    context_length: int = 32


@dataclass
class DataConfig:
    name: str = "synth"
    root: str = "data"
    protocol: str = "caption"  # caption | coco | person
    image_size: list[int] = field(default_factory=lambda: [64, 64])  # (H, W)
    augment: str = "none"  # none | irra
    batch_size: int = 128
    eval_batch_size: int = 256
    workers: int = 2
    shuffle_buffer: int = 2000
    train_split: str = "train"
    val_split: str | None = "val"
    test_split: str = "test"
    synthetic: dict[str, Any] = field(default_factory=dict)  # generator sizes for synth datasets
    on_error: str = "error"  # error | skip: a corrupt train sample stops the run, or is skipped and counted
    # Filled in from the manifest when a run starts (kept in the saved config so checkpoints reload):
    train_images: int | None = None
    train_identities: int | None = None  # person ids; for caption sets every image is its own id


@dataclass
class OptimConfig:
    name: str = "adamw"  # adam | adamw
    lr: float = 5e-4
    weight_decay: float = 0.2
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-6
    new_module_lr_mult: float = 1.0  # lr multiplier for every parameter outside the backbone
    bias_lr_mult: float = 1.0  # lr multiplier for biases (multiplies with the one above)
    no_decay_weight_decay: float = 0.0  # decay for biases, norms, scales (parameters with ndim < 2)
    warmup_epochs: float = 0.5
    warmup_start_factor: float = 0.1
    schedule: str = "cosine"  # cosine | constant
    min_lr_ratio: float = 0.0


@dataclass
class TrainerConfig:
    max_epochs: int = 5
    accelerator: str = "auto"
    devices: Any = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "32-true"
    gradient_clip_val: float | None = None
    log_every_n_steps: int = 10
    check_val_every_n_epoch: int = 1
    limit_train_batches: Any = None
    deterministic: bool = False
    checkpoint_every_n_steps: int = 500  # also rewrite checkpoints/last.ckpt every N steps; 0: epoch ends


@dataclass
class EvalConfig:
    chunk_size: int | None = None  # queries per chunk in the metrics engine; None = from memory
    checkpoint: str = "best"  # best (by validation) | last: which weights are tested
    latency_queries: int = 1000  # queries timed per inference mode for the latency figure
    latency_top_k: int = 10


@dataclass
class RunConfig:
    method: str = "clip"
    scale: str = "tiny"
    seed: int = 0
    runs_dir: str = "runs"
    leaderboards_dir: str = "leaderboards"
    run_id: str | None = None
    changes: list[str] = field(default_factory=list)  # what the user set beyond the YAML files
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def schema_for(sections: dict[str, type]) -> type:
    """The run schema extended with one section per method part (`irra: IRRAConfig`, ...)."""
    extra = [(name, cls, field(default_factory=cls)) for name, cls in sections.items()]
    return dataclasses.make_dataclass("ResolvedRunConfig", extra, bases=(RunConfig,))


def read_layer(path: Path) -> dict[str, Any]:
    """Read one YAML layer; a missing file is an empty layer."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    return data


def _merge(cfg: DictConfig, layer: dict[str, Any], origin: str) -> DictConfig:
    try:
        return OmegaConf.merge(cfg, layer)
    except OmegaConfBaseException as exc:
        raise UserError(f"{origin}: {_describe(exc)}") from exc


def _describe(exc: OmegaConfBaseException) -> str:
    message = str(exc).splitlines()[0]
    key = getattr(exc, "full_key", None)
    return f"{key}: {message}" if key and key not in message else message


def parse_overrides(overrides: list[str]) -> list[str]:
    """Check that every override looks like `dotted.key=value`."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
            raise UserError(f"bad override {item!r}: expected key=value, e.g. optim.lr=1e-4")
    return overrides


def compose(
    method_parts: list[str],
    method_sections: dict[str, type],
    dataset: str,
    scale: str,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    config_root: Path | None = None,
) -> DictConfig:
    """Build the resolved run config for `method_parts` on `dataset` at `scale`."""
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    root = config_root or benchmarks_dir()
    cfg = OmegaConf.structured(schema_for(method_sections))
    layers = [root / "methods" / f"{part}.yaml" for part in method_parts] + [
        root / "data" / f"{dataset}.yaml"
    ]
    documents = [(path, read_layer(path)) for path in layers]
    for path, document in documents:
        cfg = _merge(cfg, {k: v for k, v in document.items() if k not in _META_KEYS}, str(path))
    for path, document in documents:
        scale_block = (document.get("scales") or {}).get(scale) or {}
        cfg = _merge(cfg, scale_block, f"{path} (scales.{scale})")
    cfg = _merge(
        cfg, {"method": "+".join(method_parts), "scale": scale, "data": {"name": dataset}}, "arguments"
    )
    cfg = _merge(cfg, flags or {}, "command-line flags")
    for item in parse_overrides(overrides or []):
        cfg = _merge(cfg, OmegaConf.from_dotlist([item]), f"override {item!r}")
    cfg.changes = describe_changes(flags or {}, overrides or [])
    validate(cfg)
    OmegaConf.set_readonly(cfg, True)
    return cfg


# Settings that are not part of what a run measures: where things go, the seed (runs differing
# only by seed are averaged), and facts filled in from the dataset's manifest.
NON_IDENTITY_KEYS = (
    "seed",
    "runs_dir",
    "leaderboards_dir",
    "run_id",
    "changes",
    "data.root",
    "data.train_images",
    "data.train_identities",
    "trainer.checkpoint_every_n_steps",
)


def _dotted(tree: dict[str, Any], prefix: str = "") -> list[str]:
    items = []
    for key, value in tree.items():
        name = f"{prefix}{key}"
        items += _dotted(value, f"{name}.") if isinstance(value, dict) else [f"{name}={value}"]
    return items


def describe_changes(flags: dict[str, Any], overrides: list[str]) -> list[str]:
    """The user's departures from the benchmark's YAML settings, as `key=value` (non-identity keys left out).

    They name a run's variant: the leaderboard keeps `irra` and `irra irra.losses=[sdm]` apart.
    """
    changes = {item.partition("=")[0]: item for item in _dotted(flags) + list(overrides)}
    return [item for key, item in changes.items() if key not in NON_IDENTITY_KEYS]


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise UserError(message)


def validate(cfg: DictConfig) -> None:
    """Check values the type system cannot: ranges and choices."""
    d, o, t = cfg.data, cfg.optim, cfg.trainer
    _require(d.protocol in PROTOCOLS, f"data.protocol={d.protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    _require(len(d.image_size) == 2 and min(d.image_size) > 0, "data.image_size must be [height, width] > 0")
    _require(d.batch_size > 1, "data.batch_size must be at least 2 (in-batch negatives)")
    _require(d.eval_batch_size > 0, "data.eval_batch_size must be positive")
    _require(d.workers >= 0, "data.workers must be >= 0")
    _require(d.augment in ("none", "irra"), f"data.augment={d.augment!r}; choose none or irra")
    _require(o.name in ("adam", "adamw"), f"optim.name={o.name!r}; choose adam or adamw")
    _require(o.lr > 0, "optim.lr must be positive")
    _require(
        o.schedule in ("cosine", "constant"), f"optim.schedule={o.schedule!r}; choose cosine or constant"
    )
    _require(o.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0")
    _require(len(o.betas) == 2, "optim.betas must have two values")
    _require(t.max_epochs >= 1, "trainer.max_epochs must be at least 1")
    _require(
        t.checkpoint_every_n_steps >= 0, "trainer.checkpoint_every_n_steps must be >= 0 (0 = epoch ends)"
    )
    _require(d.on_error in ("error", "skip"), f"data.on_error={d.on_error!r}; choose error or skip")
    _require(cfg.eval.checkpoint in ("best", "last"), "eval.checkpoint must be best or last")
    _require(cfg.eval.chunk_size is None or cfg.eval.chunk_size > 0, "eval.chunk_size must be positive")
    _require(cfg.eval.latency_queries >= 1, "eval.latency_queries must be at least 1")
    _require(cfg.eval.latency_top_k >= 1, "eval.latency_top_k must be at least 1")
    _require(cfg.backbone.context_length > 2, "backbone.context_length must be > 2")


def with_values(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """A read-only copy of `cfg` with `values` (a nested dict) merged in."""
    merged = OmegaConf.merge(cfg, values)
    OmegaConf.set_readonly(merged, True)
    return merged


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
