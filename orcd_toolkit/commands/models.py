"""``orcd models list|pull|path``: the local model store."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "list and pull models in the local store ($ORCD_HOME)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    ls = sub.add_parser("list", help="registry models and whether each is pulled")
    ls.add_argument("--json", action="store_true", help="one JSON document")
    pull = sub.add_parser("pull", help="download, assemble and verify a model")
    pull.add_argument("name", help="registry name or alias")
    pull.add_argument("--force", action="store_true", help="re-download even a verified copy")
    pull.add_argument("--verify", action="store_true", help="re-hash the cached copy")
    path = sub.add_parser("path", help="print the local path of a model (pulling it if needed)")
    path.add_argument("name")


def run(args: argparse.Namespace) -> int:
    from orcd_toolkit.store import ModelStore

    store = ModelStore(progress=lambda msg: print(msg, file=sys.stderr))
    if args.models_command == "list":
        rows = []
        for m in store.registry.models:
            rows.append(
                {
                    "name": m.name,
                    "aliases": list(m.aliases),
                    "arch": m.arch,
                    "size": m.size,
                    "sha256": m.sha256,
                    "parts": len(m.parts),
                    "pulled": store.is_verified(m),
                    "path": str(store.model_path(m)),
                    "default": m.name == store.registry.default,
                    "description": m.description,
                }
            )
        if args.json:
            print(json.dumps({"home": str(store.root), "models": rows}, indent=2))
            return 0
        print(f"store: {store.root}")
        for r in rows:
            mark = "pulled" if r["pulled"] else "-"
            default = " (default)" if r["default"] else ""
            print(
                f"  {r['name']:<38} {r['arch']:<6} {r['size'] / 2**20:8.1f} MiB  "
                f"{r['parts']:>2} part(s)  {mark}{default}"
            )
        return 0
    if args.models_command == "pull":
        result = store.pull(args.name, force=args.force, verify=args.verify)
        state = "fetched and verified" if result.fetched else "already present, verified"
        print(f"{result.path} ({state})")
        return 0
    print(store.resolve(args.name))
    return 0
