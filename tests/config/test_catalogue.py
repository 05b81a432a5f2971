"""The catalogue (method modules read as source) agrees with the registry (the modules imported)."""

from __future__ import annotations

import dataclasses

import pytest

from xmodal_bench import catalogue, registry
from xmodal_bench.config import compose
from xmodal_bench.metrics.protocols import list_protocols
from xmodal_bench.run.request import RunRequest


def test_names_summaries_and_fields_match_the_registry():
    methods, plugins = registry.method_entries(), registry.plugin_entries()
    assert sorted(catalogue.methods()) == sorted(methods)  # registry order = import order
    assert sorted(catalogue.plugins()) == sorted(plugins)
    for name, static in {**catalogue.methods(), **catalogue.plugins()}.items():
        real = methods.get(name) or plugins[name]
        assert static.summary == real.summary, name
        assert static.config_name == real.config.__name__, name
        light = catalogue.light_section(static)
        assert [f.name for f in dataclasses.fields(light)] == [
            f.name for f in dataclasses.fields(real.config)
        ]


def test_builtin_protocols_are_the_registered_ones():
    assert sorted(catalogue.BUILTIN_PROTOCOLS) == sorted(list_protocols())


@pytest.mark.parametrize("method", ["zeroshot", "clip", "irra", "tgdt", "aladin", "clip+bcls", "irra+bcls"])
@pytest.mark.parametrize("dataset", ["synth", "synth_reid", "coco", "cuhk"])
@pytest.mark.parametrize("scale", ["tiny", "base"])
def test_light_config_equals_the_real_one(method, dataset, scale):
    """Never stricter, and the same values: the light compose of every shipped layer is the real one."""
    request = RunRequest(method, dataset, scale)
    light = request._compose(*registry.light_method_sections(method))
    real = request.compose()
    assert light == real


def test_light_sections_accept_what_the_real_ones_accept():
    parts, sections = registry.light_method_sections("aladin")
    cfg = compose(
        parts, sections, "synth", "tiny", overrides=["aladin.index.backend=torch", "aladin.ff_dim=64"]
    )
    assert cfg.aladin.ff_dim == 64
