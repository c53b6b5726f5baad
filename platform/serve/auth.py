"""Bearer-token guard for the mutating routes (enroll, delete, ...).

Use as `dependencies=[Depends(require_token)]`; the expected token is read from
`app.state.api_token`, which the gateway sets from SIGHTLINE_API_TOKEN (via Settings).
"""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from sightline.serve.errors import Unauthorized

bearer_scheme = HTTPBearer(auto_error=False, description="the server's SIGHTLINE_API_TOKEN")


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> None:
    """`Authorization: Bearer <SIGHTLINE_API_TOKEN>` or 401 (also when no token is configured)."""
    expected: str | None = getattr(request.app.state, "api_token", None)
    if not expected:
        raise Unauthorized(
            "token_not_configured",
            "this route needs an API token but the server has none; "
            "start it with SIGHTLINE_API_TOKEN set",
        )
    if credentials is None:
        raise Unauthorized(
            "missing_token", "send the header 'Authorization: Bearer <SIGHTLINE_API_TOKEN>'"
        )
    if not hmac.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise Unauthorized("invalid_token", "the bearer token does not match SIGHTLINE_API_TOKEN")
