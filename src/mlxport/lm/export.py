"""``export_lm``: an mlx-lm model -> an ONNX decoder with past + the folder ONNX Runtime GenAI runs.

The folder holds ``model.onnx`` (one graph for prefill and decode), ``genai_config.json``, the tokenizer
files and ``mlxport_lm.json`` (the spec, the validation report and the greedy-token check).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import mlx.core as mx
import mlx.nn as nn
import numpy as np

from ..errors import ArtifactError, CaptureError, ValidationError
from .step import LMSpec, example_inputs, lm_spec, make_step

PRECISIONS = ("source", "float32", "float16", "int4", "int8")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "generation_config.json", "chat_template.jinja")
META_FILE = "mlxport_lm.json"


@dataclass
class LMExport:
    """What ``export_lm`` wrote and measured."""

    folder: Path
    spec: LMSpec
    precision: str
    report: Any
    files: dict[str, int] = field(default_factory=dict)
    greedy_match: bool | None = None
    greedy_tokens: list[int] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Bytes written."""
        return sum(self.files.values())

    @property
    def model_bytes(self) -> int:
        """Bytes of the decoder: model.onnx and, where the weights live beside it, model.onnx.data."""
        return self.files.get("model.onnx", 0) + self.files.get("model.onnx.data", 0)


def load_source(folder: str | os.PathLike) -> tuple[nn.Module, Any, dict[str, Any]]:
    """Load an mlx-lm model folder (config.json + safetensors) from disk; never downloads.

    Args:
        folder: a local folder as written by ``mlx_lm.convert`` (or ``save_model`` + config.json).

    Returns:
        The model, its tokenizer (mlx-lm's TokenizerWrapper) and the config.json contents.
    """
    path = Path(folder)
    hint = ("Pass a local folder written by mlx-lm (`mlx_lm.convert`, or save_model + config.json + tokenizer "
            "files); mlxport never downloads models.")
    if not (path / "config.json").is_file():
        raise ArtifactError(f"{path} is not an mlx-lm model folder: it has no config.json", hint=hint)
    try:
        config = json.loads((path / "config.json").read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path / 'config.json'} is not valid JSON: {exc}", hint=hint) from None
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if not isinstance(model_type, str):
        raise ArtifactError(f"{path / 'config.json'} has no model_type, so mlx-lm cannot pick an architecture",
                            hint=hint)
    import importlib.util

    from mlx_lm.utils import MODEL_REMAPPING

    module = MODEL_REMAPPING.get(model_type, model_type)
    if importlib.util.find_spec(f"mlx_lm.models.{module}") is None:
        raise ArtifactError(f"{path}: mlx-lm has no architecture for model_type '{model_type}'",
                            hint="export-lm exports the language models mlx-lm runs (mlx_lm/models/*.py: llama, "
                                 "qwen2, gemma, phi3, mixtral, ...); for other MLX models use `mlxport export`.")
    if not any(path.glob("*.safetensors")):
        raise ArtifactError(f"{path} has config.json but no *.safetensors weights", hint=hint)
    from mlx_lm.utils import load

    model, tokenizer, config = load(str(path), return_config=True)
    return model, tokenizer, config


def export_lm(
    model: nn.Module,
    tokenizer: Any,
    out_dir: str | os.PathLike,
    *,
    config: dict[str, Any] | None = None,
    source_folder: str | os.PathLike | None = None,
    precision: str = "source",
    group_size: int = 32,
    portable: bool = False,
    fused: bool | None = None,
    validate: bool = True,
    check_tokens: int = 8,
    threads: int | None = None,
    external_data: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    progress: Callable[[str], None] | None = None,
) -> LMExport:
    """Export an mlx-lm decoder with its KV cache to ONNX, packaged for ONNX Runtime GenAI.

    Args:
        model: an mlx-lm ``Model`` (float or quantized by mlx-lm).
        tokenizer: its tokenizer (mlx-lm's TokenizerWrapper or a Hugging Face tokenizer), or None.
        out_dir: the folder to write.
        config: the model's config.json contents (for context length, token ids).
        source_folder: where tokenizer files are copied from when the tokenizer cannot save itself.
        precision: "source" (as loaded), "float32", "float16", or "int4"/"int8" (quantize a float model with
            MLX's own affine quantization, then export its packed weights as they are).
        group_size: quantization group size for int4/int8 (32, 64 or 128).
        portable: standard ONNX ops only at opset 17 (any runtime), no ONNX Runtime contrib ops.
        fused: rewrite the graph for ONNX Runtime's fused CPU kernels (GroupQueryAttention with the cache shared
            in place, SkipSimplifiedLayerNormalization, merged q/k/v and gate/up matmuls; see
            rewrite/ort_fused.py, and lm/ort_fused.py for its check against MLX).
            None (default): fused unless ``portable``, keeping the standard graph (reason in the report) when the
            rewrite does not recognise the graph or the result fails the check against MLX. True: fused or an
            error. False: the standard graph (Concat cache, opset-23 Attention). Cannot be True with ``portable``.
        validate: compare with MLX at two sizes and check greedy tokens.
        check_tokens: how many of mlx-lm's greedy tokens the graph must agree with (0: skip that check); a
            token agrees if it is the graph's greedy choice or its logit is within atol of the top one.
        threads: pin ONNX Runtime GenAI's intra-op threads in genai_config.json. Default None writes no
            thread count: it belongs to the machine that runs the folder, not the one that exported it (ONNX
            Runtime then uses its own default; ``LMRunner(threads=)``, ``mlxport generate --threads`` and
            ``mlxport serve --threads`` set it when running).
        external_data: write the weights to ``model.onnx.data`` beside the graph (default), as ONNX Runtime
            GenAI's own builder does: GenAI then maps them instead of parsing them out of the protobuf (a 300 MB
            llama loads and prefills 1.5x faster and peaks 14 % lower: benchmarks/lm_load.py). False keeps one
            self-contained file.
        rtol: relative tolerance of the comparison with MLX (default: by dtype).
        atol: absolute tolerance of the comparison with MLX (default: a fraction of the largest output value that
            depends on the dtype: 2e-5 float32, 3e-2 float16, 1.5e-1 bfloat16).
        progress: called with a short message per stage.

    Returns:
        An LMExport: the folder, the spec, the validation report and sizes.

    The model is cast or quantized in place when ``precision`` asks for it, so that it stays the reference the
    export was checked against.
    """
    from ..api import export

    say = progress or (lambda _msg: None)
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}; got '{precision}'")
    if fused and portable:
        raise ValueError("fused=True and portable=True conflict: the fused graph uses ONNX Runtime contrib ops. "
                         "Pass portable=True for any runtime, or fused=True for ONNX Runtime (GenAI)")
    out = Path(out_dir)
    model = _apply_precision(model, precision, group_size)
    spec = lm_spec(model, config)
    out.mkdir(parents=True, exist_ok=True)
    say(f"{spec.model_type}: {spec.num_layers} layers, {spec.num_kv_heads} kv heads x {spec.head_dim}, "
        f"vocab {spec.vocab_size}")
    mx.random.seed(0)
    example = example_inputs(spec)
    step = make_step(model, spec)
    start = time.perf_counter()
    if atol is None:
        atol = _lm_atol(step, example, spec.cache_dtype)
    report = export(step, example, out / "model.onnx", input_names=spec.input_names(),
                    dynamic_axes=spec.dynamic_axes(), opset=17 if portable else None, rtol=rtol, atol=atol,
                    contrib_ops=False if portable else None, external_data=True if external_data else None,
                    validate=validate, progress=progress)
    report.info["export seconds"] = round(time.perf_counter() - start, 3)
    if fused is not False and not portable:
        fused = _fuse(out / "model.onnx", step, spec, report, required=fused is True, validate=validate, rtol=rtol,
                      atol=atol, say=say)
    fused = bool(fused) and not portable
    result = LMExport(out, spec, precision, report)
    if validate and check_tokens:
        say(f"checking {check_tokens} greedy tokens against mlx-lm")
        result.greedy_match, result.greedy_tokens, why = _check_greedy(model, out / "model.onnx", spec, check_tokens,
                                                                       atol or 1e-5)
        if not result.greedy_match:
            raise ValidationError(f"greedy decoding with the exported graph disagrees with mlx-lm: {why}. The graph "
                                  "matched MLX step by step, so suspect the cache or mask handling", report)
    say("writing genai_config.json and the tokenizer")
    write_genai_config(out, spec, config or {}, tokenizer, threads=threads, share_buffer=fused)
    _save_tokenizer(tokenizer, source_folder, out)
    meta = {"spec": asdict(spec), "precision": precision, "portable": portable, "fused": fused,
            "external_data": (out / "model.onnx.data").exists(),
            "greedy_match": result.greedy_match, "greedy_tokens": result.greedy_tokens,
            "validation": report.to_dict()}
    (out / META_FILE).write_text(json.dumps(meta, indent=2, default=str))
    result.files = {f.name: f.stat().st_size for f in sorted(out.iterdir()) if f.is_file()}
    return result


# Absolute tolerance per cache dtype, as a fraction of the largest value the step outputs (logits or cache).
# Rounding after a few layers and a vocabulary projection differs between summation orders by far more than the
# whole-model defaults allow near 0. Measured on 2-layer random models (weights x3), ONNX Runtime vs MLX, max abs
# / largest output: float32 7e-6 (gemma; MLX itself is 3e-5 from a float64 run, ORT 1.6e-5), float16 2e-2
# (4-bit, float16 scales), bfloat16 6e-2 (4-bit, bfloat16 scales; MLX is 5e-2 from float64). Each time ORT was
# as close to float64 as MLX: rounding, not a lowering error. 1.5-3x margin; greedy tokens are checked too.
_LM_ATOL = {"float32": 2e-5, "float16": 3e-2, "bfloat16": 1.5e-1}


def _lm_atol(step: Callable[..., dict[str, mx.array]], example: tuple[mx.array, ...], dtype: str) -> float | None:
    """The absolute tolerance for comparing the step with MLX, scaled to its outputs' size."""
    if dtype not in _LM_ATOL:
        return None
    outs = step(*example)
    mx.eval(outs)
    top = max(float(mx.abs(v.astype(mx.float32)).max()) for v in outs.values())
    return max(_LM_ATOL[dtype] * top, 1e-5)


def _fuse(path: Path, step: Callable[..., dict[str, mx.array]], spec: LMSpec, report: Any, *, required: bool,
          validate: bool, rtol: float | None, atol: float | None, say: Callable[[str], None]) -> bool:
    """Rewrite model.onnx for ONNX Runtime's fused kernels and check it against MLX again; True if it was replaced.

    The rewrite goes to a hidden folder first: unless ``required``, a graph the rewrite does not recognise (or
    a fused graph that fails the check) leaves the standard graph in place, with the reason in the report.
    """
    from ..artifact import file_sha256, read_meta, write_meta
    from ..rewrite.ort_fused import fuse_for_ort
    from .ort_fused import check_fused

    say("rewriting for ONNX Runtime's fused kernels (GroupQueryAttention, SkipSimplifiedLayerNormalization)")
    staging = path.parent / ".mlxport-fused"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        stats = fuse_for_ort(path, spec, out=staging / path.name)
        runs = check_fused(staging / path.name, step, spec, rtol=rtol, atol=atol) if validate else []
    except (CaptureError, ValidationError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if required:
            raise
        report.info["ort fused"] = f"not used (standard graph kept): {exc}"
        return False
    for f in staging.iterdir():
        os.replace(f, path.parent / f.name)
    staging.rmdir()
    report.info["ort fused"] = ", ".join(f"{k} {v}" for k, v in stats.to_dict().items())
    report.runs.extend(runs)
    meta = read_meta(path)
    if meta.exists:
        meta.files = {name: file_sha256(path.parent / name) for name in meta.files if (path.parent / name).is_file()}
        meta.sha256, meta.validation = meta.files.get(path.name), report.to_dict()
        write_meta(path, meta)
    return True


def _apply_precision(model: nn.Module, precision: str, group_size: int) -> nn.Module:
    quantized = any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in model.named_modules())
    if precision == "source":
        return model
    if precision in ("float32", "float16"):
        if quantized:
            raise CaptureError(f"the model is quantized; precision '{precision}' would have to dequantize it. "
                               "Export it as it is (precision 'source') or start from the float model")
        model.set_dtype(getattr(mx, precision))
        mx.eval(model.parameters())
        return model
    bits = 4 if precision == "int4" else 8
    if quantized:
        raise CaptureError(f"the model is already quantized by MLX; precision '{precision}' would requantize it. "
                           "Use precision 'source': its packed weights are exported as they are")
    if group_size not in (32, 64, 128):
        raise ValueError(f"group_size must be 32, 64 or 128; got {group_size}")

    def fits(_path: str, module: nn.Module) -> bool:
        return hasattr(module, "to_quantized") and module.weight.shape[-1] % group_size == 0

    nn.quantize(model, group_size=group_size, bits=bits, class_predicate=fits)
    mx.eval(model.parameters())
    return model


def _check_greedy(model: nn.Module, path: Path, spec: LMSpec, count: int,
                  margin: float) -> tuple[bool, list[int], str]:
    """mlx-lm's greedy tokens fed through the graph (prefill from an empty cache, then one token at a time).

    Each must be the graph's own greedy choice, or have a logit within ``margin`` of the graph's top one: a near
    tie that half-precision rounding may break either way (free-running decoding would then diverge for good,
    so the graph is fed mlx-lm's tokens rather than its own). Returns the verdict, the graph's choices and, on
    failure, what differed.
    """
    from mlx_lm.generate import generate_step

    from ..runners import OnnxRunner

    prompt = [1 % spec.vocab_size, 7 % spec.vocab_size, 3 % spec.vocab_size, 11 % spec.vocab_size]
    expected = [int(tok) for tok, _ in generate_step(mx.array(prompt), model, max_tokens=count)][:count]
    runner = OnnxRunner(path)
    ids = np.array([prompt], dtype=np.int64)
    past = [np.zeros((1, spec.num_kv_heads, 0, spec.head_dim), np.float32)] * (2 * spec.num_layers)
    choices: list[int] = []
    for i, token in enumerate(expected):
        outs = runner(ids, np.ones((1, past[0].shape[2] + ids.shape[1]), np.int64), *past)
        row = np.asarray(outs[0][0, -1], dtype=np.float64)
        choices.append(int(np.argmax(row)))
        if row[token] < row.max() - margin:
            return False, choices, (f"step {i}: mlx-lm chose token {token}, the graph token {choices[-1]}, whose "
                                    f"logit is {row.max() - row[token]:.3g} higher (allowed {margin:.3g}); "
                                    f"mlx-lm's tokens: {expected}")
        ids = np.array([[token]], dtype=np.int64)
        past = outs[1:]
    return True, choices, ""


def write_genai_config(out: Path, spec: LMSpec, config: dict[str, Any], tokenizer: Any,
                       *, threads: int | None = None, share_buffer: bool = False) -> Path:
    """genai_config.json for the generic "decoder" model type, matching the graph's names and cache layout.

    ``share_buffer``: the graph writes the cache in place (GroupQueryAttention), so GenAI may bind past and
    present to one max-length buffer.
    """
    eos = config.get("eos_token_id")
    if eos is None and tokenizer is not None:
        eos = getattr(tokenizer, "eos_token_id", None)
    eos = eos if eos is not None else 0
    bos = config.get("bos_token_id", getattr(tokenizer, "bos_token_id", None))
    pad = config.get("pad_token_id", getattr(tokenizer, "pad_token_id", None))
    first_eos = eos[0] if isinstance(eos, list) and eos else eos
    session: dict[str, Any] = {"log_id": "mlxport", "provider_options": []}
    if threads:  # only when asked: the exporting machine's core count says nothing of the serving one's
        session["intra_op_num_threads"] = int(threads)
    genai = {
        "model": {
            "type": "decoder",
            "bos_token_id": bos if bos is not None else first_eos,
            "eos_token_id": eos,
            "pad_token_id": pad if pad is not None else first_eos,
            "context_length": spec.context_length,
            "vocab_size": spec.vocab_size,
            "decoder": {
                "filename": "model.onnx",
                "head_size": spec.head_dim,
                "hidden_size": spec.hidden_size or spec.num_heads * spec.head_dim,
                "num_attention_heads": spec.num_heads,
                "num_hidden_layers": spec.num_layers,
                "num_key_value_heads": spec.num_kv_heads,
                "session_options": session,
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
            },
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": spec.context_length, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "repetition_penalty": 1.0, "temperature": 1.0, "top_k": 1, "top_p": 1.0,
            # The standard graph's present is Concat(past, new): a fresh buffer every step. The fused graph's
            # GroupQueryAttention writes into the past buffer, which GenAI then binds as the present too.
            "past_present_share_buffer": share_buffer,
        },
    }
    path = out / "genai_config.json"
    path.write_text(json.dumps(genai, indent=2))
    return path


def _save_tokenizer(tokenizer: Any, source: str | os.PathLike | None, out: Path) -> None:
    copied = False
    if source is not None:
        for name in TOKENIZER_FILES:
            src = Path(source) / name
            if src.exists():
                shutil.copy2(src, out / name)
                copied = True
    if copied or tokenizer is None:
        return
    inner = getattr(tokenizer, "_tokenizer", tokenizer)
    if hasattr(inner, "save_pretrained"):
        inner.save_pretrained(str(out))
