"""Method and dataset registries, timm style: `register_method`, `list_methods`, `create_method`.

A method is a `RetrievalMethod` subclass registered under a short name with the dataclass of
its hyperparameters (its config section). A *plugin* is a training framework applied on top of a
method (BCLS is one): the spec `clip+bcls` names base `clip` with plugin `bcls`.

Datasets are data, not code: every `benchmarks/data/<name>.yaml` is a dataset, and its `about`
block says what it is, which protocol it uses and how to obtain it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
# Modules that register methods / plugins when imported (imported lazily to keep startup fast).
_METHOD_MODULES = ("clip", "irra", "tgdt", "aladin", "bcls")


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
    """Register a training plugin (applied over a base method with the `base+name` spec)."""

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


def parse_method_spec(spec: str) -> tuple[Entry, list[Entry]]:
    """`irra` -> (irra, []); `clip+bcls` -> (clip, [bcls]). Unknown names are a UserError."""
    _load_builtin()
    base, *plugins = spec.split("+")
    if base not in _METHODS:
        known = ", ".join(sorted(_METHODS))
        hint = (
            f" ({base} is a plugin: put it after a base method, e.g. clip+{base})" if base in _PLUGINS else ""
        )
        raise UserError(f"unknown method {base!r}{hint}; known methods: {known}")
    unknown = [p for p in plugins if p not in _PLUGINS]
    if unknown:
        known = ", ".join(sorted(_PLUGINS)) or "none"
        raise UserError(f"unknown plugin {unknown[0]!r} in {spec!r}; known plugins: {known}")
    return _METHODS[base], [_PLUGINS[p] for p in plugins]


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
        method = plugin.cls(method, cfg)
    return method


# --------------------------------------------------------------------------------------------- datasets


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    protocol: str
    summary: str
    synthetic: bool
    obtain: str  # where the raw dataset comes from
    convert: str  # the command that writes its shards


def list_datasets() -> list[str]:
    return sorted(p.stem for p in (benchmarks_dir() / "data").glob("*.yaml"))


def dataset_info(name: str) -> DatasetInfo:
    """What `benchmarks/data/<name>.yaml` says about a dataset; unknown names are a UserError."""
    known = list_datasets()
    if name not in known:
        raise UserError(f"unknown dataset {name!r}; known datasets: {', '.join(known)}")
    document = read_layer(benchmarks_dir() / "data" / f"{name}.yaml")
    about = document.get("about") or {}
    protocol = (document.get("data") or {}).get("protocol", "caption")
    synthetic = bool(about.get("synthetic", False))
    convert = about.get("convert") or (
        f"xmodal-bench data synth --name {name} --out ROOT"
        if synthetic
        else f"xmodal-bench data convert {name} --source DIR --out ROOT"
    )
    return DatasetInfo(name, protocol, about.get("summary", ""), synthetic, about.get("obtain", ""), convert)
