"""The OpenAPI 3.2 document, built from the route table and the pydantic models.

3.2, for its `itemSchema`: an event stream is described one event at a time (each SSE event's
`data` a JSON Message), so tools validate every event a stream sends.
"""

from __future__ import annotations

import re
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from api import response_models
from api.handlers.calls import IDEMPOTENCY_KEY_MAX
from api.handlers.stats import QUEUE_ID_MAX
from api.handlers.streams import SEQ_PATTERN
from core.call_ids import REF_PATTERN, REF_RULE

if TYPE_CHECKING:
    from api.routes import Route

# Errors any route can answer: no or a bad key (not on public routes), a wrong method, a body
# over the limit, a store down.
_COMMON_ERRORS = (405, 413, 503)
_ERROR_EXAMPLES = {
    400: "Missing required fields: from, to",
    401: "Invalid API key",
    404: "Call not found",
    405: "DELETE is not allowed here; use GET, POST",
    409: "Call 6f1c1d0e-8a9b-4c59-9f3e-0b6a4b7c2d11 already exists",
    413: "Request body is larger than the limit of 65536 bytes",
    422: "Invalid transition: call_hold cannot move a call from QUEUED to ON_HOLD",
    429: "Maximum concurrent calls reached (3)",
    503: "PostgreSQL is unavailable; try again shortly",
}
# The Twilio face's errors are Twilio's shape, with Twilio's code for each.
_TWILIO_ERROR_EXAMPLES = {
    400: (21211, "The 'To' number 12345 is not a valid phone number (E.164: +14155550123)"),
    401: (20003, "The Account SID does not match the Auth Token"),
    404: (20404, "The requested resource /2010-04-01/Accounts/AC…/Calls/CA….json was not found"),
    405: (20004, "DELETE is not allowed here; use GET, POST"),
    413: (20413, "Request body is larger than the limit of 65536 bytes"),
    429: (20429, "Calls per second limit exceeded (2)"),
    503: (20503, "PostgreSQL is unavailable; try again shortly"),
}
_RATE_HEADERS = {
    "Retry-After": (
        "Seconds to wait before trying again: at the concurrency limit, until the key's "
        "earliest call is due to end; at a per-second limit, until a slot leaves the window."
    ),
    "RateLimit-Limit": "The limit that refused (or, on a 201, the per-second one).",
    "RateLimit-Remaining": "What is left of it now.",
    "RateLimit-Reset": "Seconds until it resets.",
    "RateLimit-Policy": (
        'Both limits on new calls (IETF httpapi draft): "concurrency";q=N;'
        'qu="concurrent-requests", "cps";q=N;w=1. Sent with POST /calls answers.'
    ),
}


def build_document(routes: list[Route], server_url: str) -> dict[str, Any]:
    json_models = _models(routes)
    _, schema = models_json_schema(
        [
            (model, "validation" if _is_request(model, routes) else "serialization")
            for model in json_models
        ],
        ref_template="#/components/schemas/{model}",
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        paths.setdefault(_template(route.path), {})[route.method.lower()] = _operation(route)
    return {
        "openapi": "3.2.0",
        "info": {
            "title": "mock-comms",
            "version": "1.0.0",
            "description": (
                "A mock telephony platform: simulated calls with limits, timers and recordings, "
                "contact-centre events with business rules, and live streams of every transition."
            ),
        },
        "servers": [{"url": server_url}],
        "security": [{"bearer": []}, {"apiKey": []}],
        "tags": [{"name": tag} for tag in dict.fromkeys(route.tag for route in routes)],
        "paths": paths,
        "components": {
            "schemas": schema.get("$defs", {}),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "basic": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "The Twilio face: AccountSid:AuthToken (the Auth Token is the"
                    " API key; the Account SID is in GET /2010-04-01/Accounts.json).",
                },
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
                "accessToken": {"type": "apiKey", "in": "query", "name": "access_token"},
                "streamToken": {
                    "type": "apiKey",
                    "in": "query",
                    "name": "token",
                    "description": (
                        "The token in a created call's stream_url and websocket_url: opens that"
                        " call's streams alone, for STREAM_TOKEN_TTL_S (an hour by default)."
                    ),
                },
            },
        },
    }


def _template(path: str) -> str:
    """The path as OpenAPI writes it: `{name:.+}` (aiohttp's pattern) as `{name}`."""
    return re.sub(r"{(\w+):[^}]+}", r"{\1}", path)


def _models(routes: list[Route]) -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {
        "Error": response_models.Error,
        "TwilioError": response_models.TwilioError,
    }
    for route in routes:
        for model in (route.body, route.query, route.callback, *route.ok.values()):
            if isinstance(model, type) and issubclass(model, BaseModel):
                found[model.__name__] = model
    found["Message"] = response_models.Message
    found["StatsMessage"] = response_models.StatsMessage
    return list(found.values())


def _is_request(model: type[BaseModel], routes: list[Route]) -> bool:
    return any(model in (route.body, route.query) for route in routes)


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _operation(route: Route) -> dict[str, Any]:
    slug = re.sub(r"[^a-z0-9]+", "_", _template(route.path).lower()).strip("_") or "index"
    operation: dict[str, Any] = {
        "summary": route.summary,
        "operationId": f"{route.method.lower()}_{slug}",
        "tags": [route.tag],
        "parameters": _parameters(route),
        "responses": {},
    }
    if route.public:
        operation["security"] = []
    elif route.twilio:
        operation["security"] = [{"basic": []}, {"bearer": []}, {"apiKey": []}]
    elif route.query_token:
        operation["security"] = [{"bearer": []}, {"apiKey": []}, {"accessToken": []}]
        if route.call_token:
            operation["security"].append({"streamToken": []})
    if route.body is not None:
        body_type = "application/x-www-form-urlencoded" if route.twilio else "application/json"
        operation["requestBody"] = {
            "required": True,
            "content": {body_type: {"schema": _ref(route.body)}},
        }
    if route.callback is not None:
        operation["callbacks"] = {"statusCallback": _status_callback(route.callback)}
    for status, answer in route.ok.items():
        operation["responses"][str(status)] = _response(status, answer, route)
    errors = {*route.errors, *_COMMON_ERRORS} | (set() if route.public else {401})
    for status in sorted(errors):
        response = {
            "description": HTTPStatus(status).phrase,
            "content": {"application/json": _error_content(status, twilio=route.twilio)},
        }
        if status == 429:
            response["headers"] = {
                name: {
                    "description": text,
                    "schema": {"type": "string" if name == "RateLimit-Policy" else "integer"},
                }
                for name, text in _RATE_HEADERS.items()
            }
        if status == 401:
            schemes = 'Basic realm="mock-comms", Bearer' if route.twilio else "Bearer"
            response["headers"] = {
                "WWW-Authenticate": {
                    "description": f'The schemes the route takes: {schemes} realm="mock-comms".',
                    "schema": {"type": "string"},
                }
            }
        if status == 405:
            response["headers"] = {
                "Allow": {
                    "description": "The methods this path takes.",
                    "schema": {"type": "string"},
                }
            }
        operation["responses"][str(status)] = response
    return operation


def _error_content(status: int, *, twilio: bool) -> dict[str, Any]:
    """An error answer's JSON: ours, or Twilio's on the Twilio face."""
    if twilio:
        code, message = _TWILIO_ERROR_EXAMPLES[status]
        example: dict[str, Any] = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return {"schema": _ref(response_models.TwilioError), "example": example}
    reason = HTTPStatus(status).phrase if status != 429 else "Rate limit exceeded"
    example = {"error": reason, "message": _ERROR_EXAMPLES[status]}
    return {"schema": _ref(response_models.Error), "example": example}


# The headers of every status callback (calls/callbacks.py, calls/signing.py).
_CALLBACK_HEADERS = {
    "X-MockComms-Signature": (
        "t=<unix seconds>,v1=<hex HMAC-SHA256(signing secret, '<t>.<raw body>')>, the key the"
        " whole whsec_ secret: verify over the raw body, in constant time, refusing a t more than"
        " 5 minutes off."
    ),
    "X-MockComms-Delivery": "The delivery's id: the same on every attempt at it.",
    "X-MockComms-Attempt": "1 on the first attempt, then 2, 3, ...",
}


def _status_callback(body: type[BaseModel]) -> dict[str, Any]:
    """The callback a call's `status_callback` receives, one POST per transition."""
    return {
        "{$request.body#/status_callback}": {
            "post": {
                "summary": "A transition of the call (in seq order per call, at least once)",
                "description": (
                    "Sent for each transition of the call whose status is in"
                    " status_callback_events (all by default). A 2xx ends the delivery; a 410"
                    " stops the call's later callbacks; anything else, a timeout"
                    " (CALLBACK_TIMEOUT_MS) or a connection error is retried with exponential"
                    " backoff (CALLBACK_MAX_ATTEMPTS, CALLBACK_BACKOFF_BASE_MS). A later"
                    " callback of the call waits for the earlier one."
                ),
                "parameters": [
                    {
                        "name": name,
                        "in": "header",
                        "required": True,
                        "description": text,
                        "schema": {"type": "string"},
                    }
                    for name, text in _CALLBACK_HEADERS.items()
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": _ref(body)}},
                },
                "responses": {
                    "2XX": {"description": "Delivered."},
                    "410": {"description": "Gone: no more callbacks for this call."},
                    "default": {"description": "Not delivered: tried again later."},
                },
            }
        }
    }


def _response(status: int, answer: type[BaseModel] | str, route: Route) -> dict[str, Any]:
    headers = {
        "X-Request-ID": {
            "description": "The request's id (yours, or made).",
            "schema": {"type": "string"},
        }
    }
    if route.path == "/calls" and route.method == "POST":
        headers |= {
            name: spec
            for name, spec in {
                "RateLimit-Limit": {
                    "description": _RATE_HEADERS["RateLimit-Limit"],
                    "schema": {"type": "integer"},
                },
                "RateLimit-Remaining": {
                    "description": _RATE_HEADERS["RateLimit-Remaining"],
                    "schema": {"type": "integer"},
                },
                "RateLimit-Reset": {
                    "description": _RATE_HEADERS["RateLimit-Reset"],
                    "schema": {"type": "integer"},
                },
                "RateLimit-Policy": {
                    "description": _RATE_HEADERS["RateLimit-Policy"],
                    "schema": {"type": "string"},
                },
                "Idempotent-Replayed": {
                    "description": "true when this answers a repeated Idempotency-Key.",
                    "schema": {"type": "string"},
                },
            }.items()
        }
    response: dict[str, Any] = {"description": HTTPStatus(status).phrase, "headers": headers}
    if isinstance(answer, type):
        response["content"] = {"application/json": {"schema": _ref(answer)}}
        if answer is response_models.Metrics:
            response["content"]["text/plain"] = {
                "schema": {
                    "type": "string",
                    "description": "Prometheus text (Accept: text/plain or ?format=prometheus).",
                }
            }
            response["content"]["application/openmetrics-text"] = {
                "schema": {
                    "type": "string",
                    "description": "OpenMetrics (Accept: application/openmetrics-text).",
                }
            }
    elif answer == "text/event-stream":
        response["content"] = {"text/event-stream": {"itemSchema": _stream_event(route)}}
        response["description"] += ": events named `call` carry a Message" + (
            "; `stats` a queue's figures (StatsMessage); `ready` and `resync` frame the key stream"
            if route.path == "/stream"
            else "; ids are seqs"
        )
    elif answer == "websocket":
        response["description"] = (
            "Switching Protocols: one JSON Message per text frame, closed after COMPLETED."
        )
    elif answer == "application/json":
        response["content"] = {"application/json": {"schema": {"type": "object"}}}
    else:
        response["content"] = {answer: {"schema": {"type": "string", "format": "binary"}}}
    return response


# A call id in a path or query: one the platform made (a UUID) or one its sender gave.
_CALL_ID = {"type": "string", "pattern": REF_PATTERN, "description": f"The call's id: {REF_RULE}."}
_PATH_SCHEMAS = {
    "call_id": _CALL_ID,
    "queue_id": {"type": "string", "minLength": 1, "maxLength": QUEUE_ID_MAX},
}


def _event(name: str, data: dict[str, Any], **fields: dict[str, Any]) -> dict[str, Any]:
    """One kind of server-sent event: its name and its `data`, JSON of the schema `data`."""
    return {
        "type": "object",
        "required": ["event", "data", *fields],
        "properties": {
            "event": {"const": name},
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": data,
            },
            **fields,
        },
    }


def _stream_event(route: Route) -> dict[str, Any]:
    """The `itemSchema` of a route's event stream: the events it sends, one at a time."""
    message = _ref(response_models.Message)
    if route.path != "/stream":
        # One call's stream: each event's id is its seq, so Last-Event-ID resumes there.
        return _event("call", message, id={"type": "string", "pattern": SEQ_PATTERN})
    return {
        "oneOf": [
            _event("ready", {"type": "object", "maxProperties": 0}),
            _event("call", message),
            _event("stats", _ref(response_models.StatsMessage)),
            _event(
                "resync",
                {
                    "type": "object",
                    "required": ["reason"],
                    "properties": {"reason": {"type": "string"}},
                },
            ),
        ]
    }


# The rules the handlers enforce on the headers they read (a client built from the document
# must not send what the API refuses).
_HEADER_SCHEMAS: dict[str, dict[str, Any]] = {
    "Idempotency-Key": {
        "type": "string",
        "minLength": 1,
        "maxLength": IDEMPOTENCY_KEY_MAX,
    },
    "Last-Event-ID": {"type": "string", "pattern": SEQ_PATTERN},
}


def _parameters(route: Route) -> list[dict[str, Any]]:
    parameters = [
        {
            "name": name,
            "in": "path",
            "required": True,
            "schema": _PATH_SCHEMAS.get(name, {"type": "string"}),
        }
        for name in re.findall(r"{(\w+)}", _template(route.path))
    ]
    if route.path == "/ws":
        parameters.append(
            {
                "name": "call_id",
                "in": "query",
                "required": True,
                "schema": _CALL_ID,
            }
        )
    if route.query is not None:
        schema = route.query.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, spec in schema["properties"].items():
            parameters.append({"name": name, "in": "query", "required": False, "schema": spec})
    for name, text in route.headers.items():
        schema = _HEADER_SCHEMAS.get(name, {"type": "string"})
        spec = {"name": name, "in": "header", "required": False, "description": text}
        parameters.append(spec | {"schema": schema})
        if name == "Last-Event-ID":
            parameters.append(spec | {"name": "last_event_id", "in": "query", "schema": schema})
    parameters.append(
        {
            "name": "X-Request-ID",
            "in": "header",
            "required": False,
            "description": "Your id for this request; echoed and logged.",
            "schema": {"type": "string"},
        }
    )
    return parameters
