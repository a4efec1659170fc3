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
    # each text column as wide as its longest value, two spaces between columns
    names = [r["name"] + (" *" if r["default"] else "") for r in rows]
    mems = [f"{r['memory_per_server_GB']:.0f} GB {r['weights_in'].upper()}" for r in rows]
    w_name = max(map(len, [*names, "target"])) + 2
    w_tech = max(map(len, [*(r["tech"] for r in rows), "tech"])) + 2
    w_mem = max(map(len, [*mems, "mem/srv"])) + 2
    print(f"{'target':<{w_name}}{'tech':<{w_tech}}{'owned?':<8}{'chips/srv':>9}"
          f"{'mem/srv':>{w_mem}}  description")
    for r, name, mem in zip(rows, names, mems, strict=True):
        print(f"{name:<{w_name}}{r['tech']:<{w_tech}}{r['ownership']:<8}"
              f"{r['chips_per_server']:>9}{mem:>{w_mem}}  {r['description']}")
    print(f"\n* default target. Technology nodes: {', '.join(list_techs())}.")
    print("Use a preset name or a YAML file (which may say `base: <preset>`) as TARGET.")
    return 0
