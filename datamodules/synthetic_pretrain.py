"""`synth_pretrain`: the pretraining corpus of the tiny scale, larger and more varied than the sets
it prepares for, and disjoint from their evaluation images by construction.

Every paper in the suite fine-tunes a pretrained CLIP. At the `tiny` scale the pretrained model is
`synthclip` (`xmodal-bench pretrain`), the tiny CLIP trained with InfoNCE on this corpus, so that
every method starts from a model that already ranks, as it would from OpenAI's weights.

What it holds (64 x 64 images, 5 captions each):
- shape scenes (`1 - person_fraction` of the images): synth's grammar over a wider world: all 7
  shape kinds (synth uses 4), 5 backgrounds (synth's light, dark and noisy, plus a gradient and
  stripes), and spatial relations between two shapes ("a red circle to the left of a blue
  square") besides synth's attribute captions;
- person-like figures (`person_fraction`): synth_reid's figures (tops, bottoms, shoes, hats, bags)
  standing in a square scene, captioned with synth_reid's grammar.

Disjoint by construction: a scene whose shapes and background equal a scene of synth's default
validation or test split, or a figure whose six attributes equal an identity of synth_reid's
default validation or test split, is never drawn (both are recomputed from their generators, and
the count of rejected draws is recorded in the manifest). The corpus is generated from its own
random streams, so no image is a pixel copy of an evaluation image either.

Splits: `train` (the corpus) and `test` (a held-out sample of the same distribution, the
pretraining report's zero-shot check).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from datamodules.synthetic import (
    _REID_CARD,
    BACKGROUNDS,
    COLOURS,
    KINDS,
    SKIN,
    SynthParams,
    SynthReidParams,
    _article,
    _background,
    _distinct_captions,
    _draw_person,
    _draw_shapes,
    _encode,
    _reid_draw_caption,
    _Scene,
    _split_seed,
    _synth_draw_caption,
    _synth_scene,
    _synth_truth,
)
from datamodules.writer import DatasetWriter

NAME = "synth_pretrain"


@dataclass(frozen=True)
class SynthPretrainParams:
    """Knobs of `synth_pretrain`. Defaults: 30,000 train / 1,000 test images, 5 captions each, 64x64 JPEG."""

    train_images: int = 30000
    test_images: int = 1000
    captions_per_image: int = 5
    image_size: int = 64
    person_fraction: float = 0.25
    p_relation: float = 0.3  # share of a multi-shape scene's captions that state a spatial relation
    image_format: str = "jpg"
    shard_images: int = 1000


EXTRA_BACKGROUNDS: list[tuple[str, list[str]]] = [
    ("gradient", ["gradient", "shaded", "fading"]),
    ("striped", ["striped", "lined"]),
]
RELATIONS = {  # (d_row, d_col) sign of B relative to A -> phrases "A ... B"
    "left": ["to the left of", "left of"],
    "right": ["to the right of", "right of"],
    "above": ["above", "over"],
    "below": ["below", "under", "beneath"],
}


def evaluation_keys() -> tuple[set[tuple], set[tuple]]:
    """(scene keys of synth's default val + test, attribute tuples of synth_reid's default val + test)."""
    synth = SynthParams()
    scenes: set[tuple] = set()
    for split, n in (("val", synth.val_images), ("test", synth.test_images)):
        rng = random.Random(_split_seed(0, "synth", split))
        nrng = np.random.default_rng(_split_seed(0, "synth-pixels", split))
        for _ in range(n):
            scene = _synth_scene(synth, rng)
            scenes.add(scene_key(scene))
            # advance the streams exactly as synth's generator does (drawing + captions)
            _draw_shapes(_background(synth.image_size, scene.background, synth.noise, rng, nrng), scene, rng)
            _distinct_captions(partial(_synth_draw_caption, synth, scene, rng), synth.captions_per_image)
    reid = SynthReidParams()
    total = reid.train_ids + reid.val_ids + reid.test_ids
    id_rng = np.random.default_rng(_split_seed(0, "synth_reid", "identities"))
    combos = id_rng.choice(int(np.prod(_REID_CARD)), size=total, replace=False)
    identities = np.stack(np.unravel_index(combos, _REID_CARD), axis=1)
    people = {tuple(int(v) for v in row) for row in identities[: reid.test_ids + reid.val_ids]}
    return scenes, people


def scene_key(scene: _Scene) -> tuple:
    """What makes a scene: its background and its set of (colour, kind, size, cell) shapes."""
    shapes = tuple(sorted(tuple(int(v) for v in row) for row in scene.shapes[: scene.count]))
    return (int(scene.background), shapes)


def _relation(a: tuple[int, ...], b: tuple[int, ...]) -> str | None:
    """Where shape b's cell lies relative to shape a's, when one direction dominates."""
    (ra, ca), (rb, cb) = divmod(a[3], 3), divmod(b[3], 3)
    if ca != cb and ra == rb:
        return "right" if cb > ca else "left"
    if ra != rb and ca == cb:
        return "below" if rb > ra else "above"
    return None


def _shape_phrase(shape: tuple[int, ...], rng: random.Random) -> str:
    colour, kind, _, _ = shape
    return _article(f"{rng.choice(COLOURS[colour][2])} {rng.choice(KINDS[kind][1])}")


def _relation_caption(scene: _Scene, rng: random.Random) -> str | None:
    """`A <relation> B` for a random ordered pair of the scene's shapes in one row or column."""
    shapes = [tuple(int(v) for v in row) for row in scene.shapes[: scene.count]]
    pairs = [(a, b) for a in shapes for b in shapes if a != b and _relation(b, a)]
    if not pairs:
        return None
    a, b = rng.choice(pairs)
    phrase = rng.choice(RELATIONS[_relation(b, a)])  # where a lies relative to b
    return f"{_shape_phrase(a, rng)} {phrase} {_shape_phrase(b, rng)}"


def _extra_background(s: int, kind: str, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    """A gradient or a striped background (pretraining only)."""
    low, high = sorted(rng.sample(range(40, 220), 2))
    ramp = np.linspace(low, high, s)
    if kind == "gradient":
        plane = ramp[None, :] if rng.random() < 0.5 else ramp[:, None]
        grey = np.broadcast_to(plane, (s, s))
    else:
        period = rng.randint(4, 10)
        lines = (np.arange(s) // (period // 2 or 1)) % 2
        grey = np.where(lines[:, None] if rng.random() < 0.5 else lines[None, :], low, high)
        grey = np.broadcast_to(grey, (s, s))
    tint = np.array([rng.randint(-12, 12) for _ in range(3)])
    pixels = grey[:, :, None] + tint + nrng.integers(-6, 7, size=(s, s, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _scene_sample(
    p: SynthPretrainParams, world: SynthParams, rng: random.Random, nrng: np.random.Generator, excluded: set
) -> tuple[bytes, list[str], str, int]:
    """(image, captions, source, rejected draws) of one shape scene outside `excluded`."""
    rejected = 0
    while True:
        scene = _synth_scene(world, rng)
        extra = rng.random() < len(EXTRA_BACKGROUNDS) / 5  # 5 backgrounds, each equally likely
        if extra or scene_key(scene) not in excluded:
            break
        rejected += 1
    if extra:
        kind = rng.choice(EXTRA_BACKGROUNDS)
        image = _extra_background(p.image_size, kind[0], rng, nrng)
        scene.background = -1  # not one of synth's: never named by synth's grammar
    else:
        image = _background(p.image_size, scene.background, world.noise, rng, nrng)
    _draw_shapes(image, scene, rng)
    _, captions = _distinct_captions(partial(_synth_draw_caption, world, scene, rng), p.captions_per_image)
    for i in range(len(captions)):
        if scene.count > 1 and rng.random() < p.p_relation:
            captions[i] = _relation_caption(scene, rng) or captions[i]
        elif extra and rng.random() < 0.4:
            captions[i] = f"{captions[i]} on a {rng.choice(kind[1])} background"
    background = kind[0] if extra else BACKGROUNDS[scene.background][0]
    shapes = _synth_truth(_Scene(scene.shapes, scene.count, 0)).split("|", 2)[2]
    return _encode(image, p.image_format), captions, f"{NAME}|bg={background}|{shapes}", rejected


def _person_sample(
    p: SynthPretrainParams, rng: random.Random, nrng: np.random.Generator, excluded: set
) -> tuple[bytes, list[str], str, int]:
    """(image, captions, source, rejected draws) of one figure whose attributes are no eval identity."""
    rejected = 0
    while True:
        attrs = np.array([rng.randrange(n) for n in _REID_CARD])
        if tuple(int(v) for v in attrs) not in excluded:
            break
        rejected += 1
    figure = SynthReidParams(image_size=(p.image_size, p.image_size), image_format=p.image_format)
    extra = {
        "skin": rng.randrange(len(SKIN)),
        "hair_rgb": rng.choice([(25, 20, 15), (90, 60, 30), (200, 170, 90), (60, 40, 25)]),
        "bag_rgb": rng.choice([(60, 40, 30), (30, 30, 35), (150, 30, 30), (30, 50, 110)]),
    }
    image = _draw_person(figure, attrs, extra, rng, nrng)
    _, captions = _distinct_captions(partial(_reid_draw_caption, figure, attrs, rng), p.captions_per_image)
    truth = f"{NAME}|person|" + "|".join(str(int(v)) for v in attrs)
    return image, captions, truth, rejected


def generate(writer: DatasetWriter, p: SynthPretrainParams, seed: int, bar: tqdm) -> dict[str, Any]:
    """Write both splits; returns what the manifest's `source` records (rejections, mix)."""
    world = SynthParams(
        num_kinds=len(KINDS), captions_per_image=p.captions_per_image, image_size=p.image_size
    )
    scenes_excluded, people_excluded = evaluation_keys()
    rejected = {"scenes": 0, "figures": 0}
    figures = 0
    for split, n in (("train", p.train_images), ("test", p.test_images)):
        rng = random.Random(_split_seed(seed, NAME, split))
        nrng = np.random.default_rng(_split_seed(seed, f"{NAME}-pixels", split))
        for i in range(n):
            if rng.random() < p.person_fraction:
                image, captions, truth, bad = _person_sample(p, rng, nrng, people_excluded)
                rejected["figures"] += bad
                figures += 1
            else:
                image, captions, truth, bad = _scene_sample(p, world, rng, nrng, scenes_excluded)
                rejected["scenes"] += bad
            writer.add(split, image, p.image_format, f"{split}_{i:06d}", captions, source=truth)
            bar.update(1)
    return {
        "rejected_as_evaluation_images": rejected,
        "excluded": {"synth_scenes": len(scenes_excluded), "synth_reid_identities": len(people_excluded)},
        "figures": figures,
    }


def validate(p: SynthPretrainParams) -> None:
    from xmodal_bench.errors import UserError

    if min(p.train_images, p.test_images) < 0 or p.captions_per_image < 1 or p.shard_images < 1:
        raise UserError("synth_pretrain sizes must be >= 0, captions_per_image and shard_images >= 1")
    if not 0 <= p.person_fraction <= 1 or not 0 <= p.p_relation <= 1:
        raise UserError("synth_pretrain person_fraction and p_relation must be in [0, 1]")
    if p.image_size < 48 or p.image_format not in ("png", "jpg"):
        raise UserError("synth_pretrain image_size must be >= 48 and image_format png or jpg")


__all__ = ["NAME", "SynthPretrainParams", "evaluation_keys", "generate", "scene_key"]
