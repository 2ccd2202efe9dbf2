"""The request and response models of every protocol, as OpenAPI 3.0 component schemas (``COMPONENTS``).

Route declarations (``protocols/``) name these schemas; ``openapi.py`` puts them in the served document. They
are written to be fuzzed (schemathesis) against the real server, so they say exactly what the server reads:
required fields, types, name patterns, bounded lists. Request objects allow unknown keys wherever the server
ignores them: a schema stricter than the server makes a fuzzer expect 400s that never come.

They are plain OpenAPI 3.0 data rather than pydantic models: pydantic writes JSON Schema 2020-12 (``type:
null``, numeric ``exclusiveMinimum``, ``$defs``), which OpenAPI 3.0.3 does not allow, and the hot path parses
bodies by hand (``codec.py``) anyway, so a model class would be used for the document only.
"""

from __future__ import annotations

from typing import Any

# Same rules as the repository's NAME_RE / VERSION_RE: no slashes or leading dots, so no path traversal.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
VERSION_PATTERN = r"^[0-9]{1,18}$"

V2_DATATYPES: tuple[str, ...] = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
)
SAGEMAKER_MEDIA_TYPES: tuple[str, ...] = (
    "application/json", "application/x-npy", "application/x-npz", "application/octet-stream",
)

_MAX_RANK = 32  # numpy allows 64 dims; no model we serve comes near 32
_MAX_TENSORS = 256  # inputs or outputs named in one request
MAX_DIM = 2**53 - 1  # the largest integer every JSON parser keeps exact


def ref(name: str) -> dict[str, str]:
    """A reference to the component schema ``name``."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    """An OpenAPI ``content`` map with ``schema`` as application/json."""
    return {"application/json": {"schema": schema}}


def binary() -> dict[str, Any]:
    """The media-type object of raw bytes."""
    return {"schema": {"type": "string", "format": "binary"}}


def obj(required: list[str], properties: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """An object schema: its properties, the required ones, and any other keywords."""
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    out.update(extra)
    return out


def components() -> dict[str, Any]:
    """Every component schema of the document, by name (a fresh dict each call)."""
    name = {"type": "string", "pattern": NAME_PATTERN, "maxLength": 128}
    version = {"type": "string", "pattern": VERSION_PATTERN}
    tensor_name = {"type": "string", "minLength": 1, "maxLength": 256}
    state = {"type": "string", "enum": ["READY", "LOADING", "UNLOADING", "UNAVAILABLE"]}
    parameter_value = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]}
    signature = {"type": "string", "description": "TF-Serving's signature name; ignored."}
    shape = {"type": "array", "maxItems": _MAX_RANK,
             "items": {"type": "integer", "minimum": 0, "maximum": MAX_DIM}}
    return {
        "Error": obj(["error"], {"error": {"type": "string", "description": "What went wrong and what to do."}}),
        "NestedTensor": {
            "description": "A number, a boolean, or a (nested, row-major) list of them. Floats may use the JSON "
                           "extension tokens NaN, Infinity and -Infinity (Python's json module reads and writes them).",
            "anyOf": [{"type": "number"}, {"type": "boolean"},
                      {"type": "array", "items": ref("NestedTensor")}],
        },
        "NamedTensors": {"type": "object", "minProperties": 1, "additionalProperties": ref("NestedTensor")},
        # ---- SageMaker ----
        "SageMakerJSONRequest": {
            "description": 'One of: {"inputs": {name: tensor}} | {"inputs": tensor} (one-input model) | '
                           '{"instances": [row, ...]} (rows stacked on axis 0; a row may map names to values) | '
                           "a bare tensor (one-input model) | {name: tensor, ...}.",
            "anyOf": [
                obj(["inputs"], {"inputs": {"anyOf": [ref("NestedTensor"), ref("NamedTensors")]},
                                  "signature_name": signature}, additionalProperties=False),
                obj(["instances"], {"instances": {
                    "type": "array", "minItems": 1,
                    "items": {"anyOf": [ref("NestedTensor"), ref("NamedTensors")]}},
                    "signature_name": signature}, additionalProperties=False),
                {"type": "array", "items": ref("NestedTensor")},
                ref("NamedTensors"),
            ],
        },
        "SageMakerJSONResponse": obj(["outputs"], {
            "outputs": {"type": "object", "additionalProperties": ref("NestedTensor")},
            "predictions": ref("NestedTensor"),
        }, description='"outputs" maps each output name to its tensor; a one-output model also sends '
                       '"predictions" (SageMaker / TF-Serving clients read it).'),
        "SageMakerModel": obj(["modelName", "modelUrl"], {
            "modelName": {"type": "string"},
            "modelUrl": {"type": "string"},
            "version": {"type": "string", "nullable": True, "description": "Default version; null while loading."},
            "state": {"type": "string", "enum": ["READY", "LOADING"]},
        }),
        "SageMakerModelList": obj(["models"], {"models": {"type": "array", "items": ref("SageMakerModel")}}),
        "SageMakerLoadRequest": obj(["model_name", "url"], {
            "model_name": name,
            "url": {"type": "string", "minLength": 1, "maxLength": 4096,
                    "description": "Local path (or file:// URL) of an artifact, a folder with one, or a "
                                   "repository folder <url>/<N>/; it must lie under a --load-root."},
        }),
        "SageMakerStatus": obj(["status"], {
            "status": {"type": "string"}, "modelName": {"type": "string"}, "version": {"type": "string"},
        }),
        "Ping": obj(["status"], {
            "status": {"type": "string", "enum": ["healthy", "loading", "unhealthy"]},
            "models": {"type": "array", "items": ref("RepositoryIndexEntry"),
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
                                ref("V2TensorData")]},
        },
        "V2RequestInput": obj(["name", "shape", "datatype"], {
            "name": tensor_name,
            "shape": shape,
            "datatype": ref("V2Datatype"),
            "parameters": obj([], {
                "binary_data_size": {"type": "integer", "minimum": 0, "maximum": MAX_DIM,
                                     "description": "Bytes of this tensor in the binary part of the body "
                                                    "(binary tensor extension); then 'data' is absent."},
            }, additionalProperties=parameter_value),
            "data": ref("V2TensorData"),
        }),
        "V2RequestOutput": obj(["name"], {
            "name": tensor_name,
            "parameters": obj([], {"binary_data": {"type": "boolean"}}, additionalProperties=parameter_value),
        }),
        "V2InferRequest": obj(["inputs"], {
            "id": {"type": "string", "maxLength": 1024},
            "parameters": obj([], {"binary_data_output": {"type": "boolean"}},
                               additionalProperties=parameter_value),
            "inputs": {"type": "array", "minItems": 1, "maxItems": _MAX_TENSORS, "items": ref("V2RequestInput")},
            "outputs": {"type": "array", "maxItems": _MAX_TENSORS, "items": ref("V2RequestOutput")},
        }),
        "V2ResponseOutput": obj(["name", "shape", "datatype"], {
            "name": {"type": "string"},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "datatype": ref("V2Datatype"),
            "parameters": obj([], {"binary_data_size": {"type": "integer", "minimum": 0}}),
            "data": ref("V2TensorData"),
        }),
        "V2InferResponse": obj(["model_name", "outputs"], {
            "model_name": {"type": "string"},
            "model_version": {"type": "string"},
            "id": {"type": "string"},
            "parameters": ref("V2Parameters"),
            "outputs": {"type": "array", "items": ref("V2ResponseOutput")},
        }),
        "V2TensorMetadata": obj(["name", "datatype", "shape"], {
            "name": {"type": "string"},
            "datatype": ref("V2Datatype"),
            "shape": {"type": "array", "items": {"type": "integer", "minimum": -1},
                      "description": "-1 marks a dynamic dimension."},
        }),
        "V2ModelMetadata": obj(["name", "platform", "inputs", "outputs"], {
            "name": {"type": "string"},
            "versions": {"type": "array", "items": version},
            "platform": {"type": "string"},
            "inputs": {"type": "array", "items": ref("V2TensorMetadata")},
            "outputs": {"type": "array", "items": ref("V2TensorMetadata")},
            "parameters": ref("V2Parameters"),
        }),
        "V2ServerMetadata": obj(["name", "version", "extensions"], {
            "name": {"type": "string"}, "version": {"type": "string"},
            "extensions": {"type": "array", "items": {"type": "string"}},
            "instance": {"type": "string", "description": "host:pid of the process (Ray Serve replica) that answered."},
        }),
        "V2Live": obj(["live"], {"live": {"type": "boolean"}}),
        "V2Ready": obj(["ready"], {"ready": {"type": "boolean"}}),
        "V2ModelReady": obj(["name", "ready"], {
            "name": {"type": "string"}, "version": {"type": "string"}, "ready": {"type": "boolean"},
        }),
        # ---- repository ----
        "RepositoryIndexEntry": obj(["name", "version", "state"], {
            "name": {"type": "string"}, "version": {"type": "string"}, "state": state,
            "reason": {"type": "string"},
        }),
        "RepositoryIndex": {"type": "array", "items": ref("RepositoryIndexEntry")},
        "RepositoryLoadRequest": obj([], {"parameters": obj([], {
            # null means "no version", as an absent key does
            "version": {"anyOf": [{**version, "nullable": True}, {"type": "integer", "minimum": 0,
                                                                  "maximum": 10**18 - 1}],
                        "description": "Load this version and pin it as the default; without it the "
                                       "version policy decides."},
        }, nullable=True)}),
        "RepositoryModelState": obj(["name", "state"], {
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
        "stream_options": nullable(obj([], {"include_usage": nullable({"type": "boolean"})},
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
    text_part = obj(["type", "text"], {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string"}})
    message = obj(["role", "content"], {
        "role": {"type": "string", "enum": ["system", "developer", "user", "assistant", "tool"]},
        "content": {"anyOf": [{"type": "string"}, {"type": "array", "minItems": 1, "items": ref("OpenAITextPart")}]},
        "name": {"type": "string"},
        "tool_calls": nullable({"type": "array", "maxItems": 0, "description": "Tool calling is not implemented."}),
    })
    usage = obj(["prompt_tokens", "completion_tokens", "total_tokens"], {
        k: {"type": "integer", "minimum": 0} for k in ("prompt_tokens", "completion_tokens", "total_tokens")})
    finish = {"type": "string", "enum": ["stop", "length"], "nullable": True}
    head = {"id": {"type": "string"}, "object": {"type": "string"}, "created": {"type": "integer"},
            "model": {"type": "string"}, "system_fingerprint": {"type": "string", "nullable": True}}
    required = ["id", "object", "created", "model", "choices"]
    return {
        "OpenAIError": obj(["error"], {"error": obj(["message", "type"], {
            "message": {"type": "string", "description": "What went wrong and what to do."},
            "type": {"type": "string", "enum": ["invalid_request_error", "server_error"]},
            "param": {"type": "string", "nullable": True, "description": "The offending request field."},
            "code": {"type": "string", "nullable": True,
                     "description": "e.g. model_not_found, context_length_exceeded, overloaded, timeout."},
        })}),
        "OpenAIModel": obj(["id", "object", "created", "owned_by"], {
            "id": {"type": "string"}, "object": {"type": "string", "enum": ["model"]},
            "created": {"type": "integer"}, "owned_by": {"type": "string"}}),
        "OpenAIModelList": obj(["object", "data"], {
            "object": {"type": "string", "enum": ["list"]},
            "data": {"type": "array", "items": ref("OpenAIModel")}}),
        "OpenAIUsage": usage,
        "OpenAITextPart": text_part,
        "OpenAIChatMessage": message,
        "CompletionRequest": obj(["model", "prompt"], {
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
        "ChatCompletionRequest": obj(["model", "messages"], {
            **sampling,
            "messages": {"type": "array", "minItems": 1, "items": ref("OpenAIChatMessage"),
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
            "response_format": nullable(obj(["type"], {"type": {"type": "string", "enum": ["text"]}},
                                             additionalProperties=False)),
        }),
        "CompletionResponse": obj([*required, "usage"], {
            **head, "usage": ref("OpenAIUsage"),
            "choices": {"type": "array", "items": obj(["index", "text", "finish_reason"], {
                "index": {"type": "integer"}, "text": {"type": "string"},
                "logprobs": {"type": "object", "nullable": True}, "finish_reason": finish})}}),
        "ChatCompletionResponse": obj([*required, "usage"], {
            **head, "usage": ref("OpenAIUsage"),
            "choices": {"type": "array", "items": obj(["index", "message", "finish_reason"], {
                "index": {"type": "integer"},
                "message": obj(["role", "content"], {"role": {"type": "string", "enum": ["assistant"]},
                                                      "content": {"type": "string"}}),
                "logprobs": {"type": "object", "nullable": True}, "finish_reason": finish})}}),
    }


ERROR_DESCRIPTIONS: dict[int, str] = {
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

