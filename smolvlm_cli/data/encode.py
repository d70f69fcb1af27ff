# Sample -> model inputs through SmolVLMProcessor, with labels on assistant answers only, fitted to a token budget.
# Each message is rendered by the model's own chat template; media expansion is the processor's.
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .sample import Image, Sample, SampleError, Text, Video

IGNORE = -100


@dataclass
class EncodeConfig:
    max_seq_len: int = 2048
    video_fps: float | None = None  # None: the processor's (data.video.video_sampling), as eval and generate
    video_max_frames: int | None = None
    video_backend: str = "auto"
    media_root: str | None = None
    frame_cache: str | bool = True  # True: $SMOLVLM_CACHE/frames; False: decode every time; or a folder


@dataclass
class Encoded:
    input_ids: Any  # LongTensor [L]
    labels: Any  # LongTensor [L]
    pixel_values: Any = None  # FloatTensor [n_images, 3, H, W] or None
    pixel_attention_mask: Any = None  # BoolTensor [n_images, H, W] or None
    source: str = ""
    modality: str = "text"
    fitted: str | None = None  # how the sample was shrunk to fit, if it was
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def n_supervised(self) -> int:
        return int((self.labels != IGNORE).sum())


def to_messages(sample: Sample) -> list[dict]:
    """The processor's chat format: {"role", "content": [{"type": "text"|"image"|"video", ...}]}."""
    out = []
    for turn in sample.turns:
        content = []
        for part in turn.parts:
            if isinstance(part, Text):
                content.append({"type": "text", "text": part.text})
            else:
                content.append({"type": part.type})
        out.append({"role": turn.role, "content": content})
    return out


def segments(messages: list[dict], template) -> list[tuple[str, bool]]:
    """Split the rendered conversation into (text, supervised) pieces using the template itself:
    an assistant answer is what message k adds beyond the generation prompt of messages[:k]."""
    pieces, done = [], ""
    for k, msg in enumerate(messages):
        full = template(messages[: k + 1], add_generation_prompt=False)
        if msg["role"] == "assistant":
            prompt = template(messages[:k], add_generation_prompt=True)
            if not prompt.startswith(done) or not full.startswith(prompt):
                raise SampleError("template", "chat template is not prefix-stable")
            answer = full[len(prompt):]
            # supervise up to and including <end_of_utterance>; the separator after it stays unsupervised
            cut = answer.rfind("<end_of_utterance>")
            cut = len(answer) if cut < 0 else cut + len("<end_of_utterance>")
            pieces += [(prompt[len(done):], False), (answer[:cut], True), (answer[cut:], False)]
        else:
            pieces.append((full[len(done):], False))
        done = full
    return [(text, sup) for text, sup in pieces if text]


class Encoder:
    """Encodes Samples for one processor. Media are loaded here (images via PIL, videos from the frame cache or
    data/video.py); a video is loaded once per sample, fewer frames for the token budget are taken from it."""

    def __init__(self, processor, config: EncodeConfig):
        from .frame_cache import cache_dir
        from .video import video_sampling

        self.processor = processor
        self.config = config
        self.sampling = video_sampling(processor, config.video_fps, config.video_max_frames)
        self.cache = cache_dir(config.frame_cache)
        self.tokenizer = processor.tokenizer
        self.pad_id = self.tokenizer.pad_token_id
        media_tokens = [processor.image_token, processor.fake_image_token, processor.global_image_token]
        media_tokens += [f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7)]
        self.media_ids = set(self.tokenizer.convert_tokens_to_ids(media_tokens))

    def _template(self, messages, add_generation_prompt):
        return self.processor.apply_chat_template(messages, add_generation_prompt=add_generation_prompt,
                                                  tokenize=False)

    def __call__(self, sample: Sample) -> Encoded:
        """Encode, shrinking media (fewer frames, then fewer image tiles) until it fits max_seq_len.
        Raises SampleError('too long') when even the smallest media do not fit."""
        max_frames, split, fitted = self.sampling.max_frames, None, None
        has_video = any(isinstance(p, Video) for p in sample.media())
        has_image = any(isinstance(p, Image) for p in sample.media())
        videos: dict = {}  # media position -> the video as loaded, shared by every try
        while True:
            enc = self.encode(sample, max_frames=max_frames, do_image_splitting=split, videos=videos)
            if len(enc) <= self.config.max_seq_len:
                enc.fitted = fitted
                return enc
            if has_video and max_frames > 1:
                max_frames, fitted = max(1, max_frames // 2), "fewer frames"
            elif has_image and split is None and self.processor.image_processor.do_image_splitting:
                split, fitted = False, "no image splitting"
            else:
                raise SampleError("too long", f"{len(enc)} tokens > max_seq_len {self.config.max_seq_len}")

    def encode(self, sample: Sample, max_frames: int | None = None, do_image_splitting: bool | None = None,
               videos: dict | None = None):
        """One try at `max_frames` frames per video; `videos` keeps loaded videos between tries."""
        import torch

        messages = to_messages(sample)
        media = iter(enumerate(sample.media()))
        videos = {} if videos is None else videos
        ids, labels, pixels, masks = [], [], [], []
        for text, supervised in segments(messages, self._template):
            n_img, n_vid = text.count("<image>"), text.count("<video>")
            if n_img or n_vid:
                items = [next(media) for _ in range(n_img + n_vid)]
                out = self._process(text, items, max_frames or self.sampling.max_frames, do_image_splitting, videos)
                piece = out["input_ids"][0]
                if "pixel_values" in out:
                    pixels.append(out["pixel_values"][0])
                    masks.append(out["pixel_attention_mask"][0])
            else:
                piece = torch.tensor(self.tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
            ids.append(piece)
            lab = piece.clone() if supervised else torch.full_like(piece, IGNORE)
            if supervised:
                lab[torch.isin(piece, torch.tensor(sorted(self.media_ids)))] = IGNORE
            labels.append(lab)
        input_ids = torch.cat(ids)
        enc = Encoded(input_ids=input_ids, labels=torch.cat(labels), source=sample.source, modality=sample.modality,
                      meta={"id": sample.id})
        if pixels:
            enc.pixel_values, enc.pixel_attention_mask = _stack_images(pixels, masks)
        if enc.n_supervised == 0:
            raise SampleError("no supervised tokens", sample.id)
        return enc

    def _process(self, text: str, items: list, max_frames: int, do_image_splitting: bool | None, loaded: dict):
        images = [self._image(p) for _, p in items if isinstance(p, Image)]
        videos = [(i, p) for i, p in items if isinstance(p, Video)]
        if images and videos:
            raise SampleError("mixed media in one turn", "a turn holds either images or videos")
        kwargs: dict = {"text": [text], "add_special_tokens": False, "return_tensors": "pt"}
        if images:
            kwargs["images"] = [images]
            if do_image_splitting is not None:
                kwargs["do_image_splitting"] = do_image_splitting
        else:
            for i, part in videos:
                if i not in loaded:
                    loaded[i] = self.load_video(part)
            shown = [loaded[i].subsample(max_frames) for i, _ in videos]
            kwargs.update(videos=[v.frames for v in shown], video_metadata=[v.metadata() for v in shown],
                          do_sample_frames=False)
        return self.processor(**kwargs)

    def _resolve(self, path: str) -> str:
        import os

        if self.config.media_root and not os.path.isabs(path):
            return os.path.join(self.config.media_root, path)
        return path

    def _image(self, part: Image):
        import io

        from PIL import Image as PILImage
        from PIL import UnidentifiedImageError

        try:
            if part.pil is not None:
                img = part.pil
            elif part.data is not None:
                img = PILImage.open(io.BytesIO(part.data))
            else:
                img = PILImage.open(self._resolve(part.path))
            img.load()
            return img.convert("RGB")
        except FileNotFoundError:
            raise SampleError("missing media", part.path or "") from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise SampleError("corrupt image", f"{part.path or 'inline image'}: {e}") from None

    def load_video(self, part: Video):
        """The video's frames under `self.sampling` (data.video.SampledVideo): cached or decoded."""
        import os

        from ..errors import MediaError
        from .frame_cache import load_sampled

        path = self._resolve(part.path)
        if not os.path.isfile(path):
            raise SampleError("missing media", path)
        try:
            return load_sampled(path, self.sampling, self.config.video_backend, self.cache)
        except MediaError as e:
            raise SampleError("corrupt video", e.message) from None


def _stack_images(pixels: list, masks: list):
    """Concatenate every image tile of a sample, zero-padding tiles to a common size (pad = masked out)."""
    import torch

    h = max(p.shape[-2] for p in pixels)
    w = max(p.shape[-1] for p in pixels)
    n = sum(p.shape[0] for p in pixels)
    out = torch.zeros(n, 3, h, w, dtype=pixels[0].dtype)
    out_mask = torch.zeros(n, h, w, dtype=torch.bool)
    i = 0
    for p, m in zip(pixels, masks):
        out[i: i + p.shape[0], :, : p.shape[-2], : p.shape[-1]] = p
        out_mask[i: i + p.shape[0], : m.shape[-2], : m.shape[-1]] = m.bool()
        i += p.shape[0]
    return out, out_mask
