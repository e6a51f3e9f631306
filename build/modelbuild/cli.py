"""Thin command line: parse, log what was asked, call one function, print errors as one clear line."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from modelbuild.convert import SHARD_MB
from modelbuild.errors import BuildError
from modelbuild.quantization import PRESETS

DEFAULT_PRESETS = ("q4f32_1", "q4f16_1")
REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelbuild", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("runtime", help="compile TVM's web runtime once into the cache (part of `make setup`)")
    build = commands.add_parser("build", help="build a model's artifacts into models/ (`make build-model`)")
    build.add_argument("--model", type=Path, help="a .gguf file or a Hugging Face folder (default: SmolLM2-135M-Instruct)")
    build.add_argument("--quant", default=",".join(DEFAULT_PRESETS),
                       help=f"comma-separated presets, from {', '.join(PRESETS)} (default: %(default)s)")
    build.add_argument("--out", type=Path, default=REPO / "models", help="artifact folder (default: models/)")
    build.add_argument("--wasm-opt", default="-O3", choices=["-O1", "-O2", "-O3"],
                       help="emcc optimisation of the .wasm link: -O3 is smaller, -O1 links in a second")
    build.add_argument("--shard-mb", type=float, default=SHARD_MB,
                       help="largest weight shard in MiB (default: %(default)s, as MLC); a download resumes per shard")
    quality = commands.add_parser("quality", help="perplexity of every built model on a fixed text")
    quality.add_argument("--models", type=Path, default=REPO / "models")
    quality.add_argument("--max-tokens", type=int, default=1024)
    args = parser.parse_args(argv)
    try:
        if args.command == "runtime":
            from modelbuild.toolchain import web_runtime
            web_runtime.ensure_built()
        elif args.command == "build":
            from modelbuild import pipeline, source
            options = pipeline.BuildOptions(model=args.model or source.default_model_path(),
                                            presets=[p.strip() for p in args.quant.split(",") if p.strip()],
                                            out_dir=args.out, wasm_opt=args.wasm_opt, shard_mb=args.shard_mb)
            print(f"[build] model={options.model} presets={','.join(options.presets)} out={options.out_dir} "
                  f"wasm-opt={options.wasm_opt} shard-mb={options.shard_mb:g}")
            pipeline.build(options)
        elif args.command == "quality":
            from modelbuild import quality as quality_report
            quality_report.report(args.models, args.max_tokens)
    except BuildError as error:
        print(f"error: {error.problem}\n  fix: {error.fix}", file=sys.stderr)
        return 1
    return 0
