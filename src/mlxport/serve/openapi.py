"""OpenAPI 3.0.3 description of every route the server answers (served at ``GET /openapi.json``).

The schemas are written to be fuzzed (schemathesis) against the real server, so they say exactly what the
server reads: required fields, types, name patterns, bounded lists. ``ROUTES`` is the one list of
(method, path) pairs; the app's route table is checked against it.
"""

from __future__ import annotations

import copy
from typing import Any

# Same rules as the repository's NAME_RE / VERSION_RE: no slashes or leading dots, so no path traversal.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
VERSION_PATTERN = r"^[0-9]{1,18}$"

_M = "/v2/models/{model}"
_MV = "/v2/models/{model}/versions/{version}"

ROUTES: tuple[tuple[str, str], ...] = (
    # SageMaker (single and multi-model)
    ("GET", "/ping"),
    ("POST", "/invocations"),
    ("GET", "/models"),
    ("POST", "/models"),
    ("GET", "/models/{name}"),
    ("DELETE", "/models/{name}"),
    ("POST", "/models/{name}/invoke"),
    # Open Inference Protocol v2
    ("GET", "/v2/health/live"),
    ("GET", "/v2/health/ready"),
    ("GET", "/v2"),
    ("GET", _M),
    ("GET", _MV),
    ("GET", _M + "/ready"),
    ("GET", _MV + "/ready"),
    ("POST", _M + "/infer"),
    ("POST", _MV + "/infer"),
    # Repository control (Triton-compatible, plus rollback)
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/{model}/load"),
    ("POST", "/v2/repository/models/{model}/unload"),
    ("POST", "/v2/repository/models/{model}/rollback"),
    # Operations
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    # OpenAI-compatible text generation (exported language models)
    ("GET", "/v1/models"),
    ("GET", "/v1/models/{model}"),
    ("POST", "/v1/completions"),
    ("POST", "/v1/chat/completions"),
)

# Routes that never ask for the bearer token (probes and scrapers).
OPEN_ROUTES: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/ping"), ("GET", "/v2/health/live"), ("GET", "/v2/health/ready"),
    ("GET", "/metrics"), ("GET", "/openapi.json"),
})

V2_DATATYPES: tuple[str, ...] = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)
SAGEMAKER_MEDIA_TYPES: tuple[str, ...] = (
    "application/json", "application/x-npy", "application/x-npz", "application/octet-stream",
)

_MAX_RANK = 32  # numpy allows 64 dims; no model we serve comes near 32
_MAX_TENSORS = 256  # inputs or outputs named in one request
_MAX_DIM = 2**53 - 1  # the largest integer every JSON parser keeps exact


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _binary() -> dict[str, Any]:
    return {"schema": {"type": "string", "format": "binary"}}


def _obj(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def _schemas() -> dict[str, Any]:
    # Request objects allow unknown keys wherever the server ignores them: a schema stricter than the
    # server makes a fuzzer expect 400s that never come (schemathesis' negative_data_rejection).
    name = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 128}
    version = {"type": "string", "pattern": VERSION_PATTERN}
    tensor_name = {"type": "string", "minLength": 1, "maxLength": 256}
    state = {"type": "string", "enum": ["READY", "LOADING", "UNLOADING", "UNAVAILABLE"]}
    parameter_value = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
    signature = {"type": "string", "description": "TF-Serving's signature name; ignored."}
    shape = {"type": "array", "maxItems": _MAX_RANK,
             "items": {"type": "integer", "minimum": 0, "maximum": _MAX_DIM}}
    return {
        "Error": _obj(["error"], {"error": {"type": "string", "description": "What went wrong and what to do."}}),
        "NestedTensor": {
            "description": "A number, a boolean, or a (nested, row-major) list of them. Floats may use the JSON "
                           "extension tokens NaN, Infinity and -Infinity (Python's json module reads and writes them).",
            "anyOf": [{"type": "number"}, {"type": "boolean"},
                      {"type": "array", "items": _ref("NestedTensor")}],
        },
        "NamedTensors": {"type": "object", "minProperties": 1, "additionalProperties": _ref("NestedTensor")},
        # ---- SageMaker ----
        "SageMakerJSONRequest": {
            "description": 'One of: {"inputs": {name: tensor}} | {"inputs": tensor} (one-input model) | '
                           '{"instances": [row, ...]} (rows stacked on axis 0; a row may map names to values) | '
                           "a bare tensor (one-input model) | {name: tensor, ...}.",
            "anyOf": [
                _obj(["inputs"], {"inputs": {"anyOf": [_ref("NestedTensor"), _ref("NamedTensors")]},
                                  "signature_name": signature}, additionalProperties=False),
                _obj(["instances"], {"instances": {
                    "type": "array", "minItems": 1,
                    "items": {"anyOf": [_ref("NestedTensor"), _ref("NamedTensors")]}},
                    "signature_name": signature}, additionalProperties=False),
                {"type": "array", "items": _ref("NestedTensor")},
                _ref("NamedTensors"),
            ],
        },
        "SageMakerJSONResponse": _obj(["outputs"], {
            "outputs": {"type": "object", "additionalProperties": _ref("NestedTensor")},
            "predictions": _ref("NestedTensor"),
        }, description='"outputs" maps each output name to its tensor; a one-output model also sends '
                       '"predictions" (SageMaker / TF-Serving clients read it).'),
        "SageMakerModel": _obj(["modelName", "modelUrl"], {
            "modelName": {"type": "string"},
            "modelUrl": {"type": "string"},
            "version": {"type": "string", "nullable": True, "description": "Default version; null while loading."},
            "state": {"type": "string", "enum": ["READY", "LOADING"]},
        }),
        "SageMakerModelList": _obj(["models"], {"models": {"type": "array", "items": _ref("SageMakerModel")}}),
        "SageMakerLoadRequest": _obj(["model_name", "url"], {
            "model_name": name,
            "url": {"type": "string", "minLength": 1, "maxLength": 4096,
                    "description": "Local path (or file:// URL) of an artifact, a folder with one, or a "
                                   "repository folder <url>/<N>/; it must lie under a --load-root."},
        }),
        "SageMakerStatus": _obj(["status"], {
            "status": {"type": "string"}, "modelName": {"type": "string"}, "version": {"type": "string"},
        }),
        "Ping": _obj(["status"], {
            "status": {"type": "string", "enum": ["healthy", "loading", "unhealthy"]},
            "models": {"type": "array", "items": _ref("RepositoryIndexEntry"),
                       "description": "When not healthy: the model versions that are not READY, with the reason."},
        }),
        # ---- Open Inference Protocol v2 ----
        "V2Datatype": {"type": "string", "enum": list(V2_DATATYPES)},
        "V2Parameters": {"type": "object", "additionalProperties": parameter_value},
        "V2TensorData": {
            "description": "Tensor elements, flat or nested, row-major; their count must equal the product of "
                           "the shape. Floats may use NaN / Infinity / -Infinity.",
            "type": "array",
            "items": {"anyOf": [{"type": "number"}, {"type": "boolean"}, {"type": "string"},
                                _ref("V2TensorData")]},
        },
        "V2RequestInput": _obj(["name", "shape", "datatype"], {
            "name": tensor_name,
            "shape": shape,
            "datatype": _ref("V2Datatype"),
            "parameters": _obj([], {
                "binary_data_size": {"type": "integer", "minimum": 0, "maximum": _MAX_DIM,
                                     "description": "Bytes of this tensor in the binary part of the body "
                                                    "(binary tensor extension); then 'data' is absent."},
            }, additionalProperties=parameter_value),
            "data": _ref("V2TensorData"),
        }),
        "V2RequestOutput": _obj(["name"], {
            "name": tensor_name,
            "parameters": _obj([], {"binary_data": {"type": "boolean"}}, additionalProperties=parameter_value),
        }),
        "V2InferRequest": _obj(["inputs"], {
            "id": {"type": "string", "maxLength": 1024},
            "parameters": _obj([], {"binary_data_output": {"type": "boolean"}},
                               additionalProperties=parameter_value),
            "inputs": {"type": "array", "minItems": 1, "maxItems": _MAX_TENSORS, "items": _ref("V2RequestInput")},
            "outputs": {"type": "array", "maxItems": _MAX_TENSORS, "items": _ref("V2RequestOutput")},
        }),
        "V2ResponseOutput": _obj(["name", "shape", "datatype"], {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": _ref("V2Datatype"),
            "parameters": _obj([], {"binary_data_size": {"type": "integer", "minimum": 0}}),
            "data": _ref("V2TensorData"),
        }),
        "V2InferResponse": _obj(["model_name", "outputs"], {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": _ref("V2Parameters"),
            "outputs": {"type": "array", "items": _ref("V2ResponseOutput")},
        }),
        "V2TensorMetadata": _obj(["name", "datatype", "shape"], {
            "name": {"type": "string"},
            "datatype": _ref("V2Datatype"),
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1},
                      "description": "-1 marks a dynamic dimension."},
        }),
        "V2ModelMetadata": _obj(["name", "platform", "inputs", "outputs"], {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": version},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": _ref("V2TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("V2TensorMetadata")},
            "parameters": _ref("V2Parameters"),
        }),
        "V2ServerMetadata": _obj(["name", "version", "extensions"], {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
            "instance": {"type": "string", "description": "host:pid of the process (Ray Serve replica) that answered."},
        }),
        "V2Live": _obj(["live"], {"live": {"type": "boolean"}}),
        "V2Ready": _obj(["ready"], {"ready": {"type": "boolean"}}),
        "V2ModelReady": _obj(["name", "ready"], {
            "name": {"type": "string"}, "version": {"type": "string"}, "ready": {"type": "boolean"},
        }),
        # ---- repository ----
        "RepositoryIndexEntry": _obj(["name", "version", "state"], {
            "name": {"type": "string"}, "version": {"type": "string"}, "state": state,
            "reason": {"type": "string"},
        }),
        "RepositoryIndex": {"type": "array", "items": _ref("RepositoryIndexEntry")},
        "RepositoryLoadRequest": _obj([], {"parameters": _obj([], {
            # null means "no version", as an absent key does
            "version": {"anyOf": [{**version, "nullable": True}, {"type": "integer", "minimum": 0,
                                                                  "maximum": 10**18 - 1}],
                        "description": "Load this version and pin it as the default; without it the "
                                       "version policy decides."},
        }, nullable=True)}),
        "RepositoryModelState": _obj(["name", "state"], {
            "name": {"type": "string"}, "version": {"type": "string"}, "state": state,
        }),
        **_openai_schemas(),
    }


def _openai_schemas() -> dict[str, Any]:
    """OpenAI's request, response and error objects, as far as mlxport reads and writes them."""
    def nullable(schema: dict[str, Any]) -> dict[str, Any]:
        return {**schema, "nullable": True}

    def off(schema: dict[str, Any], value: Any, what: str) -> dict[str, Any]:
        return {**schema, "enum": [value], "nullable": True, "description": f"Not implemented: only {what}."}

    sampling = {
        "model": {"type": "string", "minLength": 1, "description": "A name from GET /v1/models."},
        "temperature": nullable({"type": "number", "minimum": 0, "maximum": 2,
                                 "description": "0 is greedy; default 1."}),
        "top_p": nullable({"type": "number", "minimum": 0, "exclusiveMinimum": True, "maximum": 1}),
        "top_k": nullable({"type": "integer", "minimum": -1, "description": "Extension; 0 or -1: off."}),
        "seed": nullable({"type": "integer", "description": "Makes sampling reproducible."}),
        # (OpenAPI 3.0's nullable needs a type beside it: it goes on the first alternative.)
        "stop": {"description": "Up to 16 strings; the text ends before the first one generated.",
                 "anyOf": [nullable({"type": "string"}),
                           {"type": "array", "maxItems": 16, "items": {"type": "string"}}]},
        "stream": nullable({"type": "boolean", "description": "Answer with server-sent events."}),
        "stream_options": nullable(_obj([], {"include_usage": nullable({"type": "boolean"})},
                                        description="With stream: include_usage adds a last chunk with usage.")),
        "n": off({"type": "integer"}, 1, "one choice per request"),
        "presence_penalty": off({"type": "number"}, 0, "0"),
        "frequency_penalty": off({"type": "number"}, 0, "0"),
        "logit_bias": nullable({"type": "object", "maxProperties": 0, "description": "Not implemented."}),
        "user": {"type": "string", "description": "Ignored."},
    }
    max_tokens = nullable({"type": "integer", "minimum": 1, "description": "Prompt + max_tokens must fit the "
                           "model's context (else 400 context_length_exceeded)."})
    token_ids = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
    text_part = _obj(["type", "text"], {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}})
    message = _obj(["role", "content"], {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": _ref("OpenAITextPart")}]},
        "name": {"type": "string"},
        "tool_calls": nullable({"type": "array", "maxItems": 0, "description": "Tool calling is not implemented."}),
    })
    usage = _obj(["prompt_tokens", "completion_tokens", "total_tokens"], {
        k: {"type": "integer", "minimum": 0} for k in ("prompt_tokens", "completion_tokens", "total_tokens")})
    finish = {"type": "string", "enum": ["stop", "length"], "nullable": True}
    head = {"id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "system_fingerprint": {"type": "string", "nullable": True}}
    required = ["id", "object", "created", "model", "choices"]
    return {
        "OpenAIError": _obj(["error"], {"error": _obj(["message", "type"], {
            "message": {"type": "string", "description": "What went wrong and what to do."},
            "type": {"type": "string", "enum": ["invalid_request_error", "server_error"]},
            "param": {"type": "string", "nullable": True, "description": "The offending request field."},
            "code": {"type": "string", "nullable": True,
                     "description": "e.g. model_not_found, context_length_exceeded, overloaded, timeout."},
        })}),
        "OpenAIModel": _obj(["id", "object", "created", "owned_by"], {
            "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"}, "owned_by": {"type": "string"}}),
        "OpenAIModelList": _obj(["object", "data"], {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": _ref("OpenAIModel")}}),
        "OpenAIUsage": usage,
        "OpenAITextPart": text_part,
        "OpenAIChatMessage": message,
        "CompletionRequest": _obj(["model", "prompt"], {
            **sampling,
            "prompt": {"description": "One prompt: text, a list of one text, token ids, or a list of one list "
                                      "of token ids.",
                       "anyOf": [{"type": "string", "minLength": 1}, token_ids,
                                 {"type": "array", "minItems": 1, "maxItems": 1,
                                  "items": {"type": "string", "minLength": 1}},
                                 {"type": "array", "minItems": 1, "maxItems": 1, "items": token_ids}]},
            "max_tokens": {**max_tokens, "description": max_tokens["description"] + " Default 16."},
            "echo": off({"type": "boolean"}, False, "false"),
            "logprobs": off({"type": "boolean"}, False, "no logprobs"),
            "best_of": off({"type": "integer"}, 1, "1"),
            "suffix": nullable({"type": "string", "maxLength": 0, "description": "Not implemented."}),
        }),
        "ChatCompletionRequest": _obj(["model", "messages"], {
            **sampling,
            "messages": {"type": "array", "minItems": 1, "items": _ref("OpenAIChatMessage"),
                         "description": "Rendered with the model's chat template (tokenizer_config.json)."},
            "max_tokens": {**max_tokens, "description": max_tokens["description"] + " Default: the rest of "
                                                                                    "the context."},
            "max_completion_tokens": max_tokens,
            "logprobs": off({"type": "boolean"}, False, "false"),
            "top_logprobs": off({"type": "integer"}, 0, "0"),
            "tools": nullable({"type": "array", "maxItems": 0, "description": "Not implemented."}),
            "functions": nullable({"type": "array", "maxItems": 0, "description": "Not implemented."}),
            "tool_choice": off({"type": "string"}, "none", '"none"'),
            "function_call": off({"type": "string"}, "none", '"none"'),
            "response_format": nullable(_obj(["type"], {"type": {"type": "string", "enum": ["text"]}},
                                             additionalProperties=False)),
        }),
        "CompletionResponse": _obj([*required, "usage"], {
            **head, "usage": _ref("OpenAIUsage"),
            "choices": {"type": "array", "items": _obj(["index", "text", "finish_reason"], {
                "index": {"type": "integer"}, "text": {"type": "string"},
                "logprobs": {"type": "object", "nullable": True}, "finish_reason": finish})}}),
        "ChatCompletionResponse": _obj([*required, "usage"], {
            **head, "usage": _ref("OpenAIUsage"),
            "choices": {"type": "array", "items": _obj(["index", "message", "finish_reason"], {
                "index": {"type": "integer"},
                "message": _obj(["role", "content"], {"role": {"type": "string", "enum": ["assistant"]},
                                                      "content": {"type": "string"}}),
                "logprobs": {"type": "object", "nullable": True}, "finish_reason": finish})}}),
    }


_DESCRIPTIONS = {
    400: "Bad request: malformed body, wrong tensor name, shape or dtype, bad name or version; the message names "
         "what was expected and what was given.",
    401: "A bearer token is configured and the request has none or a wrong one.",
    403: "The model path lies outside the folders the server may load from (--load-root).",
    404: "No such model or version.",
    406: "The Accept header names no type this endpoint can send.",
    409: "A model of that name is already loaded.",
    413: "The body is larger than the server's limit (--max-body-size, default 6 MiB).",
    415: "The Content-Type is not one this endpoint reads.",
    500: "The model raised while running; the server keeps serving.",
    503: "The model is still loading, or its queue or the server's concurrency limit is full (see Retry-After).",
    504: "The request did not finish within the server's request timeout.",
    507: "Loading the model would go over the server's --memory-limit.",
}


def _error(code: int, schema: str = "Error") -> dict[str, Any]:
    response: dict[str, Any] = {"description": _DESCRIPTIONS[code], "content": _json(_ref(schema))}
    if code == 401:
        response["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    elif code == 503:
        response["headers"] = {"Retry-After": {"description": "Seconds to wait before retrying.",
                                               "schema": {"type": "integer", "minimum": 0}}}
    return response


def _ok(description: str, content: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": content}


def _path_params(path: str) -> list[dict[str, Any]]:
    params = []
    for key, description, schema in (
        ("{name}", "Model name.", {"type": "string", "pattern": NAME_PATTERN, "maxLength": 128}),
        ("{model}", "Model name.", {"type": "string", "pattern": NAME_PATTERN, "maxLength": 128}),
        ("{version}", "Model version (a folder number).", {"type": "string", "pattern": VERSION_PATTERN}),
    ):
        if key in path:
            params.append({"name": key[1:-1], "in": "path", "required": True,
                           "description": description, "schema": schema})
    return params


def _sagemaker_infer(summary: str, target_header: bool) -> dict[str, Any]:
    params = []
    if target_header:
        params.append({"name": "X-Amzn-SageMaker-Target-Model", "in": "header", "required": False,
                       "description": "Model to run (a name, or 'name.tar.gz' / 'path/name.tar.gz'); needed when "
                                      "more than one model is loaded.",
                       "schema": {"type": "string"}})
    params.append({"name": "X-Amzn-SageMaker-Custom-Attributes", "in": "header", "required": False,
                   "description": "Forwarded by SageMaker; ignored.", "schema": {"type": "string"}})
    return {
        "summary": summary,
        "description": "The Accept header picks the response type (application/json when absent or */*).",
        "parameters": params,
        "requestBody": {
            "required": True,
            "description": "application/json: see SageMakerJSONRequest. application/x-npy: one np.save'd array "
                           "(one-input model). application/x-npz: np.savez archive keyed by input name. "
                           "application/octet-stream: raw little-endian elements of the single input's dtype, "
                           "reshaped to (-1, *fixed dims). Pickled arrays are refused.",
            "content": {"application/json": {"schema": _ref("SageMakerJSONRequest")},
                        **{t: _binary() for t in SAGEMAKER_MEDIA_TYPES[1:]}},
        },
        "responses": {
            "200": _ok("The model's outputs.", {
                "application/json": {"schema": _ref("SageMakerJSONResponse")},
                "application/x-npy": _binary(), "application/x-npz": _binary(),
                "application/octet-stream": _binary()}),
            **{str(c): _error(c) for c in (400, 401, 404, 406, 413, 415, 500, 503, 504)},
        },
    }


def _v2_infer(versioned: bool) -> dict[str, Any]:
    return {
        "summary": "Run the model" + (" version" if versioned else " (its default version)"),
        "parameters": [{
            "name": "Inference-Header-Content-Length", "in": "header", "required": False,
            "description": "Binary tensor extension: the JSON header is this many bytes; the raw little-endian "
                           "tensors follow it, in input order, sized by each input's parameters.binary_data_size.",
            "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_DIM},
        }],
        "requestBody": {
            "required": True,
            "description": "A V2InferRequest; with Inference-Header-Content-Length, that JSON header followed by "
                           "the binary tensor data (sent as application/octet-stream or application/json).",
            "content": {"application/json": {"schema": _ref("V2InferRequest")},
                        "application/octet-stream": _binary()},
        },
        "responses": {
            "200": {
                "description": "Outputs; binary outputs follow the JSON header when any output asked for them.",
                "headers": {"Inference-Header-Content-Length": {
                    "description": "Length of the JSON header when binary outputs follow.",
                    "schema": {"type": "integer", "minimum": 0}}},
                "content": {"application/json": {"schema": _ref("V2InferResponse")},
                            "application/octet-stream": _binary()},
            },
            **{str(c): _error(c) for c in (400, 401, 404, 413, 415, 500, 503, 504)},
        },
    }


def _openai_generate(summary: str, request: str, response: str) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": "One generation at a time per model; others wait in a bounded queue (full: 503 + "
                       "Retry-After). With stream true the answer is server-sent events: 'data: {chunk}' lines, "
                       "then 'data: [DONE]'; an error after the first event arrives as a data line holding an "
                       "OpenAIError.",
        "requestBody": {"required": True, "content": _json(_ref(request))},
        "responses": {
            "200": _ok("The generated text and token usage.", {
                "application/json": {"schema": _ref(response)},
                "text/event-stream": {"schema": {"type": "string"}}}),
            **{str(c): _error(c, "OpenAIError") for c in (400, 401, 404, 413, 500, 503, 504)},
        },
    }


def _operations() -> dict[tuple[str, str], dict[str, Any]]:
    errs = lambda *codes: {str(c): _error(c) for c in codes}  # noqa: E731 - a local shorthand
    plain = {"text/plain": {"schema": {"type": "string"}},
             "application/openmetrics-text": {"schema": {"type": "string"}}}
    model_meta = {"summary": "Model metadata: versions, platform, inputs and outputs (-1 for dynamic dims).",
                  "responses": {"200": _ok("Metadata.", _json(_ref("V2ModelMetadata"))),
                                **errs(400, 401, 404, 503)}}
    model_ready = {"summary": "200 when the model (version) is loaded and warmed, else 503.",
                   "responses": {"200": _ok("Ready.", _json(_ref("V2ModelReady"))),
                                 "503": _ok("Still loading, or failed to load.", _json(_ref("V2ModelReady"))),
                                 **errs(400, 401, 404)}}
    control = {"200": _ok("The model's new state.", _json(_ref("RepositoryModelState")))}
    return {
        ("GET", "/ping"): {
            "summary": "SageMaker health check: 200 only when every model is loaded and warmed.",
            "responses": {"200": _ok("Healthy.", _json(_ref("Ping"))),
                          "503": _ok("Loading or a model failed to load.", _json(_ref("Ping")))}},
        ("POST", "/invocations"): _sagemaker_infer("Run the only model, or the one named by the "
                                                   "X-Amzn-SageMaker-Target-Model header", True),
        ("GET", "/models"): {
            "summary": "List loaded models (SageMaker multi-model API).",
            "responses": {"200": _ok("Models.", _json(_ref("SageMakerModelList"))), **errs(401)}},
        ("POST", "/models"): {
            "summary": "Load a model from a local path (SageMaker multi-model API).",
            "requestBody": {"required": True, "content": _json(_ref("SageMakerLoadRequest"))},
            "responses": {"200": _ok("Loaded and warmed.", _json(_ref("SageMakerStatus"))),
                          **errs(400, 401, 403, 409, 413, 415, 500, 507)}},
        ("GET", "/models/{name}"): {
            "summary": "Describe a loaded model.",
            "responses": {"200": _ok("The model.", _json(_ref("SageMakerModel"))), **errs(400, 401, 404)}},
        ("DELETE", "/models/{name}"): {
            "summary": "Unload a model and forget its name.",
            "responses": {"200": _ok("Unloaded.", _json(_ref("SageMakerStatus"))), **errs(400, 401, 404)}},
        ("POST", "/models/{name}/invoke"): _sagemaker_infer("Run the named model", False),
        ("GET", "/v2/health/live"): {
            "summary": "Liveness: the server process answers.",
            "responses": {"200": _ok("Live.", _json(_ref("V2Live")))}},
        ("GET", "/v2/health/ready"): {
            "summary": "Readiness: 200 only when every model is loaded and warmed.",
            "responses": {"200": _ok("Ready.", _json(_ref("V2Ready"))),
                          "503": _ok("Not ready.", _json(_ref("V2Ready")))}},
        ("GET", "/v2"): {
            "summary": "Server metadata: name, version, extensions.",
            "responses": {"200": _ok("Metadata.", _json(_ref("V2ServerMetadata"))), **errs(401)}},
        ("GET", _M): model_meta,
        ("GET", _MV): model_meta,
        ("GET", _M + "/ready"): model_ready,
        ("GET", _MV + "/ready"): model_ready,
        ("POST", _M + "/infer"): _v2_infer(False),
        ("POST", _MV + "/infer"): _v2_infer(True),
        ("POST", "/v2/repository/index"): {
            "summary": "Every model version on disk or loaded, with its state (Triton-compatible).",
            "description": "A request body, if any, is ignored.",
            "responses": {"200": _ok("Index.", _json(_ref("RepositoryIndex"))), **errs(401)}},
        ("POST", "/v2/repository/models/{model}/load"): {
            "summary": "Load (or reload) a model; with parameters.version, load that version and pin it.",
            "description": "The new version is loaded and warmed before it takes traffic (no failed requests).",
            "requestBody": {"required": False, "content": _json(_ref("RepositoryLoadRequest"))},
            "responses": {**control, **errs(400, 401, 404, 413, 500, 503, 507)}},
        ("POST", "/v2/repository/models/{model}/unload"): {
            "summary": "Unload every version of a model; in-flight requests finish first.",
            "description": "A request body, if any, is ignored.",
            "responses": {**control, **errs(400, 401, 404)}},
        ("POST", "/v2/repository/models/{model}/rollback"): {
            "summary": "Make the previous default version the default again (mlxport extension).",
            "responses": {**control, **errs(400, 401, 404, 500, 503, 507)}},
        ("GET", "/metrics"): {
            "summary": "Prometheus metrics (OpenMetrics when the Accept header asks for it).",
            "responses": {"200": _ok("Exposition text.", plain)}},
        ("GET", "/openapi.json"): {
            "summary": "This document.",
            "responses": {"200": _ok("OpenAPI 3.0.3.", _json({"type": "object"}))}},
        ("GET", "/v1/models"): {
            "summary": "The language models served (OpenAI API).",
            "responses": {"200": _ok("Models.", _json(_ref("OpenAIModelList"))), "401": _error(401, "OpenAIError")}},
        ("GET", "/v1/models/{model}"): {
            "summary": "One language model (OpenAI API).",
            "responses": {"200": _ok("The model.", _json(_ref("OpenAIModel"))),
                          **{str(c): _error(c, "OpenAIError") for c in (401, 404)}}},
        ("POST", "/v1/completions"): _openai_generate(
            "Complete a prompt (OpenAI completions).", "CompletionRequest", "CompletionResponse"),
        ("POST", "/v1/chat/completions"): _openai_generate(
            "Answer chat messages (OpenAI chat completions).", "ChatCompletionRequest", "ChatCompletionResponse"),
    }


def _tag(path: str) -> str:
    if path.startswith("/v2/repository"):
        return "repository"
    if path.startswith("/v2"):
        return "v2"
    if path in ("/metrics", "/openapi.json"):
        return "operations"
    if path.startswith("/v1"):
        return "openai"
    return "sagemaker"


def openapi_spec(*, bearer_required: bool = False) -> dict[str, Any]:
    """Build the OpenAPI 3.0.3 document of the server.

    Args:
        bearer_required: True when the server runs with a token (``--token``): every route except
            probes, metrics and this document then requires ``Authorization: Bearer <token>``. False
            documents the token as optional.

    Returns:
        A fresh dict (callers may change it) ready for ``json.dumps``.
    """
    from .. import __version__

    operations = _operations()
    missing = [r for r in ROUTES if r not in operations]
    if missing or len(operations) != len(ROUTES):  # a programming error, caught by the tests
        raise RuntimeError(f"ROUTES and the operation table differ: {missing or sorted(set(operations) - set(ROUTES))}")
    secured = [{"bearerAuth": []}] if bearer_required else [{}, {"bearerAuth": []}]
    paths: dict[str, dict[str, Any]] = {}
    for method, path in ROUTES:
        op = copy.deepcopy(operations[(method, path)])
        op["operationId"] = _operation_id(method, path)
        op["tags"] = [_tag(path)]
        op["parameters"] = _path_params(path) + op.get("parameters", [])
        if not op["parameters"]:
            del op["parameters"]
        if (method, path) in OPEN_ROUTES:
            op["security"] = []
        paths.setdefault(path, {})[method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "mlxport serve",
            "version": __version__,
            "description": "SageMaker and Open Inference Protocol v2 (KServe v2 / Triton) endpoints over one "
                           'data plane. Every error body is {"error": "<message>"}, except under /v1 (the '
                           "OpenAI-compatible API for exported language models), where errors have OpenAI's "
                           'shape {"error": {"message", "type", "param", "code"}}.',
        },
        "servers": [{"url": "/"}],
        "tags": [{"name": "sagemaker"}, {"name": "v2"}, {"name": "repository"}, {"name": "operations"},
                 {"name": "openai"}],
        "security": secured,
        "paths": paths,
        "components": {
            "schemas": _schemas(),
            "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer",
                                               "description": "Set with --token or MLXPORT_TOKEN."}},
        },
    }


def _operation_id(method: str, path: str) -> str:
    parts = [p.strip("{}") for p in path.strip("/").replace(".", "_").split("/") if p]
    return "_".join([method.lower(), *parts]) if parts else method.lower()
