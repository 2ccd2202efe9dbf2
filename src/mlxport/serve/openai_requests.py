"""OpenAI request bodies -> what a generation needs: pure checks, no HTTP objects, no model calls.

Every refusal is an ``InvalidInput`` (400) carrying OpenAI's ``param`` (the offending field) and ``code``, and a
message that says what was given and what to send instead. Options that change the output and that mlxport does
not implement (``n`` > 1, ``echo``, ``logprobs``, penalties, tools, ...) are refused rather than ignored; options
that only describe the caller (``user``, ``metadata``, ``store``) are ignored.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

from ..lm.generate import GenerationConfig
from .errors import InvalidInput

ROLES = ("system", "developer", "user", "assistant", "tool")
MAX_STOP = 16
MAX_TEMPERATURE = 2.0
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the rest of the context


@dataclass
class ParsedRequest:
    """A checked request: the prompt (text, token ids, or chat messages) and the sampling options."""

    model: str
    prompt: str | list[int] | None
    messages: list[dict[str, str]] | None
    config: GenerationConfig
    max_tokens: int | None          # None: not given (the default depends on the prompt length)
    stream: bool = False
    include_usage: bool = False


def bad_request(message: str, param: str | None = None, code: str = "invalid_value") -> InvalidInput:
    """An InvalidInput carrying OpenAI's ``param`` and ``code`` fields."""
    exc = InvalidInput(message)
    exc.param = param  # type: ignore[attr-defined]
    exc.code = code  # type: ignore[attr-defined]
    return exc


def model_name(payload: dict[str, Any]) -> str:
    """The ``model`` field (required, a string)."""
    name = payload.get("model")
    if not isinstance(name, str) or not name:
        raise bad_request(f'"model" must be the name of a served model (see GET /v1/models); got {_show(name)}',
                          "model", "missing_required_parameter" if name is None else "invalid_type")
    return name


def parse_completion(payload: dict[str, Any], vocab_size: int | None = None) -> ParsedRequest:
    """Check a ``/v1/completions`` body.

    Args:
        payload: the decoded JSON object.
        vocab_size: when known, token-id prompts must lie in [0, vocab_size).

    Returns:
        The parsed request (``prompt`` set, ``messages`` None).
    """
    name = model_name(payload)
    _refuse(payload, _COMPLETION_UNSUPPORTED)
    prompt = _prompt(payload.get("prompt", _MISSING), vocab_size)
    config, max_tokens, stream, usage = _options(payload, ("max_tokens",))
    return ParsedRequest(name, prompt, None, config, max_tokens, stream, usage)


def parse_chat(payload: dict[str, Any]) -> ParsedRequest:
    """Check a ``/v1/chat/completions`` body; returns the parsed request (``messages`` set, ``prompt`` None)."""
    name = model_name(payload)
    _refuse(payload, _CHAT_UNSUPPORTED)
    messages = _messages(payload.get("messages", _MISSING))
    config, max_tokens, stream, usage = _options(payload, ("max_completion_tokens", "max_tokens"))
    return ParsedRequest(name, None, messages, config, max_tokens, stream, usage)


def fit_max_tokens(request: ParsedRequest, prompt_tokens: int, context_length: int, *, chat: bool) -> int:
    """The number of tokens to generate: the asked one, or the default, checked against the context length."""
    room = context_length - prompt_tokens
    if request.max_tokens is None:
        if room < 1:
            raise bad_request(f"this model's maximum context length is {context_length} tokens and the prompt "
                              f"has {prompt_tokens}: no room is left to generate; shorten the prompt",
                              "messages" if chat else "prompt", "context_length_exceeded")
        return room if chat else min(COMPLETION_DEFAULT_MAX_TOKENS, room)
    if request.max_tokens > room:
        key = "max_completion_tokens" if chat else "max_tokens"
        raise bad_request(
            f"this model's maximum context length is {context_length} tokens; the prompt has {prompt_tokens} and "
            f"{key} asks for {request.max_tokens} ({prompt_tokens + request.max_tokens} in all). Shorten the "
            f"prompt or ask for at most {max(room, 0)} tokens", key, "context_length_exceeded")
    return request.max_tokens


# ---------------------------------------------------------------------------------------------- internals

_MISSING = object()


def _neutral_false(v: Any) -> bool:
    return v is None or v is False


def _neutral_zero(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and v == 0)


def _neutral_empty(v: Any) -> bool:
    return v is None or v == {} or v == [] or v == ""


def _neutral_one(v: Any) -> bool:
    return v is None or (isinstance(v, int) and not isinstance(v, bool) and v == 1)


# field -> (check that the value asks for nothing, what to do instead)
_Rule = tuple[Callable[[Any], bool], str]
_COMMON_UNSUPPORTED: dict[str, _Rule] = {
    "n": (_neutral_one, "mlxport generates one choice per request; send several requests (they are queued)"),
    "presence_penalty": (_neutral_zero, "penalties are not implemented; leave it out or send 0"),
    "frequency_penalty": (_neutral_zero, "penalties are not implemented; leave it out or send 0"),
    "logit_bias": (_neutral_empty, "logit_bias is not implemented; leave it out"),
}
_COMPLETION_UNSUPPORTED: dict[str, _Rule] = {
    **_COMMON_UNSUPPORTED,
    "echo": (_neutral_false, "echo is not implemented; leave it out or send false"),
    "logprobs": (_neutral_false, "logprobs are not returned; leave it out"),
    "best_of": (_neutral_one, "best_of is not implemented; leave it out or send 1"),
    "suffix": (_neutral_empty, "suffix (insertion) is not implemented; leave it out"),
}
_CHAT_UNSUPPORTED: dict[str, _Rule] = {
    **_COMMON_UNSUPPORTED,
    "logprobs": (_neutral_false, "logprobs are not returned; leave it out or send false"),
    "top_logprobs": (lambda v: v is None or v == 0, "logprobs are not returned; leave it out"),
    "tools": (_neutral_empty, "tool calling is not implemented; leave tools out"),
    "functions": (_neutral_empty, "function calling is not implemented; leave functions out"),
    "tool_choice": (lambda v: v is None or v == "none", "tool calling is not implemented; leave it out"),
    "function_call": (lambda v: v is None or v == "none", "function calling is not implemented; leave it out"),
    "response_format": (lambda v: v is None or v == {"type": "text"},
                        'only {"type": "text"} is supported; leave response_format out'),
    "audio": (lambda v: v is None, "audio output is not supported"),
    "modalities": (lambda v: v is None or v == ["text"], 'only ["text"] is supported'),
}


def _refuse(payload: dict[str, Any], rules: dict[str, _Rule]) -> None:
    for key, (neutral, advice) in rules.items():
        if key in payload and not neutral(payload[key]):
            code = "unsupported_value" if key != "n" else "invalid_value"
            raise bad_request(f'"{key}": {_show(payload[key])} is not supported: {advice}', key, code)


def _options(payload: dict[str, Any], max_keys: tuple[str, ...]) -> tuple[GenerationConfig, int | None, bool, bool]:
    given = [_int(payload, key, minimum=1) for key in max_keys]
    max_tokens = next((v for v in given if v is not None), None)
    temperature = _number(payload, "temperature", 0.0, MAX_TEMPERATURE)
    top_p = _number(payload, "top_p", 0.0, 1.0)
    if top_p is not None and top_p <= 0:
        raise bad_request(f'"top_p" must be in (0, 1]; got {_show(top_p)}', "top_p")
    top_k = _int(payload, "top_k", minimum=-1)  # an extension (vLLM's); -1 and 0 mean off
    seed = _int(payload, "seed")
    stream = _bool(payload, "stream")
    options = payload.get("stream_options")
    include_usage = False
    if options is not None:
        if not isinstance(options, dict):
            raise bad_request(f'"stream_options" must be an object such as {{"include_usage": true}}; got '
                              f"{_show(options)}", "stream_options", "invalid_type")
        # Without stream it changes nothing, so it is checked but not refused.
        include_usage = _bool(options, "include_usage", "stream_options.include_usage") and stream
    config = GenerationConfig(
        max_tokens=max_tokens or 1,
        temperature=1.0 if temperature is None else temperature,  # OpenAI's default: sampling at 1
        top_p=1.0 if top_p is None else top_p,
        top_k=max(top_k or 0, 0),
        stop=_stop(payload.get("stop")),
        seed=None if seed is None else seed % 2**31,  # ONNX Runtime GenAI takes a signed 32-bit seed
    )
    return config, max_tokens, stream, include_usage


def _prompt(value: Any, vocab_size: int | None) -> str | list[int]:
    hint = "send one prompt: a string, a list of one string, or a list of token ids"
    if value is _MISSING or value is None:
        raise bad_request(f'"prompt" is required: {hint}', "prompt", "missing_required_parameter")
    if isinstance(value, str):
        prompt: str | list[int] = value
    elif isinstance(value, list) and value and all(_is_int(t) for t in value):
        prompt = list(value)
    elif isinstance(value, list) and len(value) == 1 and isinstance(value[0], str):
        prompt = value[0]
    elif (isinstance(value, list) and len(value) == 1 and isinstance(value[0], list) and value[0]
          and all(_is_int(t) for t in value[0])):
        prompt = list(value[0])
    elif isinstance(value, list) and len(value) > 1 and all(isinstance(v, (str, list)) for v in value):
        raise bad_request(f'"prompt" holds {len(value)} prompts; mlxport answers one per request: {hint} '
                          "(several requests are queued and answered in turn)", "prompt")
    else:
        raise bad_request(f'"prompt" must be a string, a list of one string, or a non-empty list of token ids; '
                          f"got {_show(value)}", "prompt", "invalid_type")
    if isinstance(prompt, str) and not prompt:
        raise bad_request('"prompt" is empty: give some text or token ids', "prompt")
    if isinstance(prompt, list) and vocab_size is not None:
        bad = [t for t in prompt if not 0 <= t < vocab_size]
        if bad:
            raise bad_request(f'"prompt" token ids must lie in [0, {vocab_size}) for this model; got {bad[:5]}',
                              "prompt")
    return prompt


def _messages(value: Any) -> list[dict[str, str]]:
    if value is _MISSING or value is None:
        raise bad_request('"messages" is required: a list such as [{"role": "user", "content": "Hello"}]',
                          "messages", "missing_required_parameter")
    if not isinstance(value, list) or not value:
        raise bad_request(f'"messages" must be a non-empty list of {{"role", "content"}} objects; got '
                          f"{_show(value)}", "messages", "invalid_type")
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_request(f'{where} must be an object {{"role": ..., "content": ...}}; got {_show(message)}',
                              where, "invalid_type")
        role = message.get("role")
        if role not in ROLES:
            raise bad_request(f"{where}.role must be one of {', '.join(ROLES)}; got {_show(role)}", f"{where}.role")
        if message.get("tool_calls"):
            raise bad_request(f"{where}.tool_calls: tool calling is not implemented; send text messages only",
                              f"{where}.tool_calls", "unsupported_value")
        content = message.get("content", _MISSING)
        text = _content(content, f"{where}.content")
        item = {"role": role, "content": text}
        name = message.get("name")
        if name is not None:
            if not isinstance(name, str):
                raise bad_request(f"{where}.name must be a string; got {_show(name)}", f"{where}.name", "invalid_type")
            item["name"] = name
        out.append(item)
    return out


def _content(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        texts = []
        for j, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise bad_request(f'{where}[{j}] must be a text part {{"type": "text", "text": "..."}}; got '
                                  f"{_show(kind)} (only text is supported)", f"{where}[{j}]", "unsupported_value")
            texts.append(part["text"])
        return "".join(texts)
    what = "missing" if content is _MISSING else _show(content)
    raise bad_request(f"{where} must be a string (or a list of text parts); got {what}", where,
                      "missing_required_parameter" if content is _MISSING else "invalid_type")


def _stop(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if (not isinstance(items, list) or len(items) > MAX_STOP
            or not all(isinstance(s, str) for s in items)):
        raise bad_request(f'"stop" must be a string or a list of at most {MAX_STOP} strings; got {_show(value)}',
                          "stop", "invalid_type")
    return tuple(s for s in items if s)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(payload: dict[str, Any], key: str, *, minimum: int | None = None) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or (minimum is not None and value < minimum):
        what = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise bad_request(f'"{key}" must be {what}; got {_show(value)}', key,
                          "invalid_type" if not _is_int(value) else "invalid_value")
    return value


def _number(payload: dict[str, Any], key: str, low: float, high: float) -> float | None:
    value = payload.get(key)
    if value is None:
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
        raise bad_request(f'"{key}" must be a number in [{low:g}, {high:g}]; got {_show(value)}', key,
                          "invalid_value" if isinstance(value, (int, float)) else "invalid_type")
    return float(value)


def _bool(payload: dict[str, Any], key: str, param: str | None = None) -> bool:
    value = payload.get(key)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_request(f'"{param or key}" must be true or false; got {_show(value)}', param or key, "invalid_type")
    return value


def _show(value: Any) -> str:
    """A short JSON rendering of a given value for an error message."""
    if value is _MISSING:
        return "nothing"
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
