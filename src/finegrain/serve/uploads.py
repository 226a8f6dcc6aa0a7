"""Reading images out of a request (multipart parts or a raw image body) with every size and type limit applied
before anything is decoded."""
from __future__ import annotations

from dataclasses import dataclass
from typing import AsyncIterator

from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

from .errors import ApiError

RAW_TYPES = ("application/octet-stream",)
RAW_FILENAME = "upload"


@dataclass(frozen=True)
class Upload:
    """One image's bytes as the client sent them, with the name it gave (for messages and answers only)."""

    filename: str
    data: bytes


async def read_uploads(request: Request, max_bytes: int, max_images: int) -> list[Upload]:
    """The request's images: multipart file parts, or the whole body when it is sent as image/* bytes."""
    media = media_type(request.headers.get("content-type"))
    if media == "multipart/form-data":
        return await _multipart_uploads(request, await read_capped_body(request, max_bytes), max_images)
    if media.startswith("image/") or media in RAW_TYPES:
        body = await read_capped_body(request, max_bytes)
        if not body:
            raise ApiError(400, "empty_upload", "the request body is empty", fix="send the image's bytes")
        return [Upload(RAW_FILENAME, body)]
    raise ApiError(415, "unsupported_media_type",
                   f"content type {media or '(none)'} is not an image upload",
                   fix="send multipart/form-data with image files, or the image bytes with Content-Type image/*")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";")[0].strip().lower()


async def read_capped_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused as soon as it passes `max_bytes` (a declared Content-Length is checked first, so a huge
    upload is refused before it is read)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "upload_too_large", f"the request body is over the limit of {max_bytes:,} bytes",
                    fix="send a smaller image (or fewer), or start the server with a higher --max-upload-mb")


async def _multipart_uploads(request: Request, body: bytes, max_images: int) -> list[Upload]:
    try:
        form = await MultiPartParser(request.headers, _once(body), max_files=max_images, max_fields=16).parse()
    except MultiPartException as exc:
        if "Too many files" in exc.message:
            raise ApiError(413, "too_many_images", f"more than {max_images} images in one request",
                           fix=f"send at most {max_images} images per request") from exc
        raise ApiError(400, "bad_multipart", f"the multipart body cannot be parsed: {exc.message}",
                       fix="send multipart/form-data with one part per image file") from exc
    try:
        uploads = [await _file_upload(part) for _, part in form.multi_items() if isinstance(part, UploadFile)]
    finally:
        await form.close()
    if not uploads:
        raise ApiError(400, "no_image", "the multipart body has no file part",
                       fix="add the image as a file field, e.g. curl -F files=@photo.jpg")
    return uploads


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body


async def _file_upload(part: UploadFile) -> Upload:
    """A part declared as something other than an image (text/plain, application/json...) is refused by type;
    what it really holds is decided later, by decoding."""
    name = part.filename or RAW_FILENAME
    media = media_type(part.content_type)
    if media and not (media.startswith("image/") or media in RAW_TYPES):
        raise ApiError(415, "unsupported_media_type", f"{name}: content type {media} is not an image",
                       fix="send image files (image/jpeg, image/png, ...)")
    data = await part.read()
    if not data:
        raise ApiError(400, "empty_upload", f"{name}: empty file (0 bytes)", fix="send the image's bytes")
    return Upload(name, data)
