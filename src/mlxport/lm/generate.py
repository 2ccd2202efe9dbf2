"""Generate text from an exported LM folder: ONNX Runtime GenAI when installed, else a decode loop on ONNX Runtime.

Both backends run the same ``model.onnx``; sampling options, stop strings and streaming behave the same.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ArtifactError

BACKENDS = ("auto", "genai", "onnxruntime")


@dataclass
class GenerationConfig:
    """Sampling options (temperature 0 is greedy)."""

    max_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    stop: Sequence[str] = ()
    seed: int | None = None

    def check(self) -> None:
        """Raise ValueError naming the bad option."""
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1; got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0; got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1]; got {self.top_p}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0; got {self.top_k}")


@dataclass
class Completion:
    """One finished generation."""

    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str  # "stop" (EOS or a stop string) or "length"
    backend: str


@dataclass
class Chunk:
    """A streamed piece: new text (may be empty while a stop string could still match) and the new token."""

    text: str
    token: int | None
    finish_reason: str | None = None


@dataclass
class _Tok:
    encode: Any
    decode: Any
    eos: set[int] = field(default_factory=set)


class LMRunner:
    """An exported LM folder (``mlxport export-lm``) ready to generate.

    Args:
        folder: the folder with model.onnx, genai_config.json and the tokenizer files.
        backend: "genai" (ONNX Runtime GenAI), "onnxruntime" (mlxport's loop) or "auto" (GenAI when installed).
        threads: intra-op threads of either backend (for GenAI, laid over genai_config.json's session
            options); None keeps the folder's setting or the runtime's default.
    """

    def __init__(self, folder: str | os.PathLike, *, backend: str = "auto", threads: int | None = None) -> None:
        self.folder = Path(folder)
        config_path = self.folder / "genai_config.json"
        if not config_path.exists() or not (self.folder / "model.onnx").exists():
            raise ArtifactError(f"{self.folder} is not an exported LM folder (needs model.onnx and genai_config.json)",
                                hint="Create one with `mlxport export-lm MLX_MODEL_FOLDER -o OUT`.")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got '{backend}'")
        self.config = json.loads(config_path.read_text())
        model = self.config["model"]
        self.context_length = int(model["context_length"])
        self._vocab_size = int(model.get("vocab_size") or 0)
        eos = model.get("eos_token_id")
        self.eos = set(eos if isinstance(eos, list) else [eos]) if eos is not None else set()
        self.lock = threading.Lock()  # one generation at a time per loaded model
        if backend == "auto":
            backend = "genai" if _has_genai() else "onnxruntime"
        self.backend = backend
        if backend == "genai":
            import onnxruntime_genai as og

            self._og = og
            genai_config = og.Config(str(self.folder))
            if threads:
                genai_config.overlay(json.dumps(
                    {"model": {"decoder": {"session_options": {"intra_op_num_threads": int(threads)}}}}))
            self._model = og.Model(genai_config)
            self._og_tokenizer = og.Tokenizer(self._model)
        else:
            from ..runners import OnnxRunner

            self._runner = OnnxRunner(self.folder / "model.onnx", threads=threads)
            dec = model["decoder"]
            self._layers = int(dec["num_hidden_layers"])
            self._kv_heads = int(dec["num_key_value_heads"])
            self._head = int(dec["head_size"])
            past = next(i for i in self._runner.inputs if i.name.startswith("past_key_values"))
            self._cache_dtype = np.float16 if past.dtype == "float16" else np.float32
        self._tok = self._load_tokenizer()
        self.chat_template = self._read_chat_template()

    # ---- tokenizer ----
    def _load_tokenizer(self) -> _Tok:
        path = self.folder / "tokenizer.json"
        # The same text for the same tokens on both backends: Hugging Face tokenizers reads tokenizer.json
        # for both. GenAI's own decode stops at the first invalid UTF-8 sequence and drops all later text.
        if self.backend == "genai" and not (path.exists() and _has_module("tokenizers")):
            tok = self._og_tokenizer
            return _Tok(lambda text: [int(t) for t in tok.encode(text)],
                        lambda ids: tok.decode(np.asarray(ids, dtype=np.int32)), self.eos)
        if not path.exists():
            raise ArtifactError(f"{self.folder} has no tokenizer.json", hint="Export again with the model's tokenizer.")
        from tokenizers import Tokenizer

        tok = Tokenizer.from_file(str(path))
        return _Tok(lambda text: tok.encode(text, add_special_tokens=True).ids,
                    lambda ids: tok.decode(list(ids), skip_special_tokens=True), self.eos)

    def _read_chat_template(self) -> str | None:
        cfg = self.folder / "tokenizer_config.json"
        if cfg.exists():
            template = json.loads(cfg.read_text()).get("chat_template")
            if isinstance(template, str):
                return template
        jinja = self.folder / "chat_template.jinja"
        return jinja.read_text() if jinja.exists() else None

    def encode(self, text: str) -> list[int]:
        """Token ids of a prompt."""
        return self._tok.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of token ids (special tokens dropped)."""
        return self._tok.decode(ids)

    def apply_chat_template(self, messages: list[dict[str, Any]]) -> str:
        """The prompt for chat messages, from the tokenizer's chat template (a plain fallback without one)."""
        if not self.chat_template:
            lines = [f"{m['role']}: {m['content']}" for m in messages]
            return "\n".join(lines) + "\nassistant:"
        import jinja2

        cfg_path = self.folder / "tokenizer_config.json"
        cfg = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        return env.from_string(self.chat_template).render(
            messages=messages, add_generation_prompt=True, bos_token=_token_text(cfg.get("bos_token")),
            eos_token=_token_text(cfg.get("eos_token")))

    # ---- generation ----
    def generate(self, prompt: str | Sequence[int], config: GenerationConfig | None = None) -> Completion:
        """Generate until EOS, a stop string or max_tokens."""
        config = config or GenerationConfig()
        tokens: list[int] = []
        text, reason = "", "length"
        ids = self._prompt_ids(prompt)
        for chunk in self.stream(ids, config):
            text += chunk.text
            if chunk.token is not None:
                tokens.append(chunk.token)
            if chunk.finish_reason:
                reason = chunk.finish_reason
        return Completion(text, tokens, len(ids), reason, self.backend)

    def stream(self, prompt: str | Sequence[int], config: GenerationConfig | None = None) -> Iterator[Chunk]:
        """Yield text as it is generated; the last chunk carries the finish reason.

        Bad options and a prompt too long for the context raise ValueError when the first chunk is asked for.
        """
        config = config or GenerationConfig()
        config.check()
        ids = self._prompt_ids(prompt)
        if len(ids) + config.max_tokens > self.context_length:
            raise ValueError(f"prompt ({len(ids)} tokens) + max_tokens ({config.max_tokens}) exceeds the context "
                             f"length {self.context_length}; shorten the prompt or ask for fewer tokens")
        yield from self._stream(ids, config)

    def _stream(self, ids: list[int], config: GenerationConfig) -> Iterator[Chunk]:
        stops = [s for s in config.stop if s]
        produced: list[int] = []
        sent = ""
        steps = self._steps_genai(ids, config) if self.backend == "genai" else self._steps_ort(ids, config)
        with self.lock:
            for token in steps:
                if token in self.eos:
                    yield Chunk(_safe_tail(self.decode(produced), sent), None, "stop")
                    return
                produced.append(token)
                text = self.decode(produced)
                found = [i for i in (text.find(s) for s in stops) if i >= 0]
                if found:
                    cut = min(found)
                    yield Chunk(text[len(sent):cut] if cut > len(sent) else "", token, "stop")
                    return
                # Hold back a tail that may still grow into a stop string, and half-decoded characters.
                hold = max((_overlap(text, s) for s in stops), default=0)
                ready = text[:len(text) - hold] if hold else text
                if ready.endswith("\ufffd"):
                    ready = ready.rstrip("\ufffd")
                delta = ready[len(sent):] if ready.startswith(sent) else ""
                sent += delta
                last = len(produced) >= config.max_tokens
                if last:
                    delta += _safe_tail(text, sent)
                yield Chunk(delta, token, "length" if last else None)
                if last:
                    return
            # The backend stopped on its own (GenAI at its max_length): flush what was held back.
            yield Chunk(_safe_tail(self.decode(produced), sent), None, "length")

    def _prompt_ids(self, prompt: str | Sequence[int]) -> list[int]:
        ids = self.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not ids:
            raise ValueError("the prompt is empty: give some text or token ids")
        return ids

    def _steps_genai(self, ids: list[int], config: GenerationConfig) -> Iterator[int]:
        og = self._og
        params = og.GeneratorParams(self._model)
        options: dict[str, Any] = {"max_length": len(ids) + config.max_tokens}
        if config.temperature > 0:
            # GenAI's top_k 0 samples from the whole vocabulary but also skips top-p: "no top-k" is top_k = vocab.
            options.update(do_sample=True, temperature=config.temperature, top_p=config.top_p,
                           top_k=config.top_k or self._vocab_size)
            if config.seed is not None:
                options["random_seed"] = int(config.seed)
        else:
            options.update(do_sample=False, top_k=1)
        params.set_search_options(**options)
        generator = og.Generator(self._model, params)
        generator.append_tokens(np.array([ids], dtype=np.int32))
        while not generator.is_done():
            generator.generate_next_token()
            yield int(generator.get_next_tokens()[0])

    def _steps_ort(self, ids: list[int], config: GenerationConfig) -> Iterator[int]:
        rng = np.random.default_rng(config.seed)
        empty = np.zeros((1, self._kv_heads, 0, self._head), self._cache_dtype)
        past = [empty] * (2 * self._layers)
        step = np.array([ids], dtype=np.int64)
        for _ in range(config.max_tokens):
            total = past[0].shape[2] + step.shape[1]
            outs = self._runner(step, np.ones((1, total), np.int64), *past)
            token = sample(outs[0][0, -1], config, rng)
            yield token
            step = np.array([[token]], dtype=np.int64)
            past = outs[1:]


def sample(logits: np.ndarray, config: GenerationConfig, rng: np.random.Generator) -> int:
    """Greedy at temperature 0; else temperature, top-k and top-p (nucleus) sampling."""
    logits = logits.astype(np.float64)
    if config.temperature <= 0:
        return int(np.argmax(logits))
    logits = logits / config.temperature
    if config.top_k:
        kth = np.partition(logits, -config.top_k)[-config.top_k]
        logits = np.where(logits < kth, -np.inf, logits)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    if config.top_p < 1:
        order = np.argsort(-probs)
        cumulative = np.cumsum(probs[order])
        keep = order[: int(np.searchsorted(cumulative, config.top_p)) + 1]
        mask = np.zeros_like(probs)
        mask[keep] = probs[keep]
        probs = mask / mask.sum()
    return int(rng.choice(len(probs), p=probs))


def _overlap(text: str, stop: str) -> int:
    """Length of the longest end of ``text`` that begins ``stop``."""
    for n in range(min(len(stop) - 1, len(text)), 0, -1):
        if text.endswith(stop[:n]):
            return n
    return 0


def _safe_tail(text: str, sent: str) -> str:
    return text[len(sent):] if text.startswith(sent) else ""


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _has_genai() -> bool:
    return _has_module("onnxruntime_genai")


def _token_text(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("content", ""))
    return "" if value is None else str(value)


def _raise_template_error(message: str) -> None:
    raise ValueError(f"chat template: {message}")
