"""`models list|show|install|verify|activate|remove`: the model store from the shell."""

from __future__ import annotations

import json

from SegTuneCore.models import ModelStore, verify_model


def configure(parser) -> None:
    parser.add_argument("--store", help="store folder (default: $SEGTUNE_HOME/models or the platform cache)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="installed and bundled models")
    listing.add_argument("task", nargs="?")
    show = sub.add_parser("show", help="the full model.json of a model")
    show.add_argument("task")
    show.add_argument("version", nargs="?", help="default: the active (else bundled) model")
    install = sub.add_parser("install", help="verify a model folder and install it as a new version")
    install.add_argument("path")
    install.add_argument("--activate", action="store_true")
    verify = sub.add_parser("verify", help="check a model folder (files, header, checksum)")
    verify.add_argument("path")
    activate = sub.add_parser("activate", help="make an installed version the active one")
    activate.add_argument("task")
    activate.add_argument("version")
    remove = sub.add_parser("remove", help="delete an installed version")
    remove.add_argument("task")
    remove.add_argument("version")
    remove.add_argument("--force", action="store_true", help="also remove the active version")


def run(args) -> int:
    store = ModelStore(args.store)
    if args.action == "list":
        entries = [entry.summary() for entry in store.list(args.task)]
        if args.json:
            print(json.dumps(entries, indent=2))
        elif not entries:
            print("no models")
        for entry in [] if args.json else entries:
            flags = ("active " if entry["active"] else "") + ("bundled" if entry["bundled"] else "installed")
            print(f"{entry['task']:40s} {entry['version']:28s} {flags:16s} {entry['created'] or ''}")
        return 0
    if args.action == "show":
        print(json.dumps(store.resolve(args.task, args.version).meta, indent=2))
        return 0
    if args.action == "verify":
        meta = verify_model(args.path)
        print(json.dumps({"ok": True, "task": meta["task"], "sha256": meta["sha256"]}) if args.json
              else f"ok: {meta['task']} ({meta['architecture']['name']}), sha256 {meta['sha256'][:12]}…")
        return 0
    if args.action == "install":
        entry = store.install(args.path, activate=args.activate)
    elif args.action == "activate":
        entry = store.activate(args.task, args.version)
    else:
        store.remove(args.task, args.version, force=args.force)
        print(f"removed {args.task} {args.version}")
        return 0
    print(json.dumps(entry.summary()) if args.json else
          f"{entry.task} {entry.version}{' (active)' if entry.active else ''}: {entry.path}")
    return 0
