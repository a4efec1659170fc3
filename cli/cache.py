"""`chipletc cache info|clear`: the cache of lowered models (``compiler.cache``)."""

from __future__ import annotations

import argparse

from chipletc.compiler.cache import cache_info, clear_cache


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "action",
        choices=("info", "clear"),
        help="info: where the cache is and what it holds; clear: remove every entry",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.action == "clear":
        removed = clear_cache()
        print(f"removed {removed} lowered model(s) from {cache_info().directory}")
        return 0
    info = cache_info()
    print(f"directory  {info.directory}  (set CHIPLETC_CACHE to move it)")
    print(f"entries    {info.entries} lowered model(s), {info.total_bytes / 2**20:.1f} MiB")
    return 0
