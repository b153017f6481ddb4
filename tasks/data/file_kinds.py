"""What a file that the video decoder cannot open is: empty, text, an image, a truncated container, or
nothing the decoder knows; so the error says which, not just that it failed."""

from __future__ import annotations

from pathlib import Path

HEAD_BYTES = 64
CONTAINERS = {
    "MP4/MOV": lambda head: head[4:8] == b"ftyp",
    "AVI": lambda head: head[:4] == b"RIFF" and head[8:12] == b"AVI ",
    "Matroska/WebM": lambda head: head[:4] == b"\x1aE\xdf\xa3",
    "FLV": lambda head: head[:3] == b"FLV",
    "MPEG": lambda head: head[:4] in (b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3"),
}
IMAGES = {
    "PNG image": b"\x89PNG\r\n\x1a\n",
    "JPEG image": b"\xff\xd8\xff",
    "GIF image": b"GIF8",
    "BMP image": b"BM",
}


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(character.isprintable() or character in "\r\n\t" for character in text)


def _head(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(HEAD_BYTES)


def _image_kind_of(head: bytes) -> str | None:
    return next((kind for kind, signature in IMAGES.items() if head.startswith(signature)), None)


def image_kind(path: str | Path) -> str | None:
    """``PNG image`` (JPEG, GIF, BMP) when ``path`` is a still image, whatever its name; else ``None``. The
    decoder opens an image as a one-frame video."""
    return _image_kind_of(_head(Path(path)))


def unreadable_reason(path: str | Path) -> str:
    """Why the decoder could not open ``path``, from its size and first bytes."""
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "is empty (0 bytes)"
    head = _head(path)
    kind = _image_kind_of(head)
    if kind is not None:
        return f"is a {kind}, not a video"
    for container, matches in CONTAINERS.items():
        if matches(head):
            return f"is a truncated or damaged {container} file ({size} bytes): its container cannot be read"
    if _is_text(head):
        return f"holds text, not video (it starts {head[:32].decode('utf-8')!r})"
    return f"is in no video container the decoder knows (it starts {head[:8].hex(' ')})"
