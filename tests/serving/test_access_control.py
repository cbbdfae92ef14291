"""Every endpoint but health refuses a missing or wrong key (401), a key scoped to another
collection cannot read it (403, or 404 for a document it may not know of), and CORS lets only the
configured origins in."""

from typing import Any

import httpx
from fastapi.routing import APIRoute

from serving.app import create_app
from serving.settings import ApiKey, ServingSettings, hash_api_key
from tests.serving.conftest import ServerFactory

ADMIN, KITCHEN = "admin-access-key", "kitchen-access-key"
KEYS = [
    ApiKey(name="admin", sha256=hash_api_key(ADMIN)),
    ApiKey(name="kitchen", sha256=hash_api_key(KITCHEN), collections=["kitchen"]),
]
OPEN = {"/healthz", "/readyz", "/", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}
# A valid request for each protected endpoint, aimed at the energy collection.
REQUESTS: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/search"): {"json": {"query": "solar", "collection": "energy"}},
    ("POST", "/v1/chat"): {
        "json": {"messages": [{"role": "user", "content": "solar?"}], "collection": "energy"}
    },
    ("POST", "/v1/uploads"): {
        "json": {
            "filename": "a.md",
            "content_type": "text/markdown",
            "collection": "energy",
            "size": 10,
        }
    },
    ("GET", "/v1/documents/{document:path}/chunks"): {
        "path": "/v1/documents/energy/solar.md/chunks"
    },
    ("GET", "/v1/index"): {},
    ("GET", "/metrics"): {},
}


def routes() -> set[tuple[str, str]]:
    app = create_app(ServingSettings(), embedder=None)
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, APIRoute)
        for method in route.methods
    }


def call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    options = dict(REQUESTS[(method, path)])
    return client.request(method, options.pop("path", path), **options)


def test_every_endpoint_but_health_needs_a_key(serve: ServerFactory) -> None:
    protected = {route for route in routes() if route[1] not in OPEN}
    # A new endpoint must be added here, so it cannot ship without an access check.
    assert protected == set(REQUESTS)
    server = serve(api_keys=KEYS, upload_bucket="uploads")
    with server.client() as anonymous, server.client("wrong-key") as stranger:
        for method, path in sorted(protected):
            for client in (anonymous, stranger):
                response = call(client, method, path)
                assert response.status_code == 401, (method, path, response.text)
                assert response.json()["error"]["code"] == "unauthorized"
        assert anonymous.get("/healthz").status_code == 200
        assert anonymous.get("/readyz").status_code == 200
    with server.client(KITCHEN) as kitchen:
        for endpoint in [("POST", "/v1/search"), ("POST", "/v1/chat"), ("POST", "/v1/uploads")]:
            response = call(kitchen, *endpoint)
            assert response.status_code == 403, (endpoint, response.text)
            assert "'energy'" in response.json()["error"]["message"]
        # Another collection's document is not there for this key (its existence not revealed).
        assert call(kitchen, "GET", "/v1/documents/{document:path}/chunks").status_code == 404
    with server.client(ADMIN) as admin:
        assert call(admin, "POST", "/v1/search").status_code == 200
        assert call(admin, "GET", "/v1/documents/{document:path}/chunks").status_code == 200
        assert "lorechat_http_requests" in call(admin, "GET", "/metrics").text


def test_cors_admits_only_configured_origins(serve: ServerFactory) -> None:
    server = serve(cors_origins=["https://kb.example.com"])
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    with server.client() as client:
        known = client.options(
            "/v1/search", headers={**preflight, "Origin": "https://kb.example.com"}
        )
        assert known.status_code == 200
        assert known.headers["access-control-allow-origin"] == "https://kb.example.com"
        unknown = client.options(
            "/v1/search", headers={**preflight, "Origin": "https://evil.example.net"}
        )
        assert unknown.status_code == 400
        assert "access-control-allow-origin" not in unknown.headers
        simple = client.post(
            "/v1/search", json={"query": "tea"}, headers={"Origin": "https://evil.example.net"}
        )
        assert "access-control-allow-origin" not in simple.headers
