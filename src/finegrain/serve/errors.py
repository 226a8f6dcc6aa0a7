"""HTTP errors as JSON bodies that name the reason: every bad request gets a 4xx saying what and how to fix it."""
from __future__ import annotations

from typing import Any

from ..errors import ConfigError, FinegrainError, ImageError, PixelLimitError


class ApiError(Exception):
    """An answer other than success: status, a stable machine code, a sentence for people, and a fix."""

    def __init__(self, status: int, code: str, message: str, *, fix: str | None = None,
                 headers: dict[str, str] | None = None, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.fix = status, code, message, fix
        self.headers, self.details = headers or {}, details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message, "fix": self.fix}
        if self.details is not None:
            error["details"] = self.details
        return {"error": error}


def image_error(exc: ImageError, filename: str) -> ApiError:
    """A file that is not a usable image: 413 when it declares too many pixels, else 422 (unreadable)."""
    if isinstance(exc, PixelLimitError):
        return ApiError(413, "too_many_pixels", f"{filename}: {exc.reason}",
                        fix="send a smaller image, or start the server with a higher --max-image-pixels")
    return ApiError(422, "unreadable_image", f"{filename}: {exc.reason}",
                    fix="send a JPEG, PNG, WebP, BMP, TIFF or GIF file that opens in an image viewer")


def library_error(exc: FinegrainError) -> ApiError:
    """A library error raised while answering: the caller's fault (400) for bad options, else the server's."""
    if isinstance(exc, ImageError):
        return image_error(exc, exc.path)
    if isinstance(exc, ConfigError):
        return ApiError(400, "bad_request", exc.what, fix=exc.fix)
    return ApiError(500, "server_error", exc.what, fix=exc.fix)
