"""`chipletc targets`: list the hardware target presets and technology nodes."""

from __future__ import annotations

import argparse
import json

from chipletc.backends.targets import DEFAULT_TARGET, list_targets, list_techs, load_target


def register(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    rows = []
    for name in list_targets():
        t = load_target(name)
        rows.append({
            "name": name,
            "default": name == DEFAULT_TARGET,
            "tech": t.tech.name,
            "ownership": "rented" if t.economics.rented else "owned",
            "chips_per_server": t.chips_per_server,
            "weights_in": t.weights_in,
            "memory_per_server_GB": t.memory_capacity_bytes * t.chips_per_server / 1e9,
            "max_servers": t.max_servers,
            "description": " ".join(t.description.split()),
        })
    if args.json:
        print(json.dumps({"targets": rows, "techs": list_techs()}, indent=2))
        return 0
    print(f"{'target':<16}{'tech':<9}{'owned?':<8}{'chips/srv':>10}{'mem/srv':>12}  description")
    for r in rows:
        mark = " *" if r["default"] else ""
        mem = f"{r['memory_per_server_GB']:.0f} GB {r['weights_in'].upper()}"
        print(f"{r['name'] + mark:<16}{r['tech']:<9}{r['ownership']:<8}"
              f"{r['chips_per_server']:>10}{mem:>12}  {r['description']}")
    print(f"\n* default target. Technology nodes: {', '.join(list_techs())}.")
    print("Use a preset name or a YAML file (which may say `base: <preset>`) as TARGET.")
    return 0
