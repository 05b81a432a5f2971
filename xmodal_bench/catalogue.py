"""The built-in methods as the command line needs them, read from their source without importing it.

`xmodal-bench list`, `--method` checks and config mistakes must answer at once, and every method
module imports torch, Lightning and open_clip. So the catalogue reads each module of
`registry.BUILTIN_METHOD_MODULES` as text (`ast`) and finds what it registers:

- `@register_method("name", Config)` on a class, `register_plugin("name", Config)(Cls)`: the name,
  whether it is a plugin, and the class docstring's first line (the summary `list` prints);
- the config dataclass's fields: names, annotated types and literal defaults.

From the fields it builds a *light* dataclass per method section, so that a run config can be
composed and checked (unknown keys, wrong types, every range check of the shared sections) with
no heavy import. The light schema is never stricter than the real one: an annotation or default
it cannot evaluate becomes `Any` / `None`, and the method's own range checks (`__post_init__`)
run when the real config is composed. The registry's import of the real classes stays the truth;
tests check that the two agree.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent
#: Modules that register methods / plugins when imported, in registration order.
BUILTIN_METHOD_MODULES = ("zeroshot", "clip", "irra", "tgdt", "aladin", "bcls")
#: The built-in evaluation protocols (`metrics.protocols`), spelled out for torch-free checks;
#: a test checks that they are exactly the registered ones.
BUILTIN_PROTOCOLS = ("caption", "coco", "coco1k", "coco5k", "person")

# Names an annotation may use; anything else makes the field `Any`.
_TYPE_NAMES: dict[str, Any] = {
    "int": int,
    "float": float,
    "str": str,
    "bool": bool,
    "list": list,
    "dict": dict,
    "tuple": tuple,
    "None": None,
    "Any": Any,
    "Optional": typing.Optional,
    "List": list,
    "Dict": dict,
}


@dataclass(frozen=True)
class StaticEntry:
    """A registered method or plugin as its source file declares it."""

    name: str
    plugin: bool
    summary: str
    module: str
    config_fields: tuple[tuple[str, Any, Any], ...] | None  # (name, type, default); None: unknown
    config_name: str = "NoConfig"  # the config dataclass's name (error messages name it)


def _literal(node: ast.AST | None) -> tuple[bool, Any]:
    """(True, value) for a literal expression, else (False, None)."""
    if node is None:
        return False, None
    try:
        return True, ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False, None


def _annotation(node: ast.AST) -> Any:
    """The type an annotation names, if made only of builtin types; else `Any`."""
    text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else ast.unparse(node)
    try:
        value = eval(compile(text, "<annotation>", "eval"), {"__builtins__": {}}, dict(_TYPE_NAMES))
    except Exception:  # a name from elsewhere (a nested config class): accept anything
        return Any
    return value if value is not None else type(None)


def _optional(kind: Any) -> Any:
    return kind if kind is Any else typing.Optional[kind]  # noqa: UP045 (a runtime type object)


def _config_fields(cls: ast.ClassDef) -> tuple[tuple[str, Any, Any], ...]:
    """(name, type, default) of a dataclass body; unknowable defaults become None (type made Optional)."""
    out = []
    for item in cls.body:
        if not isinstance(item, ast.AnnAssign) or not isinstance(item.target, ast.Name):
            continue
        kind = _annotation(item.annotation)
        ok, default = _literal(item.value)
        if isinstance(item.value, ast.Call) and ast.unparse(item.value.func) in (
            "field",
            "dataclasses.field",
        ):
            ok, default = False, None
            for keyword in item.value.keywords:
                if keyword.arg == "default":
                    ok, default = _literal(keyword.value)
                elif keyword.arg == "default_factory" and isinstance(keyword.value, ast.Lambda):
                    ok, default = _literal(keyword.value.body)
                elif keyword.arg == "default_factory" and ast.unparse(keyword.value) in ("list", "dict"):
                    ok, default = True, {"list": [], "dict": {}}[ast.unparse(keyword.value)]
        if not ok:
            kind, default = _optional(kind), None
        out.append((item.target.id, kind, default))
    return tuple(out)


def _register_call(node: ast.AST) -> tuple[str, str, str | None] | None:
    """`register_method("n", C)` / `register_plugin("n", C)` -> (kind, name, config class name)."""
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        return None
    if node.func.id not in ("register_method", "register_plugin") or not node.args:
        return None
    ok, name = _literal(node.args[0])
    if not ok or not isinstance(name, str):
        return None
    config = node.args[1] if len(node.args) > 1 else None
    for keyword in node.keywords:
        if keyword.arg == "config":
            config = keyword.value
    return node.func.id, name, config.id if isinstance(config, ast.Name) else None


def _summary(cls: ast.ClassDef | None) -> str:
    doc = ast.get_docstring(cls) if cls is not None else None
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def scan_module(module: str, path: Path) -> list[StaticEntry]:
    """What one method module registers (empty when its source is missing or unreadable)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError, UnicodeDecodeError):
        return []
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    found: list[tuple[str, str, str | None, str | None]] = []  # (kind, name, config, class)
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                call = _register_call(decorator)
                if call:
                    found.append((*call, node.name))
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call):
            call = _register_call(node.value.func)  # register_plugin("n", C)(Cls)
            target = node.value.args[0] if node.value.args else None
            if call and isinstance(target, ast.Name):
                found.append((*call, target.id))
    entries = []
    for kind, name, config, cls in found:
        config_cls = classes.get(config) if config else None
        fields = _config_fields(config_cls) if config_cls is not None else (() if config is None else None)
        summary = _summary(classes.get(cls or ""))
        entries.append(
            StaticEntry(name, kind == "register_plugin", summary, module, fields, config or "NoConfig")
        )
    return entries


@functools.lru_cache(maxsize=1)
def builtin_entries() -> tuple[StaticEntry, ...]:
    """Every built-in method and plugin, in registration order."""
    out: list[StaticEntry] = []
    for module in BUILTIN_METHOD_MODULES:
        out += scan_module(module, PACKAGE_DIR / "methods" / f"{module}.py")
    return tuple(out)


def methods() -> dict[str, StaticEntry]:
    return {e.name: e for e in builtin_entries() if not e.plugin}


def plugins() -> dict[str, StaticEntry]:
    return {e.name: e for e in builtin_entries() if e.plugin}


def light_section(entry: StaticEntry) -> type:
    """A dataclass with the fields of `entry`'s config (no range checks); `dict` (any key) when its
    config class is defined elsewhere."""
    if entry.config_fields is None:
        return dict
    specs = []
    for name, kind, default in entry.config_fields:
        if isinstance(default, (list, dict)):
            specs.append((name, kind, field(default_factory=functools.partial(type(default), default))))
        else:
            specs.append((name, kind, field(default=default)))
    return dataclasses.make_dataclass(entry.config_name, specs)
