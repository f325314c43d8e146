"""The OpenAPI document: valid 3.2, built from the route table, every route and error in it."""

from __future__ import annotations

from openapi_spec_validator import validate

from api.app import create_app
from api.openapi import build_document
from api.routes import ROUTES
from core.settings import Settings


def document() -> dict:
    return build_document(ROUTES, "http://localhost:3000")


def test_the_document_is_valid_openapi_3_2() -> None:
    spec = document()
    assert spec["openapi"] == "3.2.0"
    validate(spec)


def test_every_route_the_app_serves_is_documented() -> None:
    app = create_app(Settings(_env_file=None))
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD"
    }
    paths = document()["paths"]
    documented = {(method, path) for path, methods in paths.items() for method in methods}
    assert served == documented


def test_request_bodies_come_from_the_models_that_validate_them() -> None:
    schemas = document()["components"]["schemas"]
    assert schemas["CreateCall"]["required"] == ["from", "to"]
    assert schemas["CreateCall"]["additionalProperties"] is False
    assert set(schemas["PostEvent"]["discriminator"]["mapping"]) == {
        "call_initiated",
        "call_routed",
        "call_answered",
        "call_unanswered",
        "call_hold",
        "call_resumed",
        "call_ended",
    }


def test_every_error_answer_is_the_error_shape_and_rate_limits_carry_their_headers() -> None:
    """Ours everywhere, Twilio's on the Twilio face."""
    for path, methods in document()["paths"].items():
        shape = "TwilioError" if path.startswith("/2010-04-01/") else "Error"
        for operation in methods.values():
            for status, response in operation["responses"].items():
                if int(status) >= 400:
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": f"#/components/schemas/{shape}"}
            if "429" in operation["responses"]:
                assert {"Retry-After", "RateLimit-Limit"} <= set(
                    operation["responses"]["429"]["headers"]
                )


def test_public_routes_need_no_key_and_streams_take_an_access_token() -> None:
    paths = document()["paths"]
    assert paths["/health"]["get"]["security"] == []
    assert "401" not in paths["/health"]["get"]["responses"]
    assert {"accessToken": []} in paths["/calls/{call_id}/stream"]["get"]["security"]
    assert "401" in paths["/calls"]["post"]["responses"]


def test_list_filters_are_query_parameters() -> None:
    names = {
        p["name"] for p in document()["paths"]["/calls"]["get"]["parameters"] if p["in"] == "query"
    }
    assert names == {
        "page",
        "limit",
        "status",
        "flag",
        "queue_id",
        "type",
        "from",
        "to",
        "source",
        "end_reason",
        "created_after",
        "created_before",
        "sort",
    }


def test_creating_a_call_documents_its_status_callback() -> None:
    operation = document()["paths"]["/calls"]["post"]

    callback = operation["callbacks"]["statusCallback"]["{$request.body#/status_callback}"]

    body = callback["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/StatusUpdate"}
    headers = {p["name"] for p in callback["post"]["parameters"]}
    assert headers == {"X-MockComms-Signature", "X-MockComms-Delivery", "X-MockComms-Attempt"}
    assert {"2XX", "410"} <= set(callback["post"]["responses"])


def test_the_integrators_routes_are_documented() -> None:
    paths = document()["paths"]
    schemas = document()["components"]["schemas"]

    assert set(paths["/calls/{call_id}/advance"]["post"]["responses"]) >= {"200", "404", "409"}
    assert set(paths["/calls/{call_id}/hangup"]["post"]["responses"]) >= {"200", "404", "409"}
    assert "200" in paths["/calls/{call_id}/callbacks"]["get"]["responses"]
    assert {"scenario", "status_callback", "status_callback_events"} <= set(
        schemas["CreateCall"]["properties"]
    )
    assert "end_reason" in schemas["StatusUpdate"]["properties"]


def test_the_twilio_face_takes_forms_and_basic_credentials() -> None:
    paths = document()["paths"]
    create = paths["/2010-04-01/Accounts/{account_sid}/Calls.json"]["post"]
    assert set(create["requestBody"]["content"]) == {"application/x-www-form-urlencoded"}
    assert {"basic": []} in create["security"]
    schema = document()["components"]["schemas"]["CreateTwilioCall"]
    assert {"To", "From", "Url", "Twiml", "StatusCallback", "StatusCallbackEvent"} <= set(
        schema["properties"]
    )
    listed = paths["/2010-04-01/Accounts/{account_sid}/Calls.json"]["get"]["parameters"]
    assert {"StartTime>", "StartTime<", "PageSize", "Page", "Status"} <= {p["name"] for p in listed}
