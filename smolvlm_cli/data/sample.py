# The one internal sample format: a conversation of turns whose parts are text, image or video.
# Every dataset schema is converted to it by an adapter in sources.py; nothing downstream knows the source.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Union

Role = Literal["system", "user", "assistant"]
ROLES: tuple[str, ...] = ("system", "user", "assistant")


@dataclass(frozen=True)
class Text:
    text: str
    type: Literal["text"] = "text"


@dataclass(frozen=True)
class Image:
    """An image by path (resolved against a media root), encoded bytes, or an already decoded PIL image."""

    path: str | None = None
    data: bytes | None = None
    pil: Any = None
    type: Literal["image"] = "image"


@dataclass(frozen=True)
class Video:
    """A video file; frames are sampled at encode time (data/video.py)."""

    path: str
    type: Literal["video"] = "video"


Part = Union[Text, Image, Video]


@dataclass
class Turn:
    role: Role
    parts: list[Part]


@dataclass
class Sample:
    id: str
    source: str
    turns: list[Turn]
    meta: dict[str, Any] = field(default_factory=dict)

    def media(self) -> list[Part]:
        return [p for t in self.turns for p in t.parts if not isinstance(p, Text)]

    @property
    def modality(self) -> str:
        """text | image | multi-image | video: the bucket the mixture report and the video-stage mix use."""
        media = self.media()
        if any(isinstance(p, Video) for p in media):
            return "video"
        n_images = sum(isinstance(p, Image) for p in media)
        return "text" if n_images == 0 else "image" if n_images == 1 else "multi-image"


class SampleError(ValueError):
    """A sample that cannot be used; `reason` is the short key it is counted under (e.g. 'missing media')."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def validate(sample: Sample) -> Sample:
    """Structural checks every adapter's output must pass."""
    if not sample.turns:
        raise SampleError("empty conversation", sample.id)
    for turn in sample.turns:
        if turn.role not in ROLES:
            raise SampleError("unknown role", f"{turn.role!r} in {sample.id}")
        if not turn.parts:
            raise SampleError("empty turn", f"{turn.role} turn in {sample.id}")
    if not any(t.role == "assistant" for t in sample.turns):
        raise SampleError("no assistant turn", sample.id)
    return sample
