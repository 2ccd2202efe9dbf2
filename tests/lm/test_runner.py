"""LMRunner, the generation API, on both backends (ONNX Runtime GenAI and mlxport's ONNX Runtime loop).

Sampled tokens are checked against the logits of the exported graph itself: every token drawn with top-k lies in
that step's k most likely tokens, every token drawn with top-p in that step's nucleus.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mlxport.errors import ArtifactError
from mlxport.lm.generate import GenerationConfig, LMRunner
from mlxport.runners import OnnxRunner

from . import checks, lmzoo
from .conftest import Exported, LMZoo

BACKENDS = ("genai", "onnxruntime")
TEXT = "Beautiful is better than"


@pytest.fixture(params=BACKENDS)
def runner(request: pytest.FixtureRequest, lm_zoo: LMZoo, llama: Exported) -> LMRunner:
    return lm_zoo.runner(llama.folder, request.param)


def _step_logits(folder: Path, ids: list[int]) -> np.ndarray:
    """Logits at every position of ``ids`` from the exported graph, one prefill from an empty cache."""
    onnx = OnnxRunner(folder / "model.onnx")
    spec = json.loads((folder / "genai_config.json").read_text())["model"]["decoder"]
    empty = np.zeros((1, spec["num_key_value_heads"], 0, spec["head_size"]), np.float32)
    outs = onnx(np.array([ids], np.int64), np.ones((1, len(ids)), np.int64),
                *[empty] * (2 * spec["num_hidden_layers"]))
    return outs[0][0].astype(np.float64)


def _drawn(runner: LMRunner, prompt: list[int], config: GenerationConfig) -> tuple[list[int], np.ndarray]:
    """Sampled tokens and, for each, the logits of the step that drew it."""
    tokens = runner.generate(prompt, config).tokens
    logits = _step_logits(runner.folder, prompt + tokens)
    return tokens, logits[len(prompt) - 1: len(prompt) - 1 + len(tokens)]


def test_greedy_text_and_ids(runner: LMRunner, llama: Exported) -> None:
    ids = runner.encode(TEXT)
    by_text = runner.generate(TEXT, GenerationConfig(max_tokens=12))
    by_ids = runner.generate(ids, GenerationConfig(max_tokens=12))
    assert by_text.tokens == by_ids.tokens == checks.until_eos(lmzoo.mlx_greedy(llama.model, ids, 12))
    assert by_text.text == runner.decode(by_text.tokens)
    assert by_text.prompt_tokens == len(ids) and by_text.backend == runner.backend


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_are_set_where_the_model_runs(backend: str, llama: Exported) -> None:
    """The folder pins no thread count; LMRunner(threads=) sets it for either backend (GenAI: over its config)."""
    config = json.loads((llama.folder / "genai_config.json").read_text())
    assert "intra_op_num_threads" not in config["model"]["decoder"]["session_options"]
    runner = LMRunner(llama.folder, backend=backend, threads=1)
    ids = runner.encode(TEXT)
    done = runner.generate(ids, GenerationConfig(max_tokens=8))
    assert done.tokens == checks.until_eos(lmzoo.mlx_greedy(llama.model, ids, 8))
    # The overlay is the running process's: the folder on disk is unchanged.
    assert json.loads((llama.folder / "genai_config.json").read_text()) == config


def test_encode_matches_source_tokenizer(runner: LMRunner, llama: Exported) -> None:
    from transformers import AutoTokenizer

    source = AutoTokenizer.from_pretrained(str(llama.source))
    text = runner.apply_chat_template([{"role": "user", "content": TEXT}])
    assert runner.encode(text) == source.encode(text)
    assert runner.encode(text)[0] == lmzoo.BOS  # "<s>" in the template is the special token


def test_sampling_is_reproducible_with_a_seed(runner: LMRunner) -> None:
    def draw(seed: int) -> list[int]:
        return runner.generate(lmzoo.PROMPT, GenerationConfig(max_tokens=12, temperature=1.0, seed=seed)).tokens

    first = draw(1)
    assert draw(1) == first
    # At temperature 1 over 320 tokens (logit std ~1) three seeds giving one sequence would mean no sampling.
    assert len({tuple(first), tuple(draw(2)), tuple(draw(3))}) > 1


def test_top_k(runner: LMRunner) -> None:
    greedy = runner.generate(lmzoo.PROMPT, GenerationConfig(max_tokens=10)).tokens
    one = GenerationConfig(max_tokens=10, temperature=1.5, top_k=1, seed=0)
    assert runner.generate(lmzoo.PROMPT, one).tokens == greedy
    tokens, logits = _drawn(runner, lmzoo.PROMPT, GenerationConfig(max_tokens=12, temperature=1.5, top_k=5, seed=0))
    for i, (token, row) in enumerate(zip(tokens, logits)):
        assert token in np.argsort(-row)[:5], f"step {i}: token {token} is not among the 5 most likely"
    assert tokens != greedy  # sampling among 5 at temperature 1.5 did leave the greedy path


def test_top_p(runner: LMRunner) -> None:
    greedy = runner.generate(lmzoo.PROMPT, GenerationConfig(max_tokens=10)).tokens
    tiny = GenerationConfig(max_tokens=10, temperature=1.0, top_p=1e-6, seed=0)
    assert runner.generate(lmzoo.PROMPT, tiny).tokens == greedy
    p = 0.5
    tokens, logits = _drawn(runner, lmzoo.PROMPT, GenerationConfig(max_tokens=12, temperature=1.0, top_p=p, seed=4))
    for i, (token, row) in enumerate(zip(tokens, logits)):
        probs = np.exp(row - row.max())
        probs /= probs.sum()
        order = np.argsort(-probs)
        nucleus = order[: int(np.searchsorted(np.cumsum(probs[order]), p)) + 1]
        assert token in nucleus, f"step {i}: token {token} is outside the top-p {p} nucleus {nucleus.tolist()}"


def test_max_tokens_is_length(runner: LMRunner) -> None:
    out = runner.generate(lmzoo.PROMPT, GenerationConfig(max_tokens=5))
    assert len(out.tokens) == 5 and out.finish_reason == "length"


def _ascii_window(text: str, start: int) -> str:
    """A 2-character printable ASCII piece of ``text`` at or after ``start`` (the random model emits bytes too)."""
    for i in range(start, len(text) - 1):
        piece = text[i:i + 2]
        if piece.isascii() and piece.isprintable() and piece.strip() == piece:
            return piece
    raise AssertionError(f"no printable ASCII in {text!r}")


def test_stop_strings(runner: LMRunner) -> None:
    full = runner.generate(TEXT, GenerationConfig(max_tokens=16))
    stop = _ascii_window(full.text, 3)
    cut = full.text.find(stop)
    out = runner.generate(TEXT, GenerationConfig(max_tokens=16, stop=[stop]))
    assert out.text == full.text[:cut] and out.finish_reason == "stop", (full.text, stop)
    assert len(out.tokens) < len(full.tokens)
    # Of several stop strings the earliest in the text wins; one that never appears changes nothing.
    later = full.text[cut + 1: cut + 3]
    assert runner.generate(TEXT, GenerationConfig(max_tokens=16, stop=["\x00never", later, stop])).text == out.text
    never = runner.generate(TEXT, GenerationConfig(max_tokens=16, stop=["\x00never"]))
    assert (never.text, never.finish_reason) == (full.text, full.finish_reason)


def test_eos_stops(lm_zoo: LMZoo, llama: Exported, tmp_path: Path) -> None:
    """With the 4th greedy token declared EOS, generation stops before it, on both backends."""
    greedy = lmzoo.mlx_greedy(llama.model, lmzoo.PROMPT, 8)
    folder = tmp_path / "eos"
    shutil.copytree(llama.folder, folder)
    config = json.loads((folder / "genai_config.json").read_text())
    config["model"]["eos_token_id"] = greedy[3]
    (folder / "genai_config.json").write_text(json.dumps(config))
    expected = greedy[: greedy.index(greedy[3])]
    for backend in BACKENDS:
        out = LMRunner(folder, backend=backend).generate(lmzoo.PROMPT, GenerationConfig(max_tokens=8))
        assert (out.tokens, out.finish_reason) == (expected, "stop"), backend


@pytest.mark.parametrize("stop", [[], ["x"]])
def test_stream_concatenates_to_generate(runner: LMRunner, stop: list[str]) -> None:
    config = GenerationConfig(max_tokens=16, stop=stop)
    whole = runner.generate(TEXT, config)
    chunks = list(runner.stream(TEXT, config))
    assert "".join(c.text for c in chunks) == whole.text
    assert [c.token for c in chunks if c.token is not None] == whole.tokens
    assert chunks[-1].finish_reason == whole.finish_reason and all(c.finish_reason is None for c in chunks[:-1])
    assert len(chunks) >= len(whole.tokens) > 1  # streamed token by token, not in one piece


def test_chat_template(runner: LMRunner, llama: Exported) -> None:
    from transformers import AutoTokenizer

    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": TEXT}]
    expected = AutoTokenizer.from_pretrained(str(llama.source)).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True)
    assert runner.apply_chat_template(messages) == expected
    assert expected.endswith("assistant:")


def test_chat_without_template_falls_back(llama: Exported, tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    shutil.copytree(llama.folder, folder)
    (folder / "chat_template.jinja").unlink()
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    runner = LMRunner(folder, backend="onnxruntime")
    assert runner.apply_chat_template([{"role": "user", "content": "hi"}]) == "user: hi\nassistant:"


@pytest.mark.parametrize("option,value", [("max_tokens", 0), ("temperature", -0.5), ("top_p", 0.0),
                                          ("top_p", 1.5), ("top_k", -1)])
def test_bad_options_name_the_option(runner: LMRunner, option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        runner.generate(TEXT, GenerationConfig(**{option: value}))
    with pytest.raises(ValueError, match=option):
        next(runner.stream(TEXT, GenerationConfig(**{option: value})))  # before any token is generated


def test_prompt_beyond_context_is_refused(runner: LMRunner) -> None:
    prompt = [5] * (lmzoo.CONTEXT - 10)
    with pytest.raises(ValueError, match=r"exceeds the context length 256"):
        runner.generate(prompt, GenerationConfig(max_tokens=11))
    assert len(runner.generate(prompt, GenerationConfig(max_tokens=10)).tokens) <= 10  # exactly fits
    with pytest.raises(ValueError, match="prompt is empty"):
        runner.generate("", GenerationConfig())


def test_bad_folder_and_backend(llama: Exported, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not an exported LM folder"):
        LMRunner(tmp_path)
    with pytest.raises(ValueError, match="backend must be one of"):
        LMRunner(llama.folder, backend="torch")


def test_auto_backend_prefers_genai(llama: Exported) -> None:
    assert LMRunner(llama.folder).backend == "genai"  # onnxruntime-genai is installed in the test environment
