"""Run configuration: typed schema + composable YAML layers + `key=value` overrides.

A run's config is built in layers, later layers winning (the lightning-hydra-template idea,
without the framework):

1. the schema defaults below, and each method's own dataclass (its section: `clip`, `irra`, ...),
   whose defaults are the paper's hyperparameters (the one place they are written);
2. `benchmarks/methods/<method>.yaml` for each part of the method spec (e.g. `clip`, `bcls`): the
   paper's optimizer, schedule, batch size and epochs;
3. `benchmarks/data/<dataset>.yaml` (or its kind's template, for a converted set without one),
   then a method file's `datasets.<dataset>` block (a paper's settings for that dataset);
4. the `scales.<scale>` block of each of those files (the backbone size and what goes with it);
5. command-line flags (`--max-epochs`, `--seed`, ...), then free `key=value` overrides.

The schema is a tree of dataclasses checked by OmegaConf, so an unknown key or a value of the
wrong type is refused with one clear message; each dataclass checks its own ranges in
`__post_init__`, which `finish` runs for every section, so an impossible value (a dropout of 5,
a mask probability of 2) is refused when the config is composed, before any data or model work.

Overrides are data, never code: values are parsed by YAML's safe loader, tags (`!!python/...`)
and interpolations (`${...}`) are refused.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from xmodal_bench.errors import UserError

SCALES = ("tiny", "base")
MAX_SEED = 2**32 - 1  # numpy / Lightning seed range
# Keys of a YAML file that describe it rather than configure a run.
_META_KEYS = ("scales", "about", "datasets")


def benchmarks_dir() -> Path:
    """The `benchmarks/` folder: the repository's when run from source, else the packaged copy."""
    source = Path(__file__).resolve().parent.parent / "benchmarks"
    return source if source.is_dir() else Path(__file__).resolve().parent / "_benchmarks"


def require(condition: bool, message: str) -> None:
    """Raise a UserError with `message` unless `condition` holds (the schema's range checks)."""
    if not condition:
        raise UserError(message)


def require_choice(key: str, value: Any, choices: tuple[str, ...] | list[str]) -> None:
    names = [str(c) for c in choices]
    options = " or ".join(names) if len(names) == 2 else f"one of {', '.join(names)}"
    require(value in choices, f"{key}={value!r}; choose {options}")


def require_fraction(key: str, value: float, upper_open: bool = True) -> None:
    """0 <= value < 1 (or <= 1 when `upper_open` is False)."""
    ok = 0 <= value < 1 if upper_open else 0 <= value <= 1
    require(ok, f"{key}={value} must be in [0, {'1)' if upper_open else '1]'}")


@dataclass
class BackboneConfig:
    model: str = "xmb-tiny"  # any open_clip model name, or one of our tiny configs (xmb-*)
    pretrained: str | None = None  # open_clip tag, a local weights file, or run:METHOD
    context_length: int = 32

    def __post_init__(self) -> None:
        require(self.context_length > 2, "backbone.context_length must be > 2")


@dataclass
class DataConfig:
    name: str = "synth"
    root: str = "data"
    protocol: str = "caption"  # a registered evaluation protocol: caption | coco | person
    image_size: list[int] = field(default_factory=lambda: [64, 64])  # (H, W)
    augment: str = "none"  # none | irra
    interpolation: str = "bicubic"  # resize filter: bicubic (CLIP's) | bilinear (IRRA's released)
    batch_size: int = 128  # the global training batch, split evenly over the devices
    eval_batch_size: int = 256  # per device
    workers: int = 2
    shuffle_buffer: int = 2000
    train_split: str | None = "train"  # None: an evaluation-only set (zero-shot only)
    val_split: str | None = "val"
    test_split: str = "test"
    synthetic: dict[str, Any] = field(default_factory=dict)  # generator sizes for synth datasets
    on_error: str = "error"  # error | skip: a corrupt train sample stops the run, or is skipped and counted
    # Filled in from the manifest when a run starts (kept in the saved config so checkpoints reload):
    train_images: int | None = None
    train_identities: int | None = None  # person ids; for caption sets every image is its own id

    def __post_init__(self) -> None:
        require_choice("data.protocol", self.protocol, _known_protocols())
        require(
            len(self.image_size) == 2 and min(self.image_size) > 0,
            "data.image_size must be [height, width] > 0",
        )
        require(self.batch_size > 1, "data.batch_size must be at least 2 (in-batch negatives)")
        require(self.eval_batch_size > 0, "data.eval_batch_size must be positive")
        require(self.workers >= 0, "data.workers must be >= 0")
        require(self.shuffle_buffer >= 0, "data.shuffle_buffer must be >= 0")
        require_choice("data.augment", self.augment, ("none", "irra"))
        require_choice("data.interpolation", self.interpolation, ("bicubic", "bilinear"))
        require_choice("data.on_error", self.on_error, ("error", "skip"))


def _known_protocols() -> tuple[str, ...]:
    """The registered protocols: the built-in ones, unless the registry module is loaded (only it
    can register more), so a config is checked without importing torch."""
    import sys

    from xmodal_bench.catalogue import BUILTIN_PROTOCOLS

    if "xmodal_bench.metrics.protocols" not in sys.modules:
        return BUILTIN_PROTOCOLS
    from xmodal_bench.metrics.protocols import list_protocols

    return tuple(list_protocols())


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
    warmup_steps: int | None = None  # a warmup length in steps instead (replaces warmup_epochs when set)
    warmup_start_factor: float = 0.1
    schedule: str = "cosine"  # cosine | constant | step
    min_lr_ratio: float = 0.0
    step_epochs: list[float] = field(default_factory=list)  # schedule=step: epochs at which lr x step_factor
    step_factor: float = 0.1

    def __post_init__(self) -> None:
        require_choice("optim.name", self.name, ("adam", "adamw"))
        require(self.lr > 0, "optim.lr must be positive")
        require_choice("optim.schedule", self.schedule, ("cosine", "constant", "step"))
        require(self.warmup_epochs >= 0, "optim.warmup_epochs must be >= 0")
        require(self.warmup_steps is None or self.warmup_steps >= 0, "optim.warmup_steps must be >= 0")
        require(
            len(self.betas) == 2 and all(0 <= b < 1 for b in self.betas),
            "optim.betas must be two values in [0, 1)",
        )
        require(self.eps > 0, "optim.eps must be positive")
        require(
            self.weight_decay >= 0 and self.no_decay_weight_decay >= 0, "optim weight decays must be >= 0"
        )
        require(
            self.new_module_lr_mult > 0 and self.bias_lr_mult > 0, "optim lr multipliers must be positive"
        )
        require(0 < self.warmup_start_factor <= 1, "optim.warmup_start_factor must be in (0, 1]")
        require_fraction("optim.min_lr_ratio", self.min_lr_ratio, upper_open=False)
        require(0 < self.step_factor <= 1, "optim.step_factor must be in (0, 1]")
        require(all(e > 0 for e in self.step_epochs), "optim.step_epochs must be positive epochs")


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
    # under DDP, in-batch losses see every device's slice of the global batch (features gathered
    # with gradients); false: each device's losses see its own slice only (a different objective)
    gather_features: bool = True

    def __post_init__(self) -> None:
        require(self.max_epochs >= 1, "trainer.max_epochs must be at least 1")
        require(self.num_nodes >= 1, "trainer.num_nodes must be at least 1")
        require(self.log_every_n_steps >= 1, "trainer.log_every_n_steps must be at least 1")
        require(self.check_val_every_n_epoch >= 1, "trainer.check_val_every_n_epoch must be at least 1")
        require(
            self.checkpoint_every_n_steps >= 0,
            "trainer.checkpoint_every_n_steps must be >= 0 (0 = epoch ends)",
        )
        require(
            self.gradient_clip_val is None or self.gradient_clip_val > 0,
            "trainer.gradient_clip_val must be positive",
        )
        require(
            self.limit_train_batches is None
            or (
                isinstance(self.limit_train_batches, (int, float))
                and not isinstance(self.limit_train_batches, bool)
                and self.limit_train_batches > 0
            ),
            "trainer.limit_train_batches must be a positive number of batches or a fraction",
        )


@dataclass
class EvalConfig:
    chunk_size: int | None = None  # queries per chunk in the metrics engine; None = from memory
    checkpoint: str = "best"  # best (by validation) | last: which weights are tested
    latency_queries: int = 1000  # queries timed per inference mode for the latency figure
    latency_top_k: int = 10

    def __post_init__(self) -> None:
        require(self.checkpoint in ("best", "last"), "eval.checkpoint must be best or last")
        require(self.chunk_size is None or self.chunk_size > 0, "eval.chunk_size must be positive")
        require(self.latency_queries >= 1, "eval.latency_queries must be at least 1")
        require(self.latency_top_k >= 1, "eval.latency_top_k must be at least 1")


@dataclass
class RunConfig:
    method: str = "clip"
    scale: str = "tiny"
    seed: int = 0
    runs_dir: str = "runs"
    leaderboards_dir: str | None = None  # None: beside the runs ({runs_dir}/_leaderboards)
    run_id: str | None = None
    changes: list[str] = field(default_factory=list)  # what the user set beyond the YAML files
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self) -> None:
        require_choice("scale", self.scale, SCALES)
        require(0 <= self.seed <= MAX_SEED, f"seed={self.seed} must be in 0..{MAX_SEED}")


def schema_for(sections: dict[str, type]) -> type:
    """The run schema extended with one section per method part (`irra: IRRAConfig`, ...)."""
    extra = [(name, cls, field(default_factory=cls)) for name, cls in sections.items()]
    return dataclasses.make_dataclass("ResolvedRunConfig", extra, bases=(RunConfig,))


def read_layer(path: Path) -> dict[str, Any]:
    """Read one YAML layer (safe loader: data only); a missing file is an empty layer."""
    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping at the top level")
    _refuse_interpolation(data, str(path))
    return data


def _refuse_interpolation(value: Any, origin: str) -> None:
    """OmegaConf would resolve `${...}` (environment variables, other keys): configs here are plain data."""
    if isinstance(value, str) and "${" in value:
        raise UserError(
            f"{origin}: {value!r}: interpolations (${{...}}) are not allowed; write the value itself"
        )
    if isinstance(value, dict):
        for item in value.values():
            _refuse_interpolation(item, origin)
    elif isinstance(value, list):
        for item in value:
            _refuse_interpolation(item, origin)


def _merge(cfg: DictConfig, layer: dict[str, Any], origin: str) -> DictConfig:
    """`cfg` with `layer` merged in; a merge OmegaConf refuses is a UserError naming `origin`.

    OmegaConf 2.4 raises a plain TypeError (not its own exception) for a mapping merged
    into a tuple field such as `optim.betas={}`; it is the same user mistake.
    """
    try:
        return OmegaConf.merge(cfg, layer)
    except (OmegaConfBaseException, TypeError) as exc:
        raise UserError(f"{origin}: {_describe(exc)}") from None


def _describe(exc: Exception) -> str:
    message = str(exc).splitlines()[0]
    key = getattr(exc, "full_key", None)
    return f"{key}: {message}" if key and key not in message else message


class _ValueLoader(yaml.SafeLoader):
    """YAML's safe loader, reading `1e-4` as a float (YAML 1.1 wants `1.0e-4`)."""


_ValueLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_override(item: str) -> tuple[str, Any]:
    """`dotted.key=value` -> (key, value parsed as plain YAML data); anything else is a UserError."""
    key, sep, text = item.partition("=")
    if not sep or not key or any(not part.isidentifier() for part in key.split(".")):
        raise UserError(f"bad override {item!r}: expected key=value, e.g. optim.lr=1e-4")
    if "${" in text:
        raise UserError(
            f"override {item!r}: interpolations (${{...}}) are not allowed; write the value itself"
        )
    try:
        value = yaml.load(text, Loader=_ValueLoader) if text.strip() else ""
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise UserError(f"override {item!r}: not a plain value ({problem})") from None
    return key, value


def parse_overrides(overrides: list[str]) -> list[str]:
    """Check that every override is `dotted.key=value` with a plain value (returns them unchanged)."""
    for item in overrides:
        parse_override(item)
    return overrides


def merge_overrides(cfg: DictConfig, overrides: list[str]) -> DictConfig:
    """`cfg` with each `key=value` merged in, in order (the one override merger)."""
    for item in overrides:
        key, value = parse_override(item)
        tree: Any = value
        for part in reversed(key.split(".")):
            tree = {part: tree}
        cfg = _merge(cfg, tree, f"override {item!r}")
    return cfg


def finish(cfg: DictConfig) -> DictConfig:
    """Run every section's range checks (`__post_init__`) and return `cfg` read-only."""
    try:
        OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise UserError(_describe(exc)) from None
    OmegaConf.set_readonly(cfg, True)
    return cfg


def compose(
    method_parts: list[str],
    method_sections: dict[str, type],
    dataset: str,
    scale: str,
    flags: dict[str, Any] | None = None,
    overrides: list[str] | None = None,
    config_root: Path | None = None,
    data_layer: str | None = None,
    data_facts: dict[str, Any] | None = None,
) -> DictConfig:
    """Build the resolved run config for `method_parts` on `dataset` at `scale`.

    `data_layer` names the benchmarks/data/ file to use (default: the dataset's own); `data_facts`
    are values read from a converted set's manifest, applied after the files' base blocks.
    """
    require(scale in SCALES, f"unknown scale {scale!r}; choose one of {', '.join(SCALES)}")
    root = config_root or benchmarks_dir()
    cfg = OmegaConf.structured(schema_for(method_sections))
    layers = [root / "methods" / f"{part}.yaml" for part in method_parts] + [
        root / "data" / f"{data_layer or dataset}.yaml"
    ]
    documents = [(path, read_layer(path)) for path in layers]
    for path, document in documents:
        cfg = _merge(cfg, {k: v for k, v in document.items() if k not in _META_KEYS}, str(path))
    cfg = _merge(cfg, data_facts or {}, f"the manifest of {dataset}")
    for path, document in documents[:-1]:  # a method's released settings for this dataset
        block = (document.get("datasets") or {}).get(dataset) or {}
        cfg = _merge(cfg, block, f"{path} (datasets.{dataset})")
    for path, document in documents:
        scale_block = (document.get("scales") or {}).get(scale) or {}
        cfg = _merge(cfg, scale_block, f"{path} (scales.{scale})")
    cfg = _merge(
        cfg, {"method": "+".join(method_parts), "scale": scale, "data": {"name": dataset}}, "arguments"
    )
    cfg = _merge(cfg, flags or {}, "command-line flags")
    cfg = merge_overrides(cfg, list(overrides or []))
    cfg.changes = describe_changes(flags or {}, overrides or [])
    return finish(cfg)


def saved_config(saved: dict[str, Any], method_sections: dict[str, type]) -> DictConfig:
    """A config saved by a run (a checkpoint's, a `config.yaml`) checked against today's schema."""
    _refuse_interpolation(saved, "saved config")
    cfg = _merge(OmegaConf.structured(schema_for(method_sections)), saved, "saved config")
    return finish(cfg)


def with_changes(
    cfg: DictConfig, values: dict[str, Any] | None = None, overrides: list[str] | None = None
) -> DictConfig:
    """A checked, read-only copy of `cfg` with `values` (a nested dict) and then `overrides` merged in."""
    out = merge_overrides(_merge(cfg, values or {}, "config"), list(overrides or []))
    return finish(out)


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


def with_values(cfg: DictConfig, values: dict[str, Any]) -> DictConfig:
    """A read-only copy of `cfg` with `values` (a nested dict) merged in (trusted values: no checks)."""
    merged = OmegaConf.merge(cfg, values)
    OmegaConf.set_readonly(merged, True)
    return merged


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)


def to_dict(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
