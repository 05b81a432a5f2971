"""Method and dataset registries, timm style: `register_method`, `list_methods`, `create_method`.

A method is a `RetrievalMethod` subclass registered under a short name with the dataclass of
its hyperparameters (its config section). A *plugin* is a training framework applied on top of a
method (BCLS is one): a `TrainingPlugin` module the factory attaches to the base method, so the
spec `clip+bcls` is a `CLIP` with a `BCLS` plugin, not a new class.

Datasets are data, not code: every `benchmarks/data/<name>.yaml` is a dataset, and its `about`
block says what it is, which protocol it uses and how to obtain it. Any set converted under the
data root is a dataset too, by its folder name: its manifest says its protocol and sizes, and
the template of its kind (`_caption.yaml`, `_person.yaml`) its settings.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmodal_bench import catalogue
from xmodal_bench.config import benchmarks_dir, read_layer
from xmodal_bench.errors import UserError

if TYPE_CHECKING:
    from omegaconf import DictConfig

    from xmodal_bench.methods.base import RetrievalMethod


@dataclass(frozen=True)
class NoConfig:
    """The config section of a method without hyperparameters of its own."""


@dataclass(frozen=True)
class Entry:
    name: str
    cls: Any
    config: type
    summary: str


_METHODS: dict[str, Entry] = {}
_PLUGINS: dict[str, Entry] = {}
# Modules that register methods / plugins when imported (imported lazily to keep startup fast;
# `catalogue` reads what they register without importing them).
_METHOD_MODULES = catalogue.BUILTIN_METHOD_MODULES


def _summary(cls: Any) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def register_method(name: str, config: type = NoConfig) -> Callable[[type], type]:
    """Class decorator: register a `RetrievalMethod` subclass under `name`."""

    def wrap(cls: type) -> type:
        _METHODS[name] = Entry(name, cls, config, _summary(cls))
        cls.method_name = name
        return cls

    return wrap


def register_plugin(name: str, config: type = NoConfig) -> Callable[[Any], Any]:
    """Register a `TrainingPlugin` class, built as `cls(method, cfg)` for the `base+name` spec."""

    def wrap(obj: Any) -> Any:
        _PLUGINS[name] = Entry(name, obj, config, _summary(obj))
        return obj

    return wrap


def _load_builtin() -> None:
    for module in _METHOD_MODULES:
        try:
            importlib.import_module(f"xmodal_bench.methods.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"xmodal_bench.methods.{module}":
                raise


def list_methods() -> list[str]:
    """Registered base methods and plugins (plugins listed as `+name`)."""
    _load_builtin()
    return sorted(_METHODS) + [f"+{name}" for name in sorted(_PLUGINS)]


def method_entries() -> dict[str, Entry]:
    _load_builtin()
    return dict(_METHODS)


def plugin_entries() -> dict[str, Entry]:
    _load_builtin()
    return dict(_PLUGINS)


def _check_spec(spec: str, methods: Any, plugins: Any) -> tuple[str, list[str]]:
    """(base, plugins) of `spec`, every name among `methods` / `plugins`, else a UserError."""
    base, *parts = spec.split("+")
    if base not in methods:
        known = ", ".join(sorted(methods))
        hint = (
            f" ({base} is a plugin: put it after a base method, e.g. clip+{base})" if base in plugins else ""
        )
        raise UserError(f"unknown method {base!r}{hint}; known methods: {known}")
    unknown = [p for p in parts if p not in plugins]
    if unknown:
        known = ", ".join(sorted(plugins)) or "none"
        raise UserError(f"unknown plugin {unknown[0]!r} in {spec!r}; known plugins: {known}")
    return base, parts


def parse_method_spec(spec: str) -> tuple[Entry, list[Entry]]:
    """`irra` -> (irra, []); `clip+bcls` -> (clip, [bcls]). Unknown names are a UserError."""
    _load_builtin()
    base, plugins = _check_spec(spec, _METHODS, _PLUGINS)
    return _METHODS[base], [_PLUGINS[p] for p in plugins]


def static_names() -> tuple[dict[str, str], dict[str, str]]:
    """(methods, plugins) as name -> summary without importing the built-in method modules: the
    catalogue's, then whatever is registered already (a user's own methods, imported by them)."""
    methods = {name: e.summary for name, e in catalogue.methods().items()}
    plugins = {name: e.summary for name, e in catalogue.plugins().items()}
    methods.update({name: e.summary for name, e in _METHODS.items()})
    plugins.update({name: e.summary for name, e in _PLUGINS.items()})
    return methods, plugins


def check_method_spec(spec: str) -> None:
    """Refuse an unknown method or plugin name in `spec` (no import of the built-in methods)."""
    _check_spec(spec, *static_names())


def light_method_sections(spec: str) -> tuple[list[str], dict[str, type]]:
    """`method_sections` without importing the built-in methods: the sections are light copies of
    the config dataclasses (`catalogue.light_section`: keys and types, no range checks)."""
    methods, plugins = static_names()
    base, parts = _check_spec(spec, methods, plugins)
    sections: dict[str, type] = {}
    for name in [base, *parts]:
        registered = _METHODS.get(name) or _PLUGINS.get(name)
        if registered is not None:
            sections[name] = registered.config
        else:
            static = catalogue.methods().get(name) or catalogue.plugins()[name]
            sections[name] = catalogue.light_section(static)
    return [base, *parts], sections


def method_sections(spec: str) -> tuple[list[str], dict[str, type]]:
    """The config layers and schema sections a method spec brings: names in order, name -> dataclass."""
    base, plugins = parse_method_spec(spec)
    parts = [base, *plugins]
    return [p.name for p in parts], {p.name: p.config for p in parts}


def create_method(cfg: DictConfig) -> RetrievalMethod:
    """Instantiate the method described by a resolved run config."""
    base, plugins = parse_method_spec(cfg.method)
    method = base.cls(cfg)
    for plugin in plugins:
        method.attach(plugin.cls(method, cfg))
    return method


# --------------------------------------------------------------------------------------------- datasets

# A converted dataset without a YAML of its own takes the settings of its kind (image size per
# scale, augmentation): `benchmarks/data/_caption.yaml` or `_person.yaml`.
TEMPLATE_PREFIX = "_"


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    protocol: str
    summary: str
    synthetic: bool
    obtain: str  # where the raw dataset comes from
    convert: str  # the command that writes its shards
    layer: str  # the benchmarks/data/ file that configures it (its own, or its kind's template)
    facts: dict[str, Any] | None = None  # config values read from a converted set's manifest (splits)


def _data_dir() -> Path:
    return benchmarks_dir() / "data"


def described_datasets() -> list[str]:
    """Datasets with a YAML file under benchmarks/data/ (templates left out)."""
    return sorted(p.stem for p in _data_dir().glob("*.yaml") if not p.stem.startswith(TEMPLATE_PREFIX))


def _manifest_summary(root: str | Path | None, name: str) -> dict[str, Any] | None:
    """The protocol, sizes and command of a converted dataset's manifest (no shard checks), or None."""
    if root is None or not name or name.startswith((".", TEMPLATE_PREFIX)):
        return None
    path = Path(root) / name / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("protocol") not in ("caption", "person"):
        return None
    return manifest


def converted_datasets(root: str | Path | None) -> list[str]:
    """Datasets converted under the data root `root` (a readable manifest), by folder name."""
    if root is None or not Path(root).is_dir():
        return []
    return sorted(
        p.parent.name for p in Path(root).glob("*/manifest.json") if _manifest_summary(root, p.parent.name)
    )


def list_datasets(root: str | Path | None = None) -> list[str]:
    """Every dataset usable by name: those described under benchmarks/data/ and those converted under `root`."""
    return sorted({*described_datasets(), *converted_datasets(root)})


def dataset_info(name: str, root: str | Path | None = None) -> DatasetInfo:
    """What a dataset is: its own `benchmarks/data/<name>.yaml`, else the manifest of a set converted
    under `root` (protocol and sizes from there, settings from its kind's template); else a UserError."""
    own = _data_dir() / f"{name}.yaml"
    if own.is_file() and not name.startswith(TEMPLATE_PREFIX):
        document = read_layer(own)
        about = document.get("about") or {}
        protocol = (document.get("data") or {}).get("protocol", "caption")
        synthetic = bool(about.get("synthetic", False))
        convert = about.get("convert") or (
            f"xmodal-bench data synth --name {name} --out ROOT"
            if synthetic
            else f"xmodal-bench data convert {name} --source DIR --out ROOT"
        )
        return DatasetInfo(
            name, protocol, about.get("summary", ""), synthetic, about.get("obtain", ""), convert, name
        )
    manifest = _manifest_summary(root, name)
    if manifest is None:
        known = ", ".join(list_datasets(root))
        where = f"; nor is there a converted set at {Path(root) / name}" if root is not None else ""
        raise UserError(f"unknown dataset {name!r}; known datasets: {known}{where}")
    splits = manifest.get("splits") or {}
    sizes = ", ".join(
        f"{split} {info.get('images', '?')}" for split, info in splits.items() if isinstance(info, dict)
    )
    protocol = manifest["protocol"]
    # a split the set lacks is switched off (a CLIP_benchmark export often has a test split only:
    # `zeroshot` evaluates it; training methods then say that there is no train split)
    facts = {
        "data": {
            "train_split": "train" if "train" in splits else None,
            "val_split": "val" if "val" in splits else None,
        }
    }
    return DatasetInfo(
        name,
        protocol,
        f"converted set ({sizes} images)",
        False,
        "",
        str(
            manifest.get("command")
            or f"xmodal-bench data convert jsonl --source FILE --name {name} --out ROOT"
        ),
        f"{TEMPLATE_PREFIX}{protocol}",
        facts,
    )


def require_dataset_present(name: str, root: str | Path) -> None:
    """A real (not synthetic) dataset must have been converted under `root`; else one UserError
    saying where we looked and what to run (synthetic sets are generated on demand)."""
    info = dataset_info(name, root)
    root = Path(root)
    if not info.synthetic and not (root / name / "manifest.json").is_file():
        where = f" (raw data: {info.obtain})" if info.obtain else ""
        command = info.convert.replace("ROOT", str(root))
        raise UserError(f"no dataset {name!r} at {root / name}: convert it first with `{command}`{where}")
