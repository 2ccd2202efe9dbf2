"""Checks shared by the LM tests: greedy tokens, prefill/decode steps against MLX, left padding in a batch."""

from __future__ import annotations

from typing import Any

import mlx.core as mx
import numpy as np

from mlxport.lm.generate import GenerationConfig
from mlxport.runners import OnnxRunner
from mlxport.validate import compare

from . import lmzoo

# float32 logits through two layers and a vocabulary projection: a different summation order in every matmul.
# Measured max abs differences ORT vs MLX 2e-6..5e-5 (gemma's scaled embedding is the largest; there MLX
# float32 is itself 3e-5 from a float64 run and ORT 1.6e-5), so 1e-4 both ways leaves a 2x margin.
RTOL, ATOL = 1e-4, 1e-4


def until_eos(tokens: list[int], eos: int = lmzoo.EOS) -> list[int]:
    """The tokens a runner reports: generation stops at EOS and does not return it."""
    return tokens[: tokens.index(eos)] if eos in tokens else tokens


def runner_greedy(runner: Any, prompt: list[int], count: int) -> list[int]:
    """Greedy token ids from an LMRunner (either backend)."""
    return runner.generate(prompt, GenerationConfig(max_tokens=count)).tokens


def assert_close(name: str, expected: np.ndarray, got: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    check = compare(name, np.asarray(expected), np.asarray(got), rtol, atol)
    assert check.ok, check.line()


def _past(spec: Any, batch: int, length: int = 0) -> list[np.ndarray]:
    dtype = np.float16 if spec.cache_dtype == "float16" else np.float32
    return [np.zeros((batch, spec.num_kv_heads, length, spec.head_dim), dtype) for _ in range(2 * spec.num_layers)]


def assert_steps_match_mlx(exported: Any, prompt: list[int]) -> None:
    """Prefill (past length 0) and then one decode step (seq 1) of the graph equal MLX's step function and
    mlx-lm's own forward pass with its KVCache, logits and presents."""
    from mlx_lm.models.cache import make_prompt_cache

    from mlxport.lm.step import make_step

    spec, model = exported.result.spec, exported.model
    step = make_step(model, spec)
    runner = OnnxRunner(exported.folder / "model.onnx")
    cache = make_prompt_cache(model)
    ids = np.array([prompt], np.int64)
    mask = np.ones((1, len(prompt)), np.int64)
    past = _past(spec, 1)
    for phase in ("prefill", "decode"):
        want = step(mx.array(ids), mx.array(mask), *[mx.array(p) for p in past])
        mx.eval(want)
        got = runner(ids, mask, *past)
        names = spec.output_names()
        assert [g.shape[2] for g in got[1:]] == [past[0].shape[2] + ids.shape[1]] * (len(names) - 1), phase
        for name, g in zip(names, got):
            assert_close(f"{phase} {name}", lmzoo.logits_np(want[name]), g)
        # mlx-lm itself: the model with its own cache, fed the same tokens.
        own = lmzoo.logits_np(model(mx.array(ids.astype(np.int32)), cache=cache))
        assert_close(f"{phase} logits vs mlx-lm's KVCache", own, got[0])
        token = int(np.argmax(got[0][0, -1]))
        ids = np.array([[token]], np.int64)
        past = [lmzoo.logits_np(want[n]) for n in names[1:]]
        mask = np.ones((1, past[0].shape[2] + 1), np.int64)


def assert_left_padding(exported: Any, long: list[int], short: list[int], pad: int = lmzoo.PAD) -> None:
    """A batch of two prompts, the shorter left-padded and masked, gives each row the logits it gets alone,
    at prefill and at one decode step after it."""
    spec = exported.result.spec
    runner = OnnxRunner(exported.folder / "model.onnx")
    width = len(long)
    rows = [long, [pad] * (width - len(short)) + short]
    masks = [[1] * width, [0] * (width - len(short)) + [1] * len(short)]
    batch = runner(np.array(rows, np.int64), np.array(masks, np.int64), *_past(spec, 2))
    alone = [runner(np.array([p], np.int64), np.ones((1, len(p)), np.int64), *_past(spec, 1))
             for p in (long, short)]
    nxt = []
    for r in range(2):
        # RoPE sees the padded row at shifted positions: the same relative positions, other rounding.
        assert_close(f"row {r} prefill logits", alone[r][0][0, -1], batch[0][r, -1], 1e-3, 1e-3)
        nxt.append(int(np.argmax(batch[0][r, -1])))
        assert nxt[r] == int(np.argmax(alone[r][0][0, -1])), f"row {r}: padding changed the next token"
    masks = [m + [1] for m in masks]
    step = runner(np.array([[t] for t in nxt], np.int64), np.array(masks, np.int64), *batch[1:])
    for r in range(2):
        one = runner(np.array([[nxt[r]]], np.int64), np.ones((1, len(rows[r]) - masks[r].count(0) + 1), np.int64),
                     *alone[r][1:])
        assert_close(f"row {r} decode logits", one[0][0, -1], step[0][r, -1], 1e-3, 1e-3)
        assert int(np.argmax(step[0][r, -1])) == int(np.argmax(one[0][0, -1])), f"row {r}: decode step differs"
