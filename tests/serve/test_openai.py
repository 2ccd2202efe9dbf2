"""OpenAI-compatible /v1 endpoints on a real server process, driven by the ``openai`` client.

A tiny random llama (mlx-lm code, byte-level BPE tokenizer trained here, a chat template that refuses a
conversation opening with the assistant) is exported once with ``export_lm``. Two servers serve it on 127.0.0.1:
ONNX Runtime GenAI (``--lm-backend auto``) and mlxport's own decode loop (``--lm-backend onnxruntime``, behind a
bearer token, which the client sends as its API key). Every answer is compared with ``LMRunner`` in-process.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from .conftest import Server, ServerPool, metric_samples, metric_value

pytest.importorskip("mlx_lm")
pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")
openai = pytest.importorskip("openai")

CONTEXT = 1024
VOCAB = 320
NAME = "tiny-llama"
TOKEN = "lm-s3cret"
PROMPT = "Beautiful is better than"
LONG = 1000  # tokens: most of the context, long enough (~1 s) for the queue and timeout tests
MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Is flat better than nested?"}]
CHAT_TEMPLATE = (
    "{% if messages[0]['role'] == 'assistant' %}"
    "{{ raise_exception('the conversation must start with a system or user message') }}{% endif %}"
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
CORPUS = [
    "Beautiful is better than ugly. Explicit is better than implicit. Simple is better than complex.",
    "Complex is better than complicated. Flat is better than nested. Sparse is better than dense.",
    "Readability counts. Special cases aren't special enough to break the rules.",
    "Errors should never pass silently, unless explicitly silenced. Now is better than never.",
    "If the implementation is hard to explain, it's a bad idea. Namespaces are one honking great idea.",
]
BACKENDS = ("auto", "onnxruntime")


def build_lm_folder(root: Path) -> Path:
    """Train the tokenizer, build the random llama and export it with ``export_lm``; returns the LM folder."""
    import mlx.core as mx
    from mlx_lm.models import llama
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from mlxport.lm.export import export_lm
    from tests.models.zoo import LM_CONFIGS

    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    tok.save(str(src / "tokenizer.json"))
    (src / "tokenizer_config.json").write_text(json.dumps({
        "bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "chat_template": CHAT_TEMPLATE,
        "tokenizer_class": "PreTrainedTokenizerFast"}))
    config = dict(LM_CONFIGS["llama"], vocab_size=VOCAB, bos_token_id=1, eos_token_id=2,
                  max_position_embeddings=CONTEXT)
    (src / "config.json").write_text(json.dumps(config))
    mx.random.seed(0)
    model = llama.Model(llama.ModelArgs.from_dict(config))
    mx.eval(model.parameters())
    out = root / NAME
    export_lm(model, None, out, config=config, source_folder=src, threads=1, check_tokens=4)
    return out


@pytest.fixture(scope="module")
def lm_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_lm_folder(tmp_path_factory.mktemp("lm"))


@pytest.fixture(scope="module")
def servers(lm_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Server]]:
    pool = ServerPool(tmp_path_factory.mktemp("openai_logs"))
    try:
        yield {
            "auto": pool.start([str(lm_folder), "--threads", "1", "--poll-interval", "0"]),
            "onnxruntime": pool.start([str(lm_folder), "--lm-backend", "onnxruntime", "--threads", "1",
                                       "--poll-interval", "0"], token=TOKEN),
        }
    finally:
        pool.close()


@pytest.fixture(scope="module")
def runners(lm_folder: Path) -> dict[str, Any]:
    """In-process LMRunners, the reference for what each server must answer."""
    from mlxport.lm.generate import LMRunner

    return {b: LMRunner(lm_folder, backend=b, threads=1) for b in BACKENDS}


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def client_for(server: Server, api_key: str | None = None) -> Any:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key or server.token or "unused",
                         max_retries=0, timeout=60)


def greedy(runner: Any, prompt: Any, max_tokens: int, stop: tuple[str, ...] = ()) -> Any:
    from mlxport.lm.generate import GenerationConfig

    return runner.generate(prompt, GenerationConfig(max_tokens=max_tokens, temperature=0.0, stop=stop))


def openai_error(response: requests.Response, status: int, code: str | None = None, *fragments: str) -> dict:
    """The response is OpenAI's error shape with ``status``, ``code`` and a message naming ``fragments``."""
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["type"] == ("invalid_request_error" if status < 500 else "server_error")
    assert "Traceback" not in response.text
    if code is not None:
        assert error["code"] == code, error
    for fragment in fragments:
        assert fragment.lower() in error["message"].lower(), (fragment, error["message"])
    return error


def sse_events(response: requests.Response) -> list[Any]:
    """The ``data:`` payloads of a server-sent-events body (``[DONE]`` kept as the string)."""
    events = []
    for line in response.iter_lines(decode_unicode=True):
        if line.startswith("data: "):
            data = line[len("data: "):]
            events.append(data if data == "[DONE]" else json.loads(data))
        else:
            assert line == "", line
    return events


# ------------------------------------------------------------------------------------------------ happy paths


def test_models_and_health(servers: dict[str, Server]) -> None:
    client = client_for(servers["auto"])
    listed = client.models.list()
    assert [m.id for m in listed.data] == [NAME]
    assert listed.data[0].object == "model" and listed.data[0].owned_by == "mlxport"
    assert client.models.retrieve(NAME).id == NAME
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
    server = servers["auto"]
    assert server.get("/ping").json() == {"status": "healthy"}
    assert server.get("/v2/health/ready").status_code == 200
    # The v2 tensor API does not serve LMs, and says where they are.
    r = server.get(f"/v2/models/{NAME}")
    assert r.status_code == 404 and "/v1" in r.json()["error"]


def test_completion_greedy_equals_runner(servers: dict[str, Server], runners: dict[str, Any], backend: str) -> None:
    client = client_for(servers[backend])
    runner = runners[backend]
    want = greedy(runner, PROMPT, 24)
    got = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0)
    assert got.object == "text_completion" and got.model == NAME and got.id.startswith("cmpl-")
    assert len(got.choices) == 1 and got.choices[0].index == 0
    assert got.choices[0].text == want.text
    assert got.choices[0].finish_reason == want.finish_reason
    ids = runner.encode(PROMPT)
    assert got.usage.prompt_tokens == len(ids)
    assert got.usage.completion_tokens == len(want.tokens)
    assert got.usage.total_tokens == len(ids) + len(want.tokens)
    # The same prompt as token ids (bare list, and a list of one list) gives the same text.
    for prompt in (ids, [ids]):
        same = client.completions.create(model=NAME, prompt=prompt, max_tokens=24, temperature=0)
        assert same.choices[0].text == want.text and same.usage.prompt_tokens == len(ids)


def test_completion_stream(servers: dict[str, Server], runners: dict[str, Any], backend: str) -> None:
    client = client_for(servers[backend])
    want = greedy(runners[backend], PROMPT, 20)
    chunks = list(client.completions.create(model=NAME, prompt=PROMPT, max_tokens=20, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert "".join(texts) == want.text
    assert len(texts) >= 3, "the text must arrive in pieces, not in one chunk at the end"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [want.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(want.tokens)
    assert chunks[-1].usage.prompt_tokens == len(runners[backend].encode(PROMPT))
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)


def test_chat(servers: dict[str, Server], runners: dict[str, Any], backend: str) -> None:
    client = client_for(servers[backend])
    runner = runners[backend]
    prompt = runner.apply_chat_template(MESSAGES)
    assert prompt.endswith("assistant:") and "<s>user: Is flat" in prompt
    want = greedy(runner, prompt, 16)
    got = client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=16, temperature=0)
    assert got.object == "chat.completion" and got.id.startswith("chatcmpl-")
    assert got.choices[0].message.role == "assistant"
    assert got.choices[0].message.content == want.text
    assert got.choices[0].finish_reason == want.finish_reason
    assert got.usage.prompt_tokens == len(runner.encode(prompt))
    assert got.usage.completion_tokens == len(want.tokens)
    # max_completion_tokens is the newer name of max_tokens; text parts are joined.
    parts = [MESSAGES[0], {"role": "user", "content": [{"type": "text", "text": "Is flat better "},
                                                        {"type": "text", "text": "than nested?"}]}]
    again = client.chat.completions.create(model=NAME, messages=parts, max_completion_tokens=16, temperature=0)
    assert again.choices[0].message.content == want.text

    stream = list(client.chat.completions.create(model=NAME, messages=MESSAGES, max_tokens=16, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "chat.completion.chunk" for c in stream)
    assert stream[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want.text
    assert [c.choices[0].finish_reason for c in stream if c.choices and c.choices[0].finish_reason] == [
        want.finish_reason]
    assert stream[-1].usage.total_tokens == got.usage.total_tokens


def test_raw_sse_shape(servers: dict[str, Server]) -> None:
    """The wire format: data lines, blank separators, [DONE] last; without stream_options no usage chunk."""
    r = servers["auto"].post("/v1/chat/completions", json={
        "model": NAME, "messages": MESSAGES, "max_tokens": 6, "temperature": 0, "stream": True}, stream=True)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r)
    assert events[-1] == "[DONE]" and all(isinstance(e, dict) for e in events[:-1])
    assert all(e["choices"] and "usage" not in e for e in events[:-1])
    assert events[-2]["choices"][0]["delta"] == {} and events[-2]["choices"][0]["finish_reason"]


def test_stop_strings(servers: dict[str, Server], runners: dict[str, Any], backend: str) -> None:
    client = client_for(servers[backend])
    full = greedy(runners[backend], PROMPT, 24).text
    assert len(full) >= 6, full
    stop = full[2:5]
    want = full[: full.find(stop)]
    assert greedy(runners[backend], PROMPT, 24, stop=(stop,)).text == want
    for stream in (False, True):
        got = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=24, temperature=0, stop=[stop, "\x00"],
                                        stream=stream)
        if stream:
            chunks = [c for c in got if c.choices]
            text, reason = "".join(c.choices[0].text for c in chunks), chunks[-1].choices[0].finish_reason
        else:
            text, reason = got.choices[0].text, got.choices[0].finish_reason
        assert (text, reason) == (want, "stop")


def test_sampling_is_reproducible_with_a_seed(servers: dict[str, Server], backend: str) -> None:
    client = client_for(servers[backend])
    texts = [client.completions.create(model=NAME, prompt=PROMPT, max_tokens=16, temperature=1.0, top_p=0.95,
                                       seed=1234).choices[0].text for _ in range(2)]
    assert texts[0] == texts[1]


def test_concurrent_requests_are_queued_not_dropped(servers: dict[str, Server], runners: dict[str, Any],
                                                    backend: str) -> None:
    server = servers[backend]
    client = client_for(server)
    prompts = [PROMPT, "Flat is", "Readability", "Errors should"] * 3
    want = {p: greedy(runners[backend], p, 12).text for p in set(prompts)}
    before = metric_value(metric_samples(server), "mlxport_requests_total", model=NAME, protocol="openai", code="200")

    def ask(i_prompt: tuple[int, str]) -> str:
        i, prompt = i_prompt
        if i % 2:
            stream = client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0, stream=True)
            return "".join(c.choices[0].text for c in stream if c.choices)
        return client.completions.create(model=NAME, prompt=prompt, max_tokens=12, temperature=0).choices[0].text

    with ThreadPoolExecutor(len(prompts)) as pool:
        answers = list(pool.map(ask, enumerate(prompts)))
    assert answers == [want[p] for p in prompts]
    samples = metric_samples(server)
    assert metric_value(samples, "mlxport_requests_total", model=NAME, protocol="openai", code="200") \
        == before + len(prompts)
    assert metric_value(samples, "mlxport_lm_tokens_total", model=NAME, kind="completion") >= 12 * len(prompts)
    assert metric_value(samples, "mlxport_lm_tokens_total", model=NAME, kind="prompt") > 0


# ------------------------------------------------------------------------------------------------ bad requests


def test_unknown_model_is_404(servers: dict[str, Server]) -> None:
    client = client_for(servers["auto"])
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=2)
    assert NAME in str(info.value) and info.value.code == "model_not_found"
    r = servers["auto"].post("/v1/chat/completions", json={"model": "gpt-4", "messages": MESSAGES})
    openai_error(r, 404, "model_not_found", "gpt-4", NAME)


def test_too_many_tokens_is_400(servers: dict[str, Server], runners: dict[str, Any]) -> None:
    client = client_for(servers["auto"])
    n = len(runners["auto"].encode(PROMPT))
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=NAME, prompt=PROMPT, max_tokens=CONTEXT)
    assert info.value.code == "context_length_exceeded" and info.value.param == "max_tokens"
    assert str(CONTEXT) in str(info.value) and f"at most {CONTEXT - n}" in str(info.value)
    # Exactly filling the context is allowed.
    ok = client.completions.create(model=NAME, prompt=PROMPT, max_tokens=CONTEXT - n, temperature=0, stop=["\n"])
    assert ok.usage.prompt_tokens == n
    long_prompt = [3 + i % (VOCAB - 3) for i in range(CONTEXT)]
    r = servers["auto"].post("/v1/completions", json={"model": NAME, "prompt": long_prompt})
    openai_error(r, 400, "context_length_exceeded", "no room")
    r = servers["auto"].post("/v1/chat/completions", json={
        "model": NAME, "messages": [{"role": "user", "content": "x " * CONTEXT}], "max_tokens": 1})
    openai_error(r, 400, "context_length_exceeded")


@pytest.mark.parametrize("body, param, fragment", [
    ({"messages": "hello"}, "messages", "non-empty list"),
    ({"messages": []}, "messages", "non-empty list"),
    ({}, "messages", "required"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role", "one of"),
    ({"messages": [{"role": "user"}]}, "messages[0].content", "missing"),
    ({"messages": [{"role": "user", "content": 3}]}, "messages[0].content", "string"),
    ({"messages": ["hi"]}, "messages[0]", "object"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
     "messages[0].content[0]", "only text"),
    ({"messages": [{"role": "assistant", "content": "I start"}]}, "messages", "chat template"),
    ({"messages": MESSAGES, "n": 2}, "n", "one choice"),
    ({"messages": MESSAGES, "tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "tool"),
    ({"messages": MESSAGES, "temperature": 3}, "temperature", "[0, 2]"),
    ({"messages": MESSAGES, "top_p": 0}, "top_p", "(0, 1]"),
    ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens", ">= 1"),
    ({"messages": MESSAGES, "stop": [1, 2]}, "stop", "strings"),
    ({"messages": MESSAGES, "stream": True, "stream_options": "usage"}, "stream_options", "include_usage"),
])
def test_malformed_chat_is_400(servers: dict[str, Server], body: dict, param: str, fragment: str) -> None:
    r = servers["auto"].post("/v1/chat/completions", json={"model": NAME, **body})
    error = openai_error(r, 400, None, fragment)
    assert error["param"] == param


@pytest.mark.parametrize("body, param, fragment", [
    ({"prompt": ["one", "two"]}, "prompt", "one per request"),
    ({"prompt": ""}, "prompt", "empty"),
    ({"prompt": {"text": "hi"}}, "prompt", "string"),
    ({"prompt": [1, VOCAB + 5]}, "prompt", f"[0, {VOCAB})"),
    ({}, "prompt", "required"),
    ({"prompt": "hi", "n": 2}, "n", "one choice"),
    ({"prompt": "hi", "echo": True}, "echo", "echo"),
    ({"prompt": "hi", "logprobs": 2}, "logprobs", "logprobs"),
    ({"prompt": "hi", "best_of": 3}, "best_of", "best_of"),
    ({"prompt": "hi", "presence_penalty": 0.5}, "presence_penalty", "penalties"),
    ({"prompt": "hi", "max_tokens": "ten"}, "max_tokens", "integer"),
    ({"prompt": "hi", "stream": "yes"}, "stream", "true or false"),
    ({"prompt": "hi", "model": 7}, "model", "served model"),
])
def test_malformed_completion_is_400(servers: dict[str, Server], body: dict, param: str, fragment: str) -> None:
    r = servers["auto"].post("/v1/completions", json={"model": NAME, **body})
    error = openai_error(r, 400, None, fragment)
    assert error["param"] == param


def test_not_json_and_auth(servers: dict[str, Server]) -> None:
    server = servers["auto"]
    openai_error(server.post("/v1/completions", data=b"{not json"), 400, None, "not valid JSON")
    openai_error(server.post("/v1/completions", json=["a"]), 400, None, "JSON object")
    secured = servers["onnxruntime"]
    with pytest.raises(openai.AuthenticationError):
        client_for(secured, api_key="wrong").completions.create(model=NAME, prompt="hi", max_tokens=2)
    r = secured.post("/v1/chat/completions", json={"model": NAME, "messages": MESSAGES})
    assert r.headers.get("www-authenticate", "").lower().startswith("bearer")
    openai_error(r, 401, "invalid_api_key", "bearer")
    assert secured.get("/v1/models").status_code == 401
    # The openai client sends its API key as the bearer token.
    assert client_for(secured).models.list().data[0].id == NAME
    # 4xx are counted under the openai protocol; the server keeps serving.
    samples = metric_samples(server)
    assert metric_value(samples, "mlxport_request_failures_total", model=NAME, protocol="openai") >= 1


# ------------------------------------------------------------------------------------------------ limits


def _best_time(client: Any, max_tokens: int) -> float:
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        client.completions.create(model=NAME, prompt=PROMPT, max_tokens=max_tokens, temperature=0)
        best = min(best, time.perf_counter() - start)
    return best


def test_client_disconnect_stops_the_generation(servers: dict[str, Server]) -> None:
    server = servers["onnxruntime"]
    full_s = _best_time(client_for(server), LONG)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    r = server.post("/v1/completions", json={"model": NAME, "prompt": PROMPT, "max_tokens": LONG,
                                             "temperature": 0, "stream": True}, stream=True, headers=headers)
    assert r.status_code == 200
    next(r.iter_lines())  # the first event: generation is under way
    r.close()  # hang up

    def logged() -> dict | None:
        for line in server.log().splitlines()[::-1]:
            if '"outcome":"disconnected"' in line:
                return json.loads(line)
        return None

    server.wait_for(lambda: logged() is not None, timeout=30, what="the disconnected stream in the access log")
    entry = logged()
    assert entry is not None
    if full_s > 0.2:  # a generation this long is cut short; on a much faster machine it may finish first
        assert entry["completion_tokens"] < LONG, entry
    # The model is free again at once.
    start = time.perf_counter()
    client_for(server).completions.create(model=NAME, prompt=PROMPT, max_tokens=2)
    assert time.perf_counter() - start < max(5.0, 2 * full_s)


@pytest.mark.slow
def test_queue_full_timeout_and_body_limit(servers: dict[str, Server], lm_folder: Path, tmp_path: Path) -> None:
    """--max-queue 1: a burst gets 503 + Retry-After beyond one waiting request; a timeout is 504; 413 on size."""
    full_s = _best_time(client_for(servers["onnxruntime"]), LONG)
    timeout = max(full_s / 5, 0.02)
    pool = ServerPool(tmp_path / "logs")
    try:
        tight = pool.start([str(lm_folder), "--lm-backend", "onnxruntime", "--threads", "1", "--max-queue", "1",
                            "--request-timeout", f"{timeout:.3f}", "--max-body-size", "16KiB",
                            "--poll-interval", "0"])
        body = {"model": NAME, "prompt": PROMPT, "max_tokens": LONG, "temperature": 0}
        with ThreadPoolExecutor(6) as burst:
            responses = list(burst.map(lambda _: tight.post("/v1/completions", json=body), range(6)))
        codes = sorted(r.status_code for r in responses)
        assert set(codes) <= {503, 504}, codes
        assert codes.count(503) >= 1 and codes.count(504) >= 1, codes
        for r in responses:
            if r.status_code == 503:
                openai_error(r, 503, "overloaded", "--max-queue")
                assert int(r.headers["retry-after"]) >= 1
            else:
                openai_error(r, 504, "timeout", "--request-timeout")
        # The timed-out generations stopped: a short request is answered.
        ok = tight.post("/v1/completions", json={**body, "max_tokens": 2})
        assert ok.status_code == 200, ok.text
        # A stream that runs out of time: 200 and the first tokens, then an error event, then [DONE].
        r = tight.post("/v1/completions", json={**body, "stream": True}, stream=True)
        assert r.status_code == 200
        events = sse_events(r)
        assert events[-1] == "[DONE]" and events[-2]["error"]["code"] == "timeout", events[-3:]
        assert any(e["choices"][0]["text"] for e in events[:-2]), events[:3]
        with pytest.raises(openai.APIError, match="request-timeout"):
            list(client_for(tight).completions.create(model=NAME, prompt=PROMPT, max_tokens=LONG, temperature=0,
                                                      stream=True))
        big = {"model": NAME, "prompt": "x" * 20_000, "max_tokens": 1}
        openai_error(tight.post("/v1/completions", json=big), 413, "request_too_large", "--max-body-size")
        samples = metric_samples(tight)
        assert metric_value(samples, "mlxport_requests_total", model=NAME, protocol="openai", code="503") >= 1
    finally:
        pool.close()


def test_a_broken_lm_folder_keeps_ping_503(lm_folder: Path, tmp_path: Path) -> None:
    import shutil

    broken = tmp_path / "broken-lm"
    shutil.copytree(lm_folder, broken)
    (broken / "model.onnx").write_bytes(b"not an onnx model")
    pool = ServerPool(tmp_path / "logs")
    try:
        server = pool.start([str(broken), "--poll-interval", "0"], ready=False)
        server.wait_for(lambda: server.get("/ping").json().get("status") == "unhealthy", what="/ping unhealthy")
        ping = server.get("/ping")
        assert ping.status_code == 503
        (row,) = ping.json()["models"]
        assert row["name"] == "broken-lm" and row["state"] == "UNAVAILABLE" and row["reason"]
        assert server.get("/v2/health/ready").status_code == 503
        r = server.post("/v1/completions", json={"model": "broken-lm", "prompt": "hi"})
        openai_error(r, 503, "model_not_ready", "could not be loaded")
        assert r.headers["retry-after"]
    finally:
        pool.close()


def test_a_repository_serves_its_language_models_under_v1(lm_folder: Path, tmp_path: Path) -> None:
    import shutil

    import mlx.core as mx

    import mlxport

    repo = tmp_path / "repo"
    shutil.copytree(lm_folder, repo / "chat" / "1")
    (repo / "double" / "1").mkdir(parents=True)
    mlxport.export(lambda x: x * 2, (mx.zeros((1, 4)),), repo / "double" / "1" / "model.onnx",
                   dynamic_axes={"x": {0: "batch"}})
    pool = ServerPool(tmp_path / "logs")
    try:
        server = pool.start([str(repo), "--poll-interval", "0", "--lm-backend", "onnxruntime"])
        assert server.get("/ping").status_code == 200
        r = server.post("/v2/models/double/infer", json={"inputs": [
            {"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]})
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [2, 4, 6, 8]
        done = server.post("/v1/completions", json={"model": "chat", "prompt": "hi", "max_tokens": 3,
                                                     "temperature": 0})
        assert done.status_code == 200 and done.json()["usage"]["completion_tokens"] >= 1
        assert server.get("/v2/models/chat").status_code == 404  # an LM: served under /v1
    finally:
        pool.close()
