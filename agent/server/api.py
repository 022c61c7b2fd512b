"""What every ``/api`` view shares: pydantic-validated views, our error shape, and who is asking.

Views are aiohttp-pydantic ``PydanticView`` classes: their annotated signatures validate the path,
query and body, and the OpenAPI document at ``/api/openapi.json`` is generated from the same signatures.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_pydantic import PydanticView
from pydantic import ValidationError

from agent.calls.records import CallRecords
from agent.calls.store import UserOut, Viewer
from agent.config import Config
from agent.server.errors import error_response, validation_detail, validation_message

CONFIG_KEY = web.AppKey("config", Config)
RECORDS_KEY = web.AppKey("records", CallRecords)
VIEWER = web.RequestKey("viewer", object)  # the Viewer (None when auth.mode is off)
USER = web.RequestKey("user", object)  # the UserOut of a valid token
TOKEN_HASH = web.RequestKey("token_hash", str)


class ApiView(PydanticView):
    async def on_validation_error(self, exception: ValidationError, context: str) -> web.StreamResponse:
        return error_response(400, validation_message(exception, context), validation_detail(exception))

    @property
    def config(self) -> Config:
        return self.request.app[CONFIG_KEY]

    @property
    def records(self) -> CallRecords:
        return self.request.app[RECORDS_KEY]

    @property
    def viewer(self) -> Viewer | None:
        return self.request.get(VIEWER)

    @property
    def user(self) -> UserOut | None:
        return self.request.get(USER)

    @property
    def owner_id(self) -> int | None:
        """Who a new record belongs to: the logged-in user, or nobody while auth is off."""
        user = self.user
        return user.id if user is not None else None
