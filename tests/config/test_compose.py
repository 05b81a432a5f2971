"""Config composition: layer order, scales, overrides and the errors users see."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from xmodal_bench.config import compose
from xmodal_bench.errors import UserError


@dataclass
class ToyConfig:
    margin: float = 0.2
    losses: list[str] | None = None


def _write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def root(tmp_path):
    _write(
        tmp_path / "methods" / "toy.yaml",
        "toy: {margin: 0.3}\noptim: {lr: 0.1}\ndata: {batch_size: 32}\n"
        "scales:\n  tiny: {optim: {lr: 0.5}, backbone: {model: xmb-tiny}}\n  base: {backbone: {model: ViT-B-16}}\n",
    )
    _write(
        tmp_path / "data" / "toyset.yaml",
        "about: {summary: a toy}\ndata: {protocol: person, image_size: [96, 32]}\n"
        "scales:\n  base: {data: {image_size: [384, 128]}}\n",
    )
    return tmp_path


def _compose(root, scale="tiny", **kwargs):
    return compose(["toy"], {"toy": ToyConfig}, "toyset", scale, config_root=root, **kwargs)


def test_layers_apply_in_order(root) -> None:
    cfg = _compose(root)
    assert cfg.toy.margin == 0.3  # method file over schema default
    assert cfg.optim.lr == 0.5  # scale block over method file
    assert cfg.data.batch_size == 32 and cfg.data.protocol == "person"
    assert list(cfg.data.image_size) == [96, 32]
    assert cfg.method == "toy" and cfg.data.name == "toyset" and cfg.scale == "tiny"
    base = _compose(root, scale="base")
    assert (
        base.backbone.model == "ViT-B-16"
        and list(base.data.image_size) == [384, 128]
        and base.optim.lr == 0.1
    )


def test_flags_then_overrides_win(root) -> None:
    cfg = _compose(
        root, flags={"seed": 7, "optim": {"lr": 0.2}}, overrides=["optim.lr=0.3", "toy.losses=[a,b]"]
    )
    assert cfg.seed == 7 and cfg.optim.lr == 0.3 and list(cfg.toy.losses) == ["a", "b"]


def test_result_is_read_only(root) -> None:
    cfg = _compose(root)
    with pytest.raises(Exception):  # noqa: B017 - omegaconf's ReadonlyConfigError
        cfg.optim.lr = 1.0


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["optim.lr=fast"], "optim.lr.*could not be converted"),
        (["optim.learning_rate=1"], "optim.learning_rate.*not in"),
        (["toy.margin=[1]"], "toy.margin"),
        (["data.batch_size=0"], "batch_size must be at least 2"),
        (["data.protocol=ranking"], "data.protocol"),
        (["trainer.max_epochs=0"], "max_epochs"),
        (["lr"], "expected key=value"),
        (["optim..lr=1"], "expected key=value"),
    ],
)
def test_bad_overrides_are_one_line_user_errors(root, overrides, message) -> None:
    with pytest.raises(UserError, match=message) as info:
        _compose(root, overrides=overrides)
    assert "\n" not in str(info.value)


def test_unknown_scale_and_broken_yaml(root) -> None:
    with pytest.raises(UserError, match="unknown scale"):
        _compose(root, scale="huge")
    _write(root / "data" / "toyset.yaml", "data: [unclosed\n")
    with pytest.raises(UserError, match="not valid YAML"):
        _compose(root)


def test_unknown_key_in_a_yaml_layer_names_the_file(root) -> None:
    _write(root / "methods" / "toy.yaml", "toy: {margn: 0.3}\n")
    with pytest.raises(UserError, match=r"toy\.yaml.*margn"):
        _compose(root)


def test_shipped_configs_compose_for_every_method_and_dataset() -> None:
    from xmodal_bench.registry import list_datasets, method_entries, method_sections

    for method in method_entries():
        for dataset in list_datasets():
            for scale in ("tiny", "base"):
                parts, sections = method_sections(method)
                cfg = compose(parts, sections, dataset, scale)
                assert cfg.method == method and cfg.data.name == dataset


def test_changes_record_what_the_user_set_except_placement(root) -> None:
    cfg = _compose(
        root,
        flags={"seed": 3, "runs_dir": "/tmp/x", "trainer": {"max_epochs": 2}, "data": {"root": "/d"}},
        overrides=["toy.margin=0.5", "seed=4", "toy.margin=0.6"],
    )
    assert list(cfg.changes) == ["trainer.max_epochs=2", "toy.margin=0.6"]
    assert list(_compose(root).changes) == []
