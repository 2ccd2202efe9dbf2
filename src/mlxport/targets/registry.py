"""One registry class for every target: MLX primitive name -> translation function.

Each target (``targets/onnx``, ``targets/torch``) makes one :class:`Registry` and
registers its translations with the registry's decorator, one function per
primitive, keyed by the primitive's exact MLX name:

    onnx_op = ONNX.register

    @onnx_op("Subtract")
    def convert_subtract(ctx: ConvertContext, node: Node) -> list[str]:
        \"\"\"Subtract(a, b) -> ONNX Sub.\"\"\"

A translation may have variants per target version (``since=`` an ONNX opset);
lookup picks the highest ``since`` at or below the version asked for. The
registry imports the target's family modules itself the first time it is read,
so the registrations are all there whoever asks first.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

Translation = Callable[[Any, Any], list[Any]]


@dataclass(frozen=True)
class Registration:
    """One translation of one primitive, from target version ``since`` on."""

    primitive: str
    since: int
    func: Translation
    family: str

    @property
    def doc(self) -> str:
        """The first line of the translation's docstring (the support table's text)."""
        return (inspect.getdoc(self.func) or "").splitlines()[0] if self.func.__doc__ else ""


class Registry:
    """The translations of one target, by MLX primitive name.

    Args:
        target: the target's name in messages ("ONNX", "torch").
        package: the package holding the family modules (``mlxport.targets.onnx``).
        families: the family module names to import before the registry is read.
        version_name: what ``since`` counts ("opset"), or None for a target without versions.
        note: what the "unsupported primitives" error says about the target when it has no versions.
        alternative: the error's advice before the pointer to the support table ("Export to .onnx instead.").
    """

    def __init__(self, target: str, package: str, families: Sequence[str], version_name: str | None = None, *,
                 note: str = "", alternative: str = "") -> None:
        self.target = target
        self.package = package
        self.families = tuple(families)
        self.version_name = version_name
        self.note = note
        self.alternative = alternative
        self._entries: dict[str, list[Registration]] = {}
        self._loaded = False

    def register(self, *primitives: str, since: int = 1) -> Callable[[Translation], Translation]:
        """Decorator: register ``func`` for each MLX primitive name (exact spelling).

        Args:
            primitives: MLX primitive names as the export callback yields them.
            since: the first target version (ONNX opset) this variant applies to.

        Raises:
            RuntimeError: at import, when a primitive already has a translation for ``since``.
        """
        if since != 1 and self.version_name is None:
            raise TypeError(f"the {self.target} target has no versions; since={since} means nothing to it")

        def register(func: Translation) -> Translation:
            family = func.__module__.rsplit(".", 1)[-1]
            for name in primitives:
                entries = self._entries.setdefault(name, [])
                if any(e.since == since for e in entries):
                    variant = f" (since {self.version_name} {since})" if self.version_name else ""
                    raise RuntimeError(f"{self.target} translation for '{name}'{variant} is registered twice: "
                                       f"{func.__module__}.{func.__name__}")
                entries.append(Registration(name, since, func, family))
                entries.sort(key=lambda e: e.since)
            return func

        return register

    def describe(self, version: int | None) -> str:
        """The target and its version as messages name them ("(target opset 17)")."""
        if self.version_name is not None and version is not None:
            return f"(target {self.version_name} {version})"
        return self.note

    def load(self) -> None:
        """Import every family module of the target so its registrations run (once)."""
        if self._loaded:
            return
        for family in self.families:
            importlib.import_module(f"{self.package}.{family}")
        self._loaded = True

    def lookup(self, primitive: str, version: int | None = None) -> Registration | None:
        """The registration with the highest ``since`` that is <= ``version`` (the newest when None)."""
        self.load()
        best = None
        for entry in self._entries.get(primitive, []):
            if version is None or entry.since <= version:
                best = entry
        return best

    def supports(self, primitive: str, version: int | None = None) -> bool:
        """Whether ``primitive`` has a translation at ``version``."""
        return self.lookup(primitive, version) is not None

    def registrations(self) -> dict[str, list[Registration]]:
        """Every primitive's registrations, sorted by name, each list by ``since`` (the support table)."""
        self.load()
        return {k: list(v) for k, v in sorted(self._entries.items())}

    def __iter__(self) -> Iterator[str]:
        self.load()
        return iter(sorted(self._entries))

    def __contains__(self, primitive: object) -> bool:
        self.load()
        return primitive in self._entries
