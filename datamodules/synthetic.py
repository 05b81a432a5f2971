"""The procedural worlds of the built-in datasets `synth` (caption protocol) and `synth_reid`
(person protocol): their parameters, drawing and caption grammars. `datamodules.synthetic_sets`
names, generates and caches them (and the pretraining corpus, `datamodules.synthetic_pretrain`).

Both are seeded, fast to generate (seconds), written through `DatasetWriter`, and designed to be
learnable but not trivially solvable: every caption mentions only SOME attributes of its image,
in paraphrased wording, so several images are consistent with most captions and even a perfect
model cannot reach 100% R@1. The expected R@1 of such an ideal model ("oracle": ranks the images
consistent with a caption first, in random order) is computed at generation time and recorded in
the manifest under `source.oracle_t2i_r1` (caption protocol) / `source.oracle_r1` (person
protocol), per eval split, in percent: a ceiling to compare trained models against.

`synth`: 1..`max_shapes` shapes on a 3x3 grid (colour, kind, size small/large, grid position) on
a light, dark or noisy background; `captions_per_image` captions each naming every shape (with
probability `p_all_shapes`) or 1..`max_mentioned` of them, each with a random subset of its
attributes (`p_colour`, `p_kind`, `p_size`, `p_position`), sometimes the shape count or background.
Defaults are tuned so that the tiny CLIP (xmb-tiny, from scratch, lr 1e-3, batch 128) reaches
~15% t2i R@1 on the 1000-image test split after 360 steps (~3 min on 2 cores) and ~22% after 6
epochs, against an oracle ceiling of ~75%.

`synth_reid`: identities = unique combinations of (top colour, bottom colour, bottom kind, shoe
colour, hat, bag); `images_per_id` images each with jitter (shift, scale, leg pose, mirror,
background change); `captions_per_image` captions each naming a random subset of the attributes.
Train pids are 0..N-1; val and test use disjoint, later ids (eval ids are kept as generated).

Splits are generated from independent random streams (`seed`, split), so changing the size of one
split does not change the others (for synth_reid the identity draw is shared: test identities
are drawn first, then val, then train).
"""

from __future__ import annotations

import io
import itertools
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from datamodules.writer import DatasetWriter
from xmodal_bench.errors import UserError

__all__ = ["GENERATOR_VERSION", "SynthParams", "SynthReidParams", "attribute_vocabulary"]

GENERATOR_VERSION = 1

# ---------------------------------------------------------------------------------------------
# Parameters (the tuning knobs; every field is recorded in the manifest)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthParams:
    """Knobs of `synth`. Defaults: 4000/500/1000 images, 5 captions each, 64x64 JPEG."""

    train_images: int = 4000
    val_images: int = 500
    test_images: int = 1000
    captions_per_image: int = 5
    image_size: int = 64
    max_shapes: int = 3  # 1..3 shapes per image
    num_colours: int = 10  # first N of the colour vocabulary (max 10)
    num_kinds: int = 4  # first N of the shape vocabulary (max 7)
    max_mentioned: int = 3  # a caption names 1..this many of the image's shapes ...
    p_all_shapes: float = 0.7  # ... or, with this probability, every shape
    p_colour: float = 1.0  # probability a named shape's colour is mentioned
    p_kind: float = 0.9  # ... its kind (else "shape"/"object"); colour or kind always present
    p_size: float = 0.5
    p_position: float = 0.8
    p_count: float = 0.4  # probability the caption states the number of shapes
    p_background: float = 0.4  # ... the background type
    noise: float = 6.0  # std of the background pixel noise (noisy backgrounds: x6)
    image_format: str = (
        "jpg"  # jpg (q90, 4:4:4: 0.1 ms to encode, 2-6 KB) or png (lossless, 8x slower, 8-11 KB)
    )
    shard_images: int = 500


@dataclass(frozen=True)
class SynthReidParams:
    """Knobs of `synth_reid`. Defaults: 400/100/200 ids x 4 images, 2 captions each, 96x32 JPEG."""

    train_ids: int = 400
    val_ids: int = 100
    test_ids: int = 200
    images_per_id: int = 4
    captions_per_image: int = 2
    image_size: tuple[int, int] = (96, 32)  # stored (height, width)
    p_mention: float = 0.5  # probability each attribute is mentioned ...
    min_mentioned: int = 2  # ... with at least this many per caption
    image_format: str = "jpg"  # jpg or png
    shard_images: int = 400


def validate_params(p: SynthParams | SynthReidParams) -> None:
    if p.image_format not in ("png", "jpg"):
        raise UserError(f"image_format must be png or jpg, got {p.image_format!r}")
    if p.captions_per_image < 1 or p.shard_images < 1:
        raise UserError("captions_per_image and shard_images must be >= 1")
    if isinstance(p, SynthParams):
        if not (1 <= p.max_shapes <= 3 and 1 <= p.max_mentioned <= 3):
            raise UserError("max_shapes and max_mentioned must be in 1..3")
        if not (2 <= p.num_colours <= len(COLOURS) and 2 <= p.num_kinds <= len(KINDS)):
            raise UserError(f"num_colours must be in 2..{len(COLOURS)}, num_kinds in 2..{len(KINDS)}")
        if p.image_size < 16:
            raise UserError("synth image_size must be >= 16")
        if min(p.train_images, p.val_images, p.test_images) < 0:
            raise UserError("split sizes must be >= 0")
    else:
        if len(p.image_size) != 2 or p.image_size[0] < 48 or p.image_size[1] < 16:
            raise UserError("synth_reid image_size must be (height >= 48, width >= 16)")
        if min(p.train_ids, p.val_ids, p.test_ids) < 0 or p.images_per_id < 1:
            raise UserError("identity counts must be >= 0 and images_per_id >= 1")


# ---------------------------------------------------------------------------------------------
# Vocabularies: (RGB, words) -- the first word is canonical, the others are paraphrases
# ---------------------------------------------------------------------------------------------

COLOURS: list[tuple[str, tuple[int, int, int], list[str]]] = [
    ("red", (210, 35, 35), ["red", "crimson"]),
    ("green", (40, 170, 60), ["green"]),
    ("blue", (40, 70, 215), ["blue"]),
    ("yellow", (235, 215, 40), ["yellow"]),
    ("purple", (135, 50, 175), ["purple", "violet"]),
    ("orange", (245, 135, 25), ["orange"]),
    ("white", (250, 250, 250), ["white"]),
    ("black", (12, 12, 12), ["black"]),
    ("pink", (245, 130, 190), ["pink"]),
    ("cyan", (40, 210, 215), ["cyan", "turquoise"]),
]
KINDS: list[tuple[str, list[str]]] = [
    ("circle", ["circle", "disk", "round shape"]),
    ("square", ["square", "box", "block"]),
    ("triangle", ["triangle", "triangular shape"]),
    ("diamond", ["diamond", "rhombus"]),
    ("cross", ["cross", "plus sign"]),
    ("ring", ["ring", "hoop"]),
    ("bar", ["bar", "stripe"]),
]
SIZES: list[tuple[str, list[str]]] = [("small", ["small", "little", "tiny"]), ("large", ["large", "big"])]
POSITIONS: list[tuple[str, list[str]]] = [
    ("top left", ["top left", "upper left"]),
    ("top", ["top", "top middle"]),
    ("top right", ["top right", "upper right"]),
    ("left", ["left side", "middle left"]),
    ("center", ["center", "middle"]),
    ("right", ["right side", "middle right"]),
    ("bottom left", ["bottom left", "lower left"]),
    ("bottom", ["bottom", "bottom middle"]),
    ("bottom right", ["bottom right", "lower right"]),
]
BACKGROUNDS: list[tuple[str, list[str]]] = [
    ("light", ["light", "pale", "bright"]),
    ("dark", ["dark", "dim"]),
    ("noisy", ["noisy", "grainy", "speckled"]),
]
COUNT_WORDS = {1: ["one shape", "a single shape"], 2: ["two shapes", "a pair of shapes"], 3: ["three shapes"]}


def _article(phrase: str) -> str:
    return ("an " if phrase[:1] in "aeiou" else "a ") + phrase


# ---------------------------------------------------------------------------------------------
# synth
# ---------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    shapes: np.ndarray  # [max_shapes, 4] (colour, kind, size, position), -1 rows absent
    count: int
    background: int


@dataclass
class _Mention:
    descs: np.ndarray  # [k, 4], -1 = attribute not mentioned
    count: int  # -1 = not mentioned
    background: int  # -1 = not mentioned


def _synth_scene(p: SynthParams, rng: random.Random) -> _Scene:
    n = rng.randint(1, p.max_shapes)
    cells = rng.sample(range(9), n)
    shapes = np.full((3, 4), -1, dtype=np.int64)
    for i, cell in enumerate(cells):
        shapes[i] = (rng.randrange(p.num_colours), rng.randrange(p.num_kinds), rng.randrange(2), cell)
    return _Scene(shapes=shapes, count=n, background=rng.randrange(len(BACKGROUNDS)))


def _draw_synth(p: SynthParams, scene: _Scene, rng: random.Random, nrng: np.random.Generator) -> bytes:
    image = _background(p.image_size, scene.background, p.noise, rng, nrng)
    _draw_shapes(image, scene, rng)
    return _encode(image, p.image_format)


def _background(
    s: int, kind: int, noise: float, rng: random.Random, nrng: np.random.Generator
) -> Image.Image:
    """An s x s background: 0 light, 1 dark, 2 noisy (the `BACKGROUNDS` of synth)."""
    if kind == 0:  # light
        level, amp = rng.randint(185, 215), noise
    elif kind == 1:  # dark
        level, amp = rng.randint(45, 75), noise
    else:  # noisy
        level, amp = rng.randint(100, 150), noise * 6
    base = np.array([level + rng.randint(-10, 10) for _ in range(3)], dtype=np.int16)
    a = max(0, round(amp * 1.7))  # uniform noise of about this std
    pixels = base + nrng.integers(-a, a + 1, size=(s, s, 3), dtype=np.int16)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")


def _draw_shapes(image: Image.Image, scene: _Scene, rng: random.Random) -> None:
    """Draw the scene's shapes on a 3 x 3 grid of `image` (with jitter of colour, size and place)."""
    draw = ImageDraw.Draw(image)
    cell = image.size[0] / 3.0
    for colour, kind, size, pos in scene.shapes[: scene.count].tolist():
        rgb = tuple(min(255, max(0, c + rng.randint(-18, 18))) for c in COLOURS[colour][1])
        radius = cell * (0.22 if size == 0 else 0.42) * rng.uniform(0.9, 1.1)
        cx = (pos % 3 + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        cy = (pos // 3 + 0.5) * cell + rng.uniform(-0.08, 0.08) * cell
        _draw_shape(draw, KINDS[kind][0], cx, cy, radius, rgb)


def _draw_shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, rgb: tuple) -> None:
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=rgb)
    elif kind == "square":
        q = r * 0.85
        draw.rectangle((cx - q, cy - q, cx + q, cy + q), fill=rgb)
    elif kind == "triangle":
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=rgb)
    elif kind == "diamond":
        draw.polygon([(cx, cy - r), (cx + r * 0.8, cy), (cx, cy + r), (cx - r * 0.8, cy)], fill=rgb)
    elif kind == "cross":
        t = r * 0.33
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=rgb)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=rgb)
    elif kind == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=rgb, width=max(1, round(r * 0.35)))
    elif kind == "bar":
        draw.rectangle((cx - r, cy - r * 0.35, cx + r, cy + r * 0.35), fill=rgb)
    else:  # pragma: no cover
        raise ValueError(kind)


def _synth_mention(p: SynthParams, scene: _Scene, rng: random.Random) -> _Mention:
    k = scene.count if rng.random() < p.p_all_shapes else rng.randint(1, min(p.max_mentioned, scene.count))
    chosen = rng.sample(range(scene.count), k)
    descs = np.full((k, 4), -1, dtype=np.int64)
    for row, i in enumerate(chosen):
        colour, kind, size, pos = scene.shapes[i].tolist()
        while True:
            use_c, use_k = rng.random() < p.p_colour, rng.random() < p.p_kind
            if use_c or use_k:
                break
        descs[row] = (
            colour if use_c else -1,
            kind if use_k else -1,
            size if rng.random() < p.p_size else -1,
            pos if rng.random() < p.p_position else -1,
        )
    count = scene.count if rng.random() < p.p_count else -1
    background = scene.background if rng.random() < p.p_background else -1
    return _Mention(descs=descs, count=count, background=background)


def _synth_caption(m: _Mention, rng: random.Random) -> str:
    prefix = (
        "" if m.count >= 0 else rng.choice(["", "a picture of ", "an image showing ", "there is ", "we see "])
    )
    phrases = []
    for colour, kind, size, pos in m.descs.tolist():
        noun = rng.choice(KINDS[kind][1]) if kind >= 0 else rng.choice(["shape", "object"])
        colour_word = rng.choice(COLOURS[colour][2]) if colour >= 0 else ""
        size_word = rng.choice(SIZES[size][1]) if size >= 0 else ""
        if colour >= 0 and kind >= 0 and rng.random() < 0.2:
            core = _article(" ".join(w for w in (size_word, noun) if w)) + f" coloured {colour_word}"
        else:
            core = _article(" ".join(w for w in (size_word, colour_word, noun) if w))
        if pos >= 0:
            place = rng.choice(POSITIONS[pos][1])
            where = f"{'on' if place.endswith('side') else rng.choice(['in', 'at'])} the {place}"
            # "in the top left, a red circle ..." only where it reads naturally: at the very start
            front = not phrases and m.count < 0 and not prefix and rng.random() < 0.3
            core = f"{where}, {core}" if front else f"{core} {where}"
        phrases.append(core)
    body = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]
    bg = f" on a {rng.choice(BACKGROUNDS[m.background][1])} background" if m.background >= 0 else ""
    if m.count >= 0:
        count = rng.choice(COUNT_WORDS[m.count])
        templates = [f"an image with {count}{bg}: {body}", f"{body}, {count} in total{bg}"]
        if m.count > 1:
            templates.append(f"{count}{bg}, including {body}")
        text = rng.choice(templates)
    else:
        text = prefix + body + bg
    return text


class _SynthOracle:
    """Which of N images are consistent with a mention (distinct shapes for distinct phrases).

    `shapes` [N, 3, 4], `counts` [N], `backgrounds` [N] describe the N candidate images; the
    per-descriptor slot matches are cached, since captions reuse the same few descriptors.
    """

    def __init__(self, shapes: np.ndarray, counts: np.ndarray, backgrounds: np.ndarray) -> None:
        self.shapes, self.counts, self.backgrounds = shapes, counts, backgrounds
        self.present = shapes[:, :, 0] >= 0
        self._match: dict[tuple[int, ...], np.ndarray] = {}

    def _slots(self, desc: np.ndarray) -> np.ndarray:
        key = tuple(desc.tolist())
        if key not in self._match:
            self._match[key] = self.present & np.all((self.shapes == desc) | (desc < 0), axis=2)  # [N, 3]
        return self._match[key]

    def consistent(self, m: _Mention) -> np.ndarray:
        ok = np.ones(len(self.shapes), dtype=bool)
        if m.count >= 0:
            ok &= self.counts == m.count
        if m.background >= 0:
            ok &= self.backgrounds == m.background
        match = [self._slots(d) for d in m.descs]  # k x [N, 3]
        assign = np.zeros(len(self.shapes), dtype=bool)
        for perm in itertools.permutations(range(3), len(match)):
            hit = ok.copy()
            for d, slot in enumerate(perm):
                hit &= match[d][:, slot]
            assign |= hit
        return assign


def _synth_truth(scene: _Scene) -> str:
    """Ground truth as the sample's `source` string, e.g. `synth|bg=dark|red circle large center`."""
    shapes = ";".join(
        f"{COLOURS[c][0]} {KINDS[k][0]} {SIZES[z][0]} {POSITIONS[q][0]}"
        for c, k, z, q in scene.shapes[: scene.count].tolist()
    )
    return f"synth|bg={BACKGROUNDS[scene.background][0]}|{shapes}"


# ---------------------------------------------------------------------------------------------
# synth_reid
# ---------------------------------------------------------------------------------------------

REID_TOP = [
    ("red", (200, 35, 35)),
    ("blue", (40, 70, 200)),
    ("green", (40, 150, 60)),
    ("yellow", (230, 210, 40)),
    ("white", (245, 245, 245)),
    ("black", (20, 20, 20)),
    ("grey", (128, 128, 128)),
    ("pink", (240, 130, 185)),
    ("purple", (130, 50, 170)),
    ("orange", (240, 130, 30)),
]
REID_BOTTOM = [
    ("black", (20, 20, 20)),
    ("blue", (35, 55, 150)),
    ("grey", (120, 120, 120)),
    ("white", (240, 240, 240)),
    ("brown", (120, 75, 35)),
    ("green", (50, 110, 50)),
    ("red", (180, 30, 30)),
    ("beige", (215, 195, 150)),
]
REID_BOTTOM_KIND = [("trousers", ["trousers", "pants"]), ("shorts", ["shorts"]), ("skirt", ["skirt"])]
REID_SHOES = [("black", (15, 15, 15)), ("white", (245, 245, 245)), ("brown", (110, 65, 30))]
REID_HAT = [
    ("none", None),
    ("black", (20, 20, 20)),
    ("white", (240, 240, 240)),
    ("red", (200, 30, 30)),
    ("blue", (40, 60, 200)),
]
REID_BAG = [
    ("none", ["no bag"]),
    ("backpack", ["backpack", "rucksack"]),
    ("handbag", ["handbag", "small bag"]),
]
REID_ATTRS = ("top", "bottom_colour", "bottom_kind", "shoes", "hat", "bag")
_REID_CARD = (
    len(REID_TOP),
    len(REID_BOTTOM),
    len(REID_BOTTOM_KIND),
    len(REID_SHOES),
    len(REID_HAT),
    len(REID_BAG),
)
SKIN = [(240, 200, 170), (205, 160, 120), (150, 105, 70), (95, 65, 45)]
SCENES = [(150, 150, 150), (185, 175, 150), (110, 135, 105), (120, 135, 165), (80, 80, 85), (200, 200, 195)]


def _draw_person(
    p: SynthReidParams, attrs: np.ndarray, extra: dict, rng: random.Random, nrng: np.random.Generator
) -> bytes:
    h, w = p.image_size
    base = np.array([c + rng.randint(-20, 20) for c in rng.choice(SCENES)], dtype=np.int16)
    a = rng.randint(5, 30)
    pixels = base + nrng.integers(-a, a + 1, size=(h, w, 3), dtype=np.int16)
    ground = int(h * rng.uniform(0.75, 0.95))
    pixels[ground:] = pixels[ground:] * 4 // 5  # a darker ground band
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(image)

    class _D:  # ImageDraw with corner order normalised (mirrored parts give x1 < x0)
        @staticmethod
        def rectangle(box: tuple, fill: tuple) -> None:
            x0, y0, x1, y1 = box
            draw.rectangle((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)), fill=fill)

        polygon, ellipse, chord = draw.polygon, draw.ellipse, draw.chord

    d = _D()
    top, bcol, bkind, shoes, hat, bag = attrs.tolist()
    sc = h / 96.0 * rng.uniform(0.85, 1.0)
    sx = w / 32.0
    cx = w / 2 + rng.uniform(-3, 3) * sx
    y0 = (h - 88 * sc) / 2 + rng.uniform(-3, 3) * sc

    def y(v: float) -> float:
        return y0 + v * sc

    def x(v: float) -> float:
        return cx + v * sc

    skin, top_rgb, bottom_rgb = SKIN[extra["skin"]], REID_TOP[top][1], REID_BOTTOM[bcol][1]
    spread = rng.uniform(0.5, 3.5)
    # legs (skin first; trousers paint over them)
    for side in (-1, 1):
        d.rectangle((x(side * spread - 2.5), y(48), x(side * spread + 2.5), y(80)), fill=skin)
    if REID_BOTTOM_KIND[bkind][0] == "trousers":
        for side in (-1, 1):
            d.rectangle((x(side * spread - 3), y(46), x(side * spread + 3), y(80)), fill=bottom_rgb)
    elif REID_BOTTOM_KIND[bkind][0] == "shorts":
        for side in (-1, 1):
            d.rectangle((x(side * spread - 3.2), y(46), x(side * spread + 3.2), y(59)), fill=bottom_rgb)
    else:  # skirt
        d.polygon([(x(-6.5), y(46)), (x(6.5), y(46)), (x(9), y(63)), (x(-9), y(63))], fill=bottom_rgb)
    for side in (-1, 1):  # shoes
        d.rectangle((x(side * spread - 3.5), y(80), x(side * spread + 3.5), y(84)), fill=REID_SHOES[shoes][1])
    bag_kind = REID_BAG[bag][0]
    bag_side = rng.choice((-1, 1))
    if bag_kind == "backpack":
        d.rectangle((x(bag_side * 6), y(17), x(bag_side * 10), y(40)), fill=extra["bag_rgb"])
    # torso and arms
    d.rectangle((x(-7), y(15), x(7), y(47)), fill=top_rgb)
    arm = rng.uniform(-1.0, 1.0)
    for side in (-1, 1):
        d.rectangle((x(side * 7), y(16), x(side * 10), y(42 + arm * side)), fill=top_rgb)
        d.rectangle((x(side * 7.2), y(42 + arm * side), x(side * 9.8), y(45 + arm * side)), fill=skin)
    if bag_kind == "handbag":
        d.rectangle((x(bag_side * 9), y(43), x(bag_side * 14), y(52)), fill=extra["bag_rgb"])
    # head, hair, hat
    d.ellipse((x(-5.5), y(2), x(5.5), y(14)), fill=skin)
    d.chord((x(-5.8), y(1.5), x(5.8), y(12)), 180, 360, fill=extra["hair_rgb"])
    if REID_HAT[hat][1] is not None:
        d.rectangle((x(-6), y(-1), x(6), y(5)), fill=REID_HAT[hat][1])
        d.rectangle((x(-8), y(4), x(8), y(6)), fill=REID_HAT[hat][1])
    if rng.random() < 0.5:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return _encode(image, p.image_format)


def _reid_truth(attrs: np.ndarray) -> str:
    """Ground truth as the sample's `source` string, e.g. `synth_reid|top=red|bottom_colour=blue|...`."""
    words = [REID_TOP, REID_BOTTOM, REID_BOTTOM_KIND, REID_SHOES, REID_HAT, REID_BAG]
    return "synth_reid|" + "|".join(
        f"{a}={w[v][0]}" for a, w, v in zip(REID_ATTRS, words, attrs.tolist(), strict=True)
    )


def _reid_mention(p: SynthReidParams, attrs: np.ndarray, rng: random.Random) -> np.ndarray:
    """Constraint vector over REID_ATTRS (-1 = not mentioned)."""
    n = len(REID_ATTRS)
    while True:
        mask = [rng.random() < p.p_mention for _ in range(n)]
        if sum(mask) >= min(p.min_mentioned, n):
            break
    return np.where(mask, attrs, -1)


def _reid_caption(c: np.ndarray, rng: random.Random) -> str:
    top, bcol, bkind, shoes, hat, bag = c.tolist()
    clauses = []
    if top >= 0:
        word = rng.choice(["shirt", "top", "jacket", "t-shirt", "sweater"])
        verb = rng.choice(["wearing", "in", "dressed in"])
        clauses.append(f"{verb} {_article(REID_TOP[top][0] + ' ' + word)}")
    if bcol >= 0 or bkind >= 0:
        colour = REID_BOTTOM[bcol][0] if bcol >= 0 else ""
        if bkind >= 0:
            noun = rng.choice(REID_BOTTOM_KIND[bkind][1])
            phrase = " ".join(v for v in (colour, noun) if v)
            phrase = _article(phrase) if REID_BOTTOM_KIND[bkind][0] == "skirt" else phrase
        else:
            phrase = f"{colour} {rng.choice(['bottoms', 'lower-body clothes'])}"
        clauses.append(f"{rng.choice(['with', 'wearing'])} {phrase}")
    if shoes >= 0:
        clauses.append(
            f"{rng.choice(['with', 'in'])} {REID_SHOES[shoes][0]} {rng.choice(['shoes', 'sneakers'])}"
        )
    if hat >= 0:
        if REID_HAT[hat][1] is None:
            clauses.append(rng.choice(["without a hat", "with no hat"]))
        else:
            clauses.append(
                f"{rng.choice(['wearing', 'with'])} {_article(REID_HAT[hat][0])} {rng.choice(['hat', 'cap'])}"
            )
    if bag >= 0:
        if REID_BAG[bag][0] == "none":
            clauses.append(rng.choice(["carrying no bag", "with no bag"]))
        else:
            clauses.append(f"{rng.choice(['carrying', 'with'])} {_article(rng.choice(REID_BAG[bag][1]))}")
    rng.shuffle(clauses)
    subject = rng.choice(["a person", "a pedestrian", "someone", "the person", "a walker"])
    body = clauses[0] if len(clauses) == 1 else ", ".join(clauses[:-1]) + " and " + clauses[-1]
    return f"{subject} {body}"


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "png":
        image.save(buf, "PNG", compress_level=6)
    else:
        image.save(buf, "JPEG", quality=90, subsampling=0)
    return buf.getvalue()


def _split_seed(seed: int, name: str, split: str) -> int:
    return int.from_bytes(f"{seed}/{name}/{split}".encode(), "little") % (2**63)


def _synth_draw_caption(p: SynthParams, scene: _Scene, rng: random.Random) -> tuple[_Mention, str]:
    m = _synth_mention(p, scene, rng)
    return m, _synth_caption(m, rng)


def _reid_draw_caption(p: SynthReidParams, attrs: np.ndarray, rng: random.Random) -> tuple[np.ndarray, str]:
    c = _reid_mention(p, attrs, rng)
    return c, _reid_caption(c, rng)


def _distinct_captions(make: Callable[[], tuple[Any, str]], n: int) -> tuple[list[Any], list[str]]:
    """Draw `n` (mention, caption) pairs, retrying a few times to avoid duplicate captions."""
    mentions, captions = [], []
    for _ in range(n):
        for _attempt in range(5):
            m, c = make()
            if c not in captions:
                break
        mentions.append(m)
        captions.append(c)
    return mentions, captions


def generate_synth(writer: DatasetWriter, p: SynthParams, seed: int, bar: tqdm) -> dict[str, float]:
    oracle = {}
    for split, n in (("train", p.train_images), ("val", p.val_images), ("test", p.test_images)):
        rng = random.Random(_split_seed(seed, "synth", split))
        nrng = np.random.default_rng(_split_seed(seed, "synth-pixels", split))
        scenes, mentions = [], []
        for i in range(n):
            scene = _synth_scene(p, rng)
            image = _draw_synth(p, scene, rng, nrng)

            ms, captions = _distinct_captions(
                partial(_synth_draw_caption, p, scene, rng), p.captions_per_image
            )
            writer.add(split, image, p.image_format, f"{split}_{i:06d}", captions, source=_synth_truth(scene))
            scenes.append(scene)
            mentions.append(ms)
            bar.update(1)
        if split != "train" and n:
            judge = _SynthOracle(
                np.stack([s.shapes for s in scenes]),
                np.array([s.count for s in scenes]),
                np.array([s.background for s in scenes]),
            )
            r1 = [1.0 / judge.consistent(m).sum() for ms in mentions for m in ms]
            oracle[split] = round(100.0 * float(np.mean(r1)), 2)
    return oracle


def generate_reid(writer: DatasetWriter, p: SynthReidParams, seed: int, bar: tqdm) -> dict[str, float]:
    total = p.train_ids + p.val_ids + p.test_ids
    n_combos = int(np.prod(_REID_CARD))
    if total > n_combos:
        raise UserError(f"synth_reid supports at most {n_combos} identities, asked for {total}")
    id_rng = np.random.default_rng(_split_seed(seed, "synth_reid", "identities"))
    combos = id_rng.choice(n_combos, size=total, replace=False)
    identities = np.stack(np.unravel_index(combos, _REID_CARD), axis=1)  # [total, 6]
    # test identities first, then val, then train: eval sets do not move when train grows
    ranges = {
        "test": (0, p.test_ids),
        "val": (p.test_ids, p.test_ids + p.val_ids),
        "train": (p.test_ids + p.val_ids, total),
    }
    pid_base = {"train": 0, "val": p.train_ids, "test": p.train_ids + p.val_ids}
    oracle = {}
    for split in ("train", "val", "test"):
        rng = random.Random(_split_seed(seed, "synth_reid", split))
        nrng = np.random.default_rng(_split_seed(seed, "synth_reid-pixels", split))
        lo, hi = ranges[split]
        image_attrs, image_pids, mentions = [], [], []
        for j, attrs in enumerate(identities[lo:hi]):
            pid = pid_base[split] + j
            extra = {
                "skin": rng.randrange(len(SKIN)),
                "hair_rgb": rng.choice([(25, 20, 15), (90, 60, 30), (200, 170, 90), (60, 40, 25)]),
                "bag_rgb": rng.choice([(60, 40, 30), (30, 30, 35), (150, 30, 30), (30, 50, 110)]),
            }
            for k in range(p.images_per_id):
                image = _draw_person(p, attrs, extra, rng, nrng)

                cs, captions = _distinct_captions(
                    partial(_reid_draw_caption, p, attrs, rng), p.captions_per_image
                )
                writer.add(
                    split,
                    image,
                    p.image_format,
                    f"{split}_p{pid:05d}_{k:02d}",
                    captions,
                    pid=pid,
                    source=_reid_truth(attrs),
                )
                image_attrs.append(attrs)
                image_pids.append(pid)
                mentions.append(cs)
                bar.update(1)
        if split != "train" and image_attrs:
            attrs_arr, pids = np.stack(image_attrs), np.array(image_pids)
            scores = []
            for pid, cs in zip(image_pids, mentions, strict=True):
                for c in cs:
                    ok = np.all((attrs_arr == c) | (c < 0), axis=1)
                    scores.append((ok & (pids == pid)).sum() / ok.sum())
            oracle[split] = round(100.0 * float(np.mean(scores)), 2)
    return oracle


def attribute_vocabulary(name: str) -> dict[str, Sequence[str]]:
    """The canonical attribute words of a synthetic set (for spot checks and documentation)."""
    if name == "synth":
        return {
            "colour": [c[0] for c in COLOURS],
            "kind": [k[0] for k in KINDS],
            "size": [s[0] for s in SIZES],
            "position": [q[0] for q in POSITIONS],
            "background": [b[0] for b in BACKGROUNDS],
        }
    return {
        "top": [t[0] for t in REID_TOP],
        "bottom_colour": [b[0] for b in REID_BOTTOM],
        "bottom_kind": [k[0] for k in REID_BOTTOM_KIND],
        "shoes": [s[0] for s in REID_SHOES],
        "hat": [h[0] for h in REID_HAT],
        "bag": [b[0] for b in REID_BAG],
    }
