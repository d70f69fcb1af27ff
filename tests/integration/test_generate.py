# `smolvlm generate` on the tiny SmolVLM: streamed greedy answers for image and video prompts (equal to a plain
# `generate` on the same inputs), the prompt layout, token-by-token streaming, and one-line errors for bad input.
from __future__ import annotations

import numpy as np
import pytest

from smolvlm_cli.errors import MediaError, UserError
from smolvlm_cli.generate import _streamer, build_messages, cli_generate, generate_answer, load_images

class Recorder:
    """A text stream that keeps each write, to see the answer arrive in pieces."""

    def __init__(self):
        self.writes: list[str] = []

    def write(self, text: str) -> None:
        if text:
            self.writes.append(text)

    def flush(self) -> None:
        pass


def write_mp4(path, n_frames: int = 12, fps: int = 4, size=(48, 64)):
    from smolvlm_cli.data.synthetic import write_mp4 as encode

    frames = np.zeros((n_frames, *size, 3), np.uint8)
    for i in range(n_frames):
        frames[i, :, : (i + 1) * size[1] // n_frames] = (250, 40, 40)  # a red bar growing left to right
    encode(path, frames, fps)
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("media")
    Image.new("RGB", (96, 72), (200, 30, 30)).save(root / "red.png")
    Image.new("RGB", (40, 40), (30, 30, 200)).save(root / "blue.jpg")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 garbage " * 8)
    write_mp4(root / "bar.mp4")
    return root


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from smolvlm_cli.eval.runner import load_model

    return load_model(tiny_model_dir, "cpu")


def plain_greedy(model, processor, prompt_text: str, max_new_tokens: int, **media) -> tuple[str, str]:
    """(answer, expanded prompt) from a bare `model.generate` on the processor's inputs: the reference."""
    import torch

    inputs = processor(text=[prompt_text], return_tensors="pt", **media)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    n = inputs["input_ids"].shape[1]
    return (processor.decode(out[0, n:], skip_special_tokens=True).strip(),
            processor.decode(inputs["input_ids"][0]))


def test_messages_put_media_before_the_prompt():
    assert build_messages("What is it?", n_images=2) == [{"role": "user", "content": [
        {"type": "image"}, {"type": "image"}, {"type": "text", "text": "What is it?"}]}]
    assert build_messages("Describe.", video=True) == [{"role": "user", "content": [
        {"type": "video"}, {"type": "text", "text": "Describe."}]}]
    assert build_messages("Hi") == [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}]


def test_image_prompt_streams_the_greedy_answer(tiny_model_dir, loaded, media):
    model, processor = loaded
    out = Recorder()
    answer = cli_generate(tiny_model_dir, "What colour is the picture?", images=[media / "red.png", media / "blue.jpg"],
                          max_new_tokens=8, out=out)
    text = processor.apply_chat_template(build_messages("What colour is the picture?", 2), add_generation_prompt=True)
    expected, prompt = plain_greedy(model, processor, text, 8, images=[load_images([media / "red.png",
                                                                                   media / "blue.jpg"])])
    assert answer == expected and answer
    assert "".join(out.writes).strip() == answer and out.writes[-1].endswith("\n")
    assert prompt.index("<image>") < prompt.index("What colour")  # images first, then the question


def test_video_prompt_uses_the_training_frame_sampler(tiny_model_dir, loaded, media):
    from smolvlm_cli.data.video import load_video

    model, processor = loaded
    out = Recorder()
    answer = cli_generate(tiny_model_dir, "Where does the bar grow?", video=media / "bar.mp4", max_new_tokens=6,
                          out=out)
    video = load_video(media / "bar.mp4", fps=1.0, max_frames=8)  # the tiny recipe's processor: 1 fps, <= 8 frames
    assert video.timestamps == [0.5, 1.5, 2.5]  # 3 s at 1 fps: the frames at the centre of each second
    text = processor.apply_chat_template(build_messages("Where does the bar grow?", video=True),
                                         add_generation_prompt=True)
    expected, prompt = plain_greedy(model, processor, text, 6, videos=[video.frames],
                                    video_metadata=[video.metadata()], do_sample_frames=False)
    assert answer == expected and "".join(out.writes).strip() == answer
    assert "series of three frames" in prompt and prompt.count("Frame from") == 3


def test_generate_answer_with_a_loaded_model_equals_the_cli_path(tiny_model_dir, loaded, media):
    model, processor = loaded
    images = load_images([media / "red.png"])
    first = generate_answer(model, processor, "Name the colour.", images, max_new_tokens=5, out=Recorder())
    assert first == cli_generate(tiny_model_dir, "Name the colour.", [media / "red.png"], max_new_tokens=5,
                                 out=Recorder())


def test_streamer_writes_words_as_tokens_arrive(loaded):
    """What a user sees: words appear before generation ends, and the streamed text is the decoded answer. How the
    text is cut into writes is transformers' business (5.24 sends "re", "d" where 5.23 sent "red ")."""
    _, processor = loaded
    tok = processor.tokenizer
    out = Recorder()
    streamer = _streamer(tok, out)
    streamer.put(np.array([tok.encode("User: hi")]))  # the prompt is skipped
    answer = tok.encode("red green blue")
    for token in answer:
        streamer.put(np.array([token]))
    assert "".join(out.writes).split()[:2] == ["red", "green"]  # whole words are out before generation ends
    streamer.end()
    assert "".join(out.writes) == "red green blue\n"
    assert "".join(streamer.parts) == tok.decode(answer, skip_special_tokens=True) == "red green blue"


def test_media_errors_are_one_line(tiny_model_dir, media, tmp_path):
    cases = [
        ({"images": [tmp_path / "nope.png"]}, f"image file not found: {tmp_path / 'nope.png'}"),
        ({"images": [tmp_path]}, f"image path is not a file: {tmp_path}"),
        ({"images": [media / "broken.png"]}, f"cannot read image {media / 'broken.png'}: "),
        ({"video": tmp_path / "nope.mp4"}, f"video file not found: {tmp_path / 'nope.mp4'}"),
        ({"video": media / "broken.mp4"}, f"cannot read video {media / 'broken.mp4'}: "),
    ]
    for kwargs, start in cases:
        with pytest.raises(MediaError) as info:
            cli_generate(tiny_model_dir, "What?", max_new_tokens=2, out=Recorder(), **kwargs)
        assert info.value.one_line().startswith(start) and "\n" not in info.value.one_line()
        assert info.value.hint


def test_bad_model_folder_and_arguments(tiny_model_dir, media, tmp_path):
    (tmp_path / "llama").mkdir()
    (tmp_path / "llama" / "config.json").write_text('{"model_type": "llama"}')
    cases = [
        ((tmp_path / "missing", "Hi"), {}, "model folder not found"),
        ((tmp_path / "llama", "Hi"), {}, "is not a SmolVLM model folder (model_type 'llama')"),
        ((tiny_model_dir, "  "), {}, "the prompt is empty"),
        ((tiny_model_dir, "Hi"), {"max_new_tokens": 0}, "--max-new-tokens must be at least 1, got 0"),
        ((tiny_model_dir, "Hi"), {"images": [media / "red.png"], "video": media / "bar.mp4"},
         "--image and --video cannot be combined"),
    ]
    for args, kwargs, message in cases:
        with pytest.raises(UserError) as info:
            cli_generate(*args, out=Recorder(), **kwargs)
        assert message in info.value.message


@pytest.fixture
def generate_cli():
    """Invoke the real `smolvlm generate` in-process."""
    from typer.testing import CliRunner

    from smolvlm_cli import cli

    runner = CliRunner()
    return lambda *args: runner.invoke(cli.app, ["generate", *map(str, args)], catch_exceptions=False)


def test_cli_streams_to_stdout_and_exits_2_on_bad_media(generate_cli, tiny_model_dir, media, loaded):
    result = generate_cli("--model", tiny_model_dir, "--image", media / "red.png", "--max-new-tokens", 4,
                          "Which colour?")
    assert result.exit_code == 0, result.output
    model, processor = loaded
    answer = generate_answer(model, processor, "Which colour?", load_images([media / "red.png"]), max_new_tokens=4,
                             out=Recorder())
    assert result.stdout.strip() == answer

    bad = generate_cli("--model", tiny_model_dir, "--image", media / "broken.png", "Which colour?")
    assert bad.exit_code == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot read image {media / 'broken.png'}")
