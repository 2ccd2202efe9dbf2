"""Tiny mlx-lm model folders for the LM tests: random weights, a real BPE tokenizer, nothing downloaded.

A folder is what ``mlx_lm.convert`` writes: ``config.json``, ``model.safetensors`` (float, or MLX 4-bit with a
``quantization`` entry in the config) and the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``,
``chat_template.jinja``). The tokenizer is a byte-level BPE trained in code on the Zen of Python.
"""

from __future__ import annotations

import codecs
import importlib
import json
from pathlib import Path
from typing import Any

import mlx.core as mx
import mlx.nn as nn
import numpy as np

# gemma2 groups its queries per KV head (5-D attention scores): the padding mask must follow (LMSpec.mask_rank).
ARCHS = ("llama", "qwen2", "gemma", "phi3", "mixtral", "gemma2")
VOCAB = 320  # >= 300: the BPE learns merges beyond the 256 byte tokens and 3 specials
SEED = 0
PAD, BOS, EOS = 0, 1, 2
CONTEXT = 256
# With MLX's default initialisation a 2-layer random model's greedy tokens collapse into one repeated token
# (the residual stream is dominated by the current token's embedding). Scaling every matrix except the
# embedding by 3 makes the layers matter: measured 11-16 distinct tokens out of 16 for every arch below.
WEIGHT_SCALE = 3.0
# gemma2 multiplies the embedding by sqrt(hidden) and soft-caps attention and logits: with its embedding as
# initialised the greedy tokens stay at 3 distinct; at 0.3x, 14.
EMBED_SCALE = {"gemma2": 0.3}
PROMPT = [5, 70, 33, 201]  # token ids, all ordinary (no special token)
CHAT_TEMPLATE = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant:{% endif %}")

_COMMON = dict(hidden_size=64, num_hidden_layers=2, intermediate_size=128, num_attention_heads=4,
               rms_norm_eps=1e-5, vocab_size=VOCAB, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
               max_position_embeddings=CONTEXT)
CONFIGS: dict[str, dict[str, Any]] = {
    "llama": dict(_COMMON, model_type="llama", num_key_value_heads=2),
    "qwen2": dict(_COMMON, model_type="qwen2", num_key_value_heads=2),
    "gemma": dict(_COMMON, model_type="gemma", num_key_value_heads=1, head_dim=16),
    "gemma2": dict(_COMMON, model_type="gemma2", num_key_value_heads=1, head_dim=16),
    "phi3": dict(_COMMON, model_type="phi3", num_key_value_heads=4),
    "mixtral": dict(_COMMON, model_type="mixtral", num_key_value_heads=2, num_local_experts=4,
                    num_experts_per_tok=2),
}
# Wide enough that the weights, not the graph's ~13 KB of node protos, dominate the file: for the size checks.
CONFIGS["llama_wide"] = dict(CONFIGS["llama"], hidden_size=256, intermediate_size=512)


def write_tokenizer(out: Path) -> Path:
    """Train a byte-level BPE (VOCAB tokens, <pad> <s> </s>) and save it the way Hugging Face does."""
    import this  # noqa: F401  (the Zen of Python, rot13-encoded in this.s)

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    text = codecs.decode(this.s, "rot13")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([text] * 3, trainer)
    if tok.get_vocab_size() != VOCAB:
        raise RuntimeError(f"the BPE has {tok.get_vocab_size()} tokens, the models {VOCAB}")
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(str(out))
    return out


def random_model(arch: str) -> nn.Module:
    """``mlx_lm.models.<model_type>.Model`` of ``CONFIGS[arch]``, seeded, every matrix but the embedding scaled."""
    from mlx.utils import tree_map_with_path

    module = importlib.import_module(f"mlx_lm.models.{CONFIGS[arch]['model_type']}")
    mx.random.seed(SEED)
    model = module.Model(module.ModelArgs.from_dict(CONFIGS[arch]))

    def scale(path: str, value: mx.array) -> mx.array:
        if "embed" in path:
            return value * EMBED_SCALE.get(arch, 1.0)
        return value * WEIGHT_SCALE if value.ndim >= 2 else value

    model.update(tree_map_with_path(scale, model.parameters()))
    model.eval()
    mx.eval(model.parameters())
    return model


def write_folder(arch: str, out: Path, tokenizer_dir: Path, *, bits: int | None = None, group_size: int = 64,
                 dtype: str = "float32") -> Path:
    """An mlx-lm folder for ``arch`` in ``dtype``, quantized by mlx-lm's own ``quantize_model`` if ``bits``
    (scales and biases then are in ``dtype``, as in mlx-community's 4-bit models made from bfloat16)."""
    import shutil

    from mlx_lm.utils import quantize_model, save_config, save_model

    model = random_model(arch)
    model.set_dtype(getattr(mx, dtype))
    mx.eval(model.parameters())
    config = dict(CONFIGS[arch])
    if bits is not None:
        model, config = quantize_model(model, config, group_size=group_size, bits=bits)
    out.mkdir(parents=True, exist_ok=True)
    save_model(out, model)
    save_config(config, out / "config.json")
    for f in tokenizer_dir.iterdir():
        shutil.copy2(f, out / f.name)
    return out


def mlx_greedy(model: nn.Module, prompt: list[int], count: int) -> list[int]:
    """mlx-lm's own greedy decoding (generate_step with its KV cache)."""
    from mlx_lm.generate import generate_step

    steps = generate_step(mx.array(prompt), model, max_tokens=count)
    return [int(tok) for tok, _ in steps][:count]


def safetensors_bytes(folder: Path) -> int:
    """Bytes of the weight files of an mlx-lm folder."""
    return sum(f.stat().st_size for f in folder.glob("*.safetensors"))


def logits_np(x: mx.array) -> np.ndarray:
    mx.eval(x)
    return np.array(x.astype(mx.float32))


def read_json(path: Path) -> Any:
    return json.loads(path.read_text())
