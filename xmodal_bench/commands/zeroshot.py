"""`xmodal-bench zeroshot --data D [--scale S] [--model NAME] [--pretrained TAG|PATH]`: no training.

Evaluates a pretrained open_clip model as it is (method `zeroshot`: the cosine of its projected
embeddings) on every protocol, with the same results record as `bench` and a leaderboard row of
its own. `--model` and `--pretrained` default to the scale's backbone (xmb-tiny + synthclip at
`tiny`, ViT-B-16 + openai at `base`); `--pretrained` takes an open_clip tag (its weights must be
in the local cache: nothing is downloaded here), a local `.pt` / `.bin` / `.safetensors` file, or
`none` (random weights).
"""

from __future__ import annotations

import argparse

from xmodal_bench.commands.bench import add_run_arguments, request_from_args
from xmodal_bench.commands.bench import run as run_bench


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser, method=None)
    parser.set_defaults(method="zeroshot", resume=False, no_leaderboard=False)
    parser.add_argument("--model", default=None, help="open_clip model name (default: the scale's)")
    parser.add_argument("--pretrained", default=None, help="open_clip tag, weights file, synthclip or none")


def run(args: argparse.Namespace) -> int:
    extra = [f"backbone.model={args.model}"] if args.model else []
    extra += [f"backbone.pretrained={args.pretrained}"] if args.pretrained is not None else []
    args.overrides = [*extra, *args.overrides]
    return run_bench(args)


__all__ = ["add_arguments", "request_from_args", "run"]
