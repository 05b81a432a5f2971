"""Gather evaluation embeddings (and their indices and labels) across DDP ranks.

A torchmetrics `Metric` with concatenated list states: torchmetrics all-gathers them at
`compute()` and pads/trims uneven shapes, so ranks may hold different numbers of items and
updates. `compute()` then drops padded items, keeps one copy of each index (a distributed
sampler may deliver an item twice), restores index order and checks the count.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torchmetrics import Metric

from xmodal_bench.errors import UserError

_RESERVED = ("index", "valid")


class EmbeddingCountError(UserError):
    """The gathered items do not match the expected count (stale manifest, broken sharding)."""


def _check_names(features: Sequence[str], labels: Sequence[str]) -> None:
    names = [*features, *labels]
    clash = sorted({n for n in names if n in _RESERVED or names.count(n) > 1})
    if not features or clash:
        raise ValueError(f"feature and label names must be non-empty and unique, not {clash or 'empty'}")


class EmbeddingCollector(Metric):
    """Collect named feature tensors plus `index`, `valid` and integer labels (e.g. `pid`,
    `image_index`) during evaluation; `compute()` returns them gathered, deduplicated and sorted.

    `feature_names` / `label_names`: the keys of the feature dict and the label keyword
    arguments of `update`; None takes them from the first update (a rank that never updates
    learns them from the others when gathering). `expected`: the number of distinct items
    `compute()` must find (can also be given to `compute`). Call `reset()` between evaluations.

    Example::

        images = EmbeddingCollector(["global"], label_names=["pid"], expected=5000)
        images.update({"global": feats}, index=batch["image_index"], valid=batch["valid"],
                      pid=batch["pid"])
        out = images.compute()  # {"index": [5000], "pid": [5000], "global": [5000, D]}
    """

    full_state_update = False
    higher_is_better = None
    is_differentiable = False

    def __init__(
        self,
        feature_names: Sequence[str] | None = None,
        label_names: Sequence[str] | None = None,
        expected: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.expected = expected
        self.feature_names: tuple[str, ...] | None = None
        self.label_names: tuple[str, ...] | None = None
        for name in _RESERVED:
            self.add_state(self._state(name), default=[], dist_reduce_fx="cat")
        if feature_names is not None:
            self._register(feature_names, label_names if label_names is not None else ())
        elif label_names is not None:
            raise ValueError("label_names without feature_names: give both or neither")

    @staticmethod
    def _state(name: str) -> str:
        return f"collected_{name}"

    def _register(self, feature_names: Sequence[str], label_names: Sequence[str]) -> None:
        _check_names(feature_names, label_names)
        self.feature_names, self.label_names = tuple(feature_names), tuple(label_names)
        for name in (*self.label_names, *self.feature_names):
            self.add_state(self._state(name), default=[], dist_reduce_fx="cat")

    def _names(self) -> tuple[str, ...]:
        return (*_RESERVED, *(self.label_names or ()), *(self.feature_names or ()))

    def update(
        self,
        features: Mapping[str, Tensor],
        index: Tensor,
        valid: Tensor | None = None,
        **labels: Tensor,
    ) -> None:
        """Add one batch: `features[name]` [B, ...] for every feature name, `index` [B] (global
        item index; padded items may hold anything), `valid` [B] bool (False = padding; default
        all True) and one [B] integer tensor per label name."""
        if not isinstance(features, Mapping):
            raise TypeError(
                f"EmbeddingCollector.update: features must be a dict of tensors, got {type(features)}"
            )
        if self.feature_names is None:
            self._register(list(features), list(labels))
        assert self.feature_names is not None and self.label_names is not None
        index = torch.as_tensor(index).flatten()
        batch = index.shape[0]
        if valid is None:
            valid = torch.ones(batch, dtype=torch.bool, device=index.device)
        missing = [n for n in self.feature_names if n not in features]
        missing += [n for n in self.label_names if n not in labels]
        unknown = [n for n in labels if n not in self.label_names]
        if missing or unknown:
            raise ValueError(f"EmbeddingCollector.update: missing {missing}, unexpected {unknown}")
        values = {"index": index.long(), "valid": torch.as_tensor(valid).flatten().bool()}
        values |= {n: torch.as_tensor(labels[n]).flatten().long() for n in self.label_names}
        values |= {n: features[n].detach() for n in self.feature_names}
        for name, value in values.items():  # check everything before storing anything
            if value.shape[0] != batch:
                raise ValueError(
                    f"EmbeddingCollector.update: {name} has {value.shape[0]} rows, index has {batch}"
                )
        for name, value in values.items():
            getattr(self, self._state(name)).append(value.to(self.device))

    def _sync_dist(self, dist_sync_fn: Any = None, process_group: Any = None) -> None:
        """Before torchmetrics gathers: a rank that saw no update learns the state names from the
        others and gets empty states of the right shape and dtype. (torchmetrics' placeholder is a
        1-D float tensor, which cannot be gathered with [B, D] features: the ranks would disagree
        on the number of dimensions and hang or fail.)"""
        group = process_group or self.process_group
        local = {"names": (self.feature_names, self.label_names), "specs": {}}
        for name in self._names():
            parts = getattr(self, self._state(name))
            if parts:
                local["specs"][name] = (tuple(parts[0].shape[1:]), str(parts[0].dtype).removeprefix("torch."))
        everyone: list[Any] = [None] * torch.distributed.get_world_size(group)
        torch.distributed.all_gather_object(everyone, local, group=group)
        if self.feature_names is None:
            known = next((r["names"] for r in everyone if r["names"][0] is not None), None)
            if known is not None:
                self._register(*known)
        for name in self._names():
            if name in local["specs"]:
                continue
            spec = next((r["specs"][name] for r in everyone if name in r["specs"]), None)
            if spec is not None:
                shape, dtype = spec
                empty = torch.empty((0, *shape), dtype=getattr(torch, dtype), device=self.device)
                getattr(self, self._state(name)).append(empty)
        if dist_sync_fn is None:
            super()._sync_dist(process_group=process_group)
        else:
            super()._sync_dist(dist_sync_fn, process_group=process_group)

    def compute(self, expected: int | None = None) -> dict[str, Tensor]:
        """All valid items once each, sorted by index: {"index": [n], labels: [n], features: [n, ...]}.

        With `expected` (here or at construction) the number of distinct items must equal it and
        the indices must be 0..expected-1, else `EmbeddingCountError`.
        """
        data = {n: _cat(getattr(self, self._state(n))) for n in self._names()}
        items: dict[str, Tensor] = {}
        if data["index"] is not None:
            keep = data.pop("valid")
            data = {n: v[keep] for n, v in data.items()}
            order = torch.argsort(data["index"], stable=True)
            data = {n: v[order] for n, v in data.items()}
            first = torch.ones_like(data["index"], dtype=torch.bool)
            first[1:] = data["index"][1:] != data["index"][:-1]
            items = {n: v[first] for n, v in data.items()}
        count = int(items["index"].shape[0]) if items else 0
        expected = self.expected if expected is None else expected
        if expected is not None:
            low = int(items["index"][0]) if count else None
            high = int(items["index"][-1]) if count else None
            if count != expected or (count and (low != 0 or high != expected - 1)):
                raise EmbeddingCountError(
                    f"expected {expected} items with indices 0..{expected - 1}, got {count} distinct items"
                    + (f" with indices {low}..{high}" if count else "")
                    + "; the data does not match its manifest or the evaluation sharding lost items"
                )
        if not count:
            raise EmbeddingCountError("no items were collected (update() was never called with valid items)")
        return items


def _cat(parts: Tensor | list[Tensor]) -> Tensor | None:
    """A state as one tensor (after a DDP sync it already is one), or None when empty."""
    if isinstance(parts, Tensor):
        return parts
    return torch.cat(parts) if parts else None
