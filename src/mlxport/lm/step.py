"""One decoder step of an mlx-lm model with its key/value cache as explicit arrays, ready to capture.

The step is the model's own MLX code: each layer's cache is an mlx-lm ``ConcatenateKVCache`` whose keys and
values are the ``past_key_values.N.*`` inputs, so the traced graph concatenates the new keys and values
onto them and returns the result as ``present.N.*``. The same graph serves prefill (past length 0) and
decode (one new token); batch, sequence and past lengths are dynamic axes that capture derives by tracing
at several sizes. ``attention_mask`` [batch, past + seq] (1 = attend, 0 = padding) is applied on top of
the causal mask by standing in for the architecture's ``create_attention_mask``.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import mlx.core as mx
import mlx.nn as nn

from ..errors import CaptureError


@dataclass
class LMSpec:
    """What a runtime needs to know about the decoder: layer count, cache layout, vocabulary."""

    model_type: str
    num_layers: int
    num_kv_heads: int
    head_dim: int
    num_heads: int
    hidden_size: int
    vocab_size: int
    cache_dtype: str
    context_length: int
    mask_rank: int = 4

    def input_names(self) -> list[str]:
        """``input_ids``, ``attention_mask``, then ``past_key_values.N.key/value`` per layer."""
        return ["input_ids", "attention_mask"] + [f"past_key_values.{i}.{kv}" for i in range(self.num_layers)
                                                  for kv in ("key", "value")]

    def output_names(self) -> list[str]:
        """``logits``, then ``present.N.key/value`` per layer."""
        return ["logits"] + [f"present.{i}.{kv}" for i in range(self.num_layers) for kv in ("key", "value")]

    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """batch and sequence on the token inputs, batch and past length on the cache inputs."""
        axes: dict[str, dict[int, str]] = {"input_ids": {0: "batch", 1: "sequence"},
                                           "attention_mask": {0: "batch", 1: "past_sequence+sequence"}}
        for name in self.input_names()[2:]:
            axes[name] = {0: "batch", 2: "past_sequence"}
        return axes


def _arg(args: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            return value
    return default


def lm_spec(model: nn.Module, config: dict[str, Any] | None = None) -> LMSpec:
    """Read the cache layout off the model by running one step with mlx-lm's caches (no guessing per architecture)."""
    from mlx_lm.models.cache import ConcatenateKVCache, KVCache, make_prompt_cache

    caches = make_prompt_cache(model)
    unsupported = sorted({type(c).__name__ for c in caches if type(c) not in (KVCache, ConcatenateKVCache)})
    if unsupported:
        raise CaptureError(
            f"{type(model).__module__} uses {', '.join(unsupported)} caches; export-lm supports models whose every "
            "layer has a plain key/value cache (KVCache): sliding-window, rotating and state-space caches are not "
            "exported yet. Export the full-sequence forward pass with `mlxport export` instead")
    probe = [ConcatenateKVCache() for _ in caches]
    logits = model(mx.array([[0, 1]]), cache=probe)
    mx.eval(logits, [c.keys for c in probe])
    keys = probe[0].keys
    if keys is None or keys.ndim != 4:
        raise CaptureError(f"expected the model to store keys as [batch, kv_heads, sequence, head_dim] in its cache; "
                           f"got {None if keys is None else keys.shape}")
    mask_rank = _mask_rank(model, len(probe), int(keys.shape[1]))
    args = getattr(model, "args", None)
    config = dict(config or {})
    context = config.get("max_position_embeddings") or _arg(args, "max_position_embeddings", "n_positions",
                                                            "n_ctx", default=4096)
    return LMSpec(
        model_type=str(config.get("model_type") or _arg(args, "model_type", default=type(model).__module__)),
        num_layers=len(probe), num_kv_heads=int(keys.shape[1]), head_dim=int(keys.shape[3]),
        num_heads=int(_arg(args, "num_attention_heads", "n_head", default=keys.shape[1])),
        hidden_size=int(_arg(args, "hidden_size", "n_embd", "dim", default=0)),
        vocab_size=int(logits.shape[-1]), cache_dtype=str(keys.dtype).removeprefix("mlx.core."),
        context_length=int(context), mask_rank=mask_rank)


def _mask_rank(model: nn.Module, layers: int, kv_heads: int) -> int:
    """4 for attention scores [batch, heads, query, key]; 5 for [batch, kv_heads, repeats, query, key].

    mlx-lm's own mask has no batch axis and broadcasts against either; the padding mask has one, so its rank
    must match the scores (gemma2 and phi3small group queries per KV head). At a batch size that is neither 1
    nor the KV head count, a mask of the wrong rank cannot broadcast, so a failed probe tells them apart.
    """
    from mlx_lm.models.cache import ConcatenateKVCache

    batch = kv_heads + 1
    failure: Exception | None = None
    for rank in (4, 5):
        caches = [ConcatenateKVCache() for _ in range(layers)]
        try:
            with _padding_mask(model, mx.ones((batch, 2), dtype=mx.int64), rank):
                mx.eval(model(mx.zeros((batch, 2), dtype=mx.int32), cache=caches))
            return rank
        except ValueError as exc:  # MLX raises ValueError for shapes that do not broadcast or reshape
            failure = failure or exc
    raise CaptureError(f"{type(model).__module__} does not accept an attention mask with a batch axis "
                       f"(tried [batch, 1, query, key] and [batch, 1, 1, query, key]): {failure}. export-lm needs it "
                       "for the attention_mask input; export the full-sequence forward pass with `mlxport export`")


def make_step(model: nn.Module, spec: LMSpec) -> Callable[..., dict[str, mx.array]]:
    """The function to capture: (input_ids, attention_mask, *past) -> {logits, present.N.key/value}."""
    from mlx_lm.models.cache import ConcatenateKVCache

    def step(input_ids: mx.array, attention_mask: mx.array, *past: mx.array) -> dict[str, mx.array]:
        caches = []
        for i in range(spec.num_layers):
            cache = ConcatenateKVCache()
            cache.keys, cache.values = past[2 * i], past[2 * i + 1]
            cache.offset = cache.keys.shape[-2]
            caches.append(cache)
        with _padding_mask(model, attention_mask, spec.mask_rank):
            logits = model(input_ids, cache=caches)
        out = {"logits": logits}
        for i, cache in enumerate(caches):
            out[f"present.{i}.key"], out[f"present.{i}.value"] = cache.keys, cache.values
        return out

    return step


def example_inputs(spec: LMSpec, batch: int = 1, seq: int = 4, past: int = 3) -> tuple[mx.array, ...]:
    """Random token ids, a full attention mask and random past keys/values at the given sizes."""
    dtype = getattr(mx, spec.cache_dtype)
    ids = mx.random.randint(0, spec.vocab_size, (batch, seq)).astype(mx.int64)
    mask = mx.ones((batch, past + seq), dtype=mx.int64)
    cache = [mx.random.normal((batch, spec.num_kv_heads, past, spec.head_dim)).astype(dtype)
             for _ in range(2 * spec.num_layers)]
    return (ids, mask, *cache)


@contextlib.contextmanager
def _padding_mask(model: nn.Module, attention_mask: mx.array, rank: int = 4) -> Iterator[None]:
    """Stand in for the architecture's create_attention_mask: causal (with the cache offset) and not padding."""
    module = sys.modules[type(model).__module__]
    original = getattr(module, "create_attention_mask", None)
    if original is None:
        raise CaptureError(f"{module.__name__} has no create_attention_mask to extend with the attention_mask input; "
                           "export-lm supports mlx-lm architectures that build their mask with it")

    def create_attention_mask(h: mx.array, cache: Any = None, window_size: int | None = None,
                              return_array: bool = False) -> mx.array:
        n = h.shape[1]
        offset = cache.offset if cache is not None else 0
        total = offset + n
        rows = mx.arange(offset, total)[:, None]
        cols = mx.arange(total)[None]
        allowed = rows >= cols
        if window_size is not None:
            allowed = allowed & (rows < cols + window_size)
        # A padded position still attends to itself: a row with nothing to attend to would give NaN keys and
        # values in the cache, and 0 * NaN poisons every later token that masks them out.
        keep = (attention_mask[:, None, None, :] != 0) | (rows == cols)[None, None]
        mask = allowed[None, None] & keep
        return mask[:, None] if rank == 5 else mask

    module.create_attention_mask = create_attention_mask
    try:
        yield
    finally:
        module.create_attention_mask = original
