"""The model server's request error: a gRPC canonical code and TF Serving's message for it."""
from __future__ import annotations

import logging

import grpc

from edge.errors import EdgeError

logger = logging.getLogger(__name__)

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class ServingError(EdgeError):
    """An error with a gRPC canonical code and TF Serving's message (REST maps the code to HTTP)."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def error_code(self) -> int:
        return int(self.code.value[0])

    def __repr__(self) -> str:
        return f"ServingError({self.code.name}, {self.message!r})"


def code_from_int(value: int) -> grpc.StatusCode:
    return _CODES.get(int(value), grpc.StatusCode.UNKNOWN)
