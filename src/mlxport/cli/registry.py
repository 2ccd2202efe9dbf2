"""``mlxport registry``: numbered model versions and aliases in a local repository or the MLflow Model Registry."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Sequence

from ..formats import suffix_list

ACTIONS = ("push", "list", "promote", "rollback", "show")


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the action (defaults are applied in main)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=["local", "mlflow"], default=argparse.SUPPRESS,
                        help="local: a folder of numbered versions that `mlxport serve` reads (default); mlflow: "
                             "the MLflow Model Registry (needs mlxport[mlflow])")
    common.add_argument("--repo", metavar="DIR", default=argparse.SUPPRESS,
                        help="the local repository (default $MLXPORT_REPO or ./mlxport-repo)")
    common.add_argument("--tracking-uri", metavar="URI", default=argparse.SUPPRESS,
                        help="the MLflow tracking server (default $MLFLOW_TRACKING_URI)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print JSON instead of text")
    return common


def configure_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="mlxport registry", parents=[common], description="Keep numbered versions of exported models, "
        "with lineage (source, MLX version, validation report, sha256 of every file) and aliases such as "
        "production. The local repository <repo>/<model>/<N>/ is what `mlxport serve <repo>` serves; pushes "
        "appear atomically. With --backend mlflow each version is an MLflow pyfunc model in the Model Registry "
        "(so `mlflow models serve -m models:/NAME@ALIAS` works too).")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    push = sub.add_parser("push", parents=[common], help="publish an artifact as the next version of a model",
                          description="Copy an artifact, its .mlxport.json metadata and companion files into the "
                                      "next version (checked against the sha256 in the metadata).")
    push.add_argument("artifact", metavar="ARTIFACT", help=f"an exported artifact: {suffix_list()}")
    push.add_argument("--name", required=True, help="the model name, e.g. digits")
    push.add_argument("--description", help="free text kept with the version")
    listing = sub.add_parser("list", parents=[common], help="versions of a model (or the models, without NAME)")
    listing.add_argument("name", nargs="?", metavar="NAME")
    promote = sub.add_parser("promote", parents=[common], help="point an alias at a version")
    promote.add_argument("name", metavar="NAME")
    promote.add_argument("version", metavar="VERSION")
    promote.add_argument("--alias", default="production", help="the alias to move (default production)")
    rollback = sub.add_parser("rollback", parents=[common], help="move an alias back to its previous version")
    rollback.add_argument("name", metavar="NAME")
    rollback.add_argument("--alias", default="production", help="the alias to move back (default production)")
    show = sub.add_parser("show", parents=[common], help="one version's lineage: NAME@ALIAS, NAME/VERSION or "
                                                          "NAME (newest); models:/... implies --backend mlflow")
    show.add_argument("spec", metavar="SPEC")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = configure_parser().parse_args(argv)
    from . import UsageError

    opts = vars(args)
    implied = "mlflow" if getattr(args, "spec", "").startswith("models:/") else None
    backend = opts.get("backend") or implied or "local"
    if backend == "local" and implied:
        raise UsageError(f"'{args.spec}' names an MLflow version, but --backend is local; drop --backend local "
                         "or give a local spec such as digits@production")
    if backend == "mlflow" and opts.get("repo"):
        raise UsageError("--repo names a local repository, but --backend is mlflow; use --tracking-uri with mlflow, "
                         "or drop --backend mlflow")
    if backend == "local" and opts.get("tracking_uri"):
        raise UsageError("--tracking-uri applies to MLflow, but --backend is local; add --backend mlflow or drop "
                         "--tracking-uri")
    if backend == "mlflow":
        # MLflow draws progress bars on every download; the CLI prints its own summary.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    from ..registry import open_registry

    registry = open_registry(backend, repo=opts.get("repo"), tracking_uri=opts.get("tracking_uri"))
    as_json = bool(opts.get("json"))
    if args.action == "push":
        info = registry.push(args.artifact, args.name, description=args.description)
        _emit(as_json, info.to_dict(), f"pushed {args.artifact} as {info.name} version {info.version} "
                                       f"({_size(info.size)}, validation {info.verdict}) -> {info.location}")
    elif args.action == "list":
        if args.name is None:
            names = registry.models()
            _emit(as_json, names, "\n".join(names) if names else f"no models in {_where(registry)}")
        else:
            versions = registry.versions(args.name)
            _emit(as_json, [v.to_dict() for v in versions], format_versions(args.name, versions, _where(registry)))
    elif args.action in ("promote", "rollback"):
        if args.action == "promote":
            change = registry.promote(args.name, args.version, args.alias)
        else:
            change = registry.rollback(args.name, args.alias)
        _emit(as_json, vars(change), f"{args.action}: {change}")
    else:
        info = registry.show(args.spec)
        _emit(as_json, info.to_dict(), format_version(info))
    return 0


def _emit(as_json: bool, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2, default=str) if as_json else text)


def _where(registry: Any) -> str:
    return str(getattr(registry, "root", None) or getattr(registry, "uri", ""))


def _size(n: int) -> str:
    if n >= 10**9:
        return f"{n / 1e9:.2f} GB"
    if n >= 10**6:
        return f"{n / 1e6:.2f} MB"
    return f"{n / 1e3:.1f} kB"


def format_versions(name: str, versions: list[Any], where: str) -> str:
    """The ``list NAME`` table: version, aliases, size, validation verdict, when and by whom."""
    if not versions:
        return f"{name} ({where}): no versions"
    rows = [("VERSION", "ALIASES", "SIZE", "VALIDATION", "PUSHED")]
    for v in versions:
        pushed = f"{v.pushed_at or '?'} by {v.pushed_by}" if v.pushed_by else (v.pushed_at or "")
        rows.append((str(v.version), ",".join(v.aliases) or "-", _size(v.size), v.verdict, pushed))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"{name} ({where})"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def format_version(info: Any) -> str:
    """``show``: one version and its lineage."""
    lineage = info.lineage
    tags = lineage.get("tags", {})
    sha = (lineage.get("sha256") or {}).get(info.artifact) or tags.get("mlxport.sha256")
    fields = [
        ("version", f"{info.name} {info.version}" + (f" ({', '.join(info.aliases)})" if info.aliases else "")),
        ("location", info.location), ("artifact", info.artifact), ("size", _size(info.size)),
        ("validation", info.verdict), ("source", info.source),
        ("mlx version", lineage.get("mlx_version") or tags.get("mlxport.mlx_version")),
        ("sha256", sha), ("pushed", f"{info.pushed_at} by {info.pushed_by}" if info.pushed_at else None),
        ("parent", info.parent), ("description", lineage.get("description")),
    ]
    return "\n".join(f"{k + ':':13}{v}" for k, v in fields if v not in (None, ""))
