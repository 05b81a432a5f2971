"""`RunRequest`: one benchmark run as asked for, the one value the CLI and the sweep both build.

    request = RunRequest("irra", "synth_reid", seed=1, overrides=("irra.losses=[sdm]",))
    cfg = request.compose()       # the resolved, checked, read-only run config
    request.argv()                # the same run as `xmodal-bench bench ...` arguments (a subprocess)

A request holds only what the user chose; `compose` turns it into the config (method and dataset
YAML layers, the scale block, flags, overrides), refusing an unknown method or dataset, a bad key
or an impossible value with one line, before anything is built.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from omegaconf import DictConfig

from xmodal_bench.config import compose


@dataclass(frozen=True)
class RunRequest:
    method: str = "clip"
    dataset: str = "synth"
    scale: str = "tiny"
    seed: int | None = None  # None: the config's (0)
    data_root: str | None = None
    runs_dir: str | None = None
    leaderboards_dir: str | None = None
    max_epochs: int | None = None
    devices: int | str | None = None
    overrides: tuple[str, ...] = field(default_factory=tuple)

    def flags(self) -> dict[str, Any]:
        """The request's named settings as a nested config layer (unset ones left out)."""
        flags: dict[str, Any] = {}
        if self.data_root is not None:
            flags.setdefault("data", {})["root"] = self.data_root
        if self.max_epochs is not None:
            flags.setdefault("trainer", {})["max_epochs"] = self.max_epochs
        if self.devices is not None:
            flags.setdefault("trainer", {})["devices"] = self.devices
        if self.seed is not None:
            flags["seed"] = self.seed
        if self.runs_dir is not None:
            flags["runs_dir"] = self.runs_dir
        if self.leaderboards_dir is not None:
            flags["leaderboards_dir"] = self.leaderboards_dir
        return flags

    def check(self) -> DictConfig:
        """Refuse a mistake without importing torch, Lightning or open_clip: an unknown method,
        plugin or dataset, a bad override, an unknown key or a wrong type anywhere, an impossible
        value in the shared sections (the method sections' own range checks run in `compose`).
        Returns that light config (the method sections unchecked)."""
        from xmodal_bench.registry import light_method_sections

        return self._compose(*light_method_sections(self.method))

    def compose(self) -> DictConfig:
        """The resolved run config (see the module docstring); `check` runs first, so a mistake
        is refused before the method modules are imported."""
        from xmodal_bench.registry import method_sections

        self.check()
        return self._compose(*method_sections(self.method))

    def _compose(self, parts: list[str], sections: dict[str, type]) -> DictConfig:
        from xmodal_bench.registry import dataset_info

        info = dataset_info(self.dataset, self.data_root_in_use())  # unknown: the list of known ones
        cfg = compose(
            parts,
            sections,
            self.dataset,
            self.scale,
            flags=self.flags(),
            overrides=list(self.overrides),
            data_layer=info.layer,
            data_facts=info.facts,
        )
        if cfg.data.train_split is None:  # an evaluation-only set: say so before anything is built
            from xmodal_bench.run.data import require_train_split

            require_train_split(cfg)
        return cfg

    def data_root_in_use(self) -> str:
        """The data root this request reads (`--data-root`, else a `data.root=` override, else data/)."""
        if self.data_root is not None:
            return self.data_root
        roots = [item.partition("=")[2] for item in self.overrides if item.partition("=")[0] == "data.root"]
        return roots[-1] if roots else "data"

    def argv(self) -> list[str]:
        """`xmodal-bench` arguments that make exactly this request."""
        argv = ["bench", "--method", self.method, "--data", self.dataset, "--scale", self.scale]
        for flag, value in (
            ("--seed", self.seed),
            ("--data-root", self.data_root),
            ("--runs-dir", self.runs_dir),
            ("--leaderboards-dir", self.leaderboards_dir),
            ("--max-epochs", self.max_epochs),
            ("--devices", self.devices),
        ):
            if value is not None:
                argv += [flag, str(value)]
        return argv + list(self.overrides)

    def with_overrides(self, *overrides: str) -> RunRequest:
        return replace(self, overrides=(*self.overrides, *overrides))
