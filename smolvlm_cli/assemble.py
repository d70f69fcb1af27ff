# `init`: assemble a SmolVLMForConditionalGeneration and its processor from a SigLIP vision tower,
# a causal LM and a new pixel-shuffle connector, then save both atomically.
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from .errors import PartError
from .parts import Part, load_text, load_vision_state, resolve_text, resolve_vision
from .recipe import ModelSection, Recipe, dump_recipe

# As in the released SmolVLM2 configs' text_config: converters (llama.cpp's convert_hf_to_gguf.py) pick the text
# model's class from it. The label comes from the SmolVLM training code; the graph is plain Llama.
TEXT_ARCHITECTURES = ("VLlama3ForCausalLM",)

INIT_MANIFEST = "smolvlm_init.json"


@dataclass
class InitResult:
    out: Path
    parameters: dict[str, int]
    total_parameters: int
    image_seq_len: int
    context_length: int
    vocab_size: int
    sources: dict[str, str]
    special_token_ids: dict[str, int] = field(default_factory=dict)


def image_seq_len(image_size: int, patch_size: int, scale_factor: int) -> int:
    """Tokens per image tile after pixel shuffle: (image/patch)^2 / factor^2."""
    return (image_size // patch_size) ** 2 // scale_factor**2


def validate_parts(model: ModelSection, vision: Part, text: Part) -> None:
    """Every size the assembly relies on, checked against the recipe before any weight is loaded."""
    vc, m = vision.config, model
    if vc.image_size != m.vision.image_size or vc.patch_size != m.vision.patch_size:
        raise PartError(
            f"vision part '{vision.ref}' takes {vc.image_size}px images in {vc.patch_size}px patches but the recipe "
            f"says {m.vision.image_size}px / {m.vision.patch_size}px",
            "use a matching SigLIP or fix model.vision.image_size / patch_size",
        )
    if m.vision.hidden_size and vc.hidden_size != m.vision.hidden_size:
        f2 = m.scale_factor**2
        raise PartError(
            f"inconsistent sizes: the connector expects vision hidden {m.vision.hidden_size} x {f2} = "
            f"{m.vision.hidden_size * f2} inputs but vision part '{vision.ref}' has hidden size {vc.hidden_size}",
            "use the vision part the recipe was written for or fix model.vision.hidden_size",
        )
    text_hidden = text.config.hidden_size if text.config is not None else text.random_spec.hidden_size
    if m.text.hidden_size and text_hidden != m.text.hidden_size:
        raise PartError(
            f"inconsistent sizes: the connector outputs {m.text.hidden_size} but text part '{text.ref}' has "
            f"hidden size {text_hidden}",
            "use the text part the recipe was written for or fix model.text.hidden_size",
        )


def build_config(model: ModelSection, vision_config, lm_config, vocab_size: int, image_token_id: int, pad_id: int):
    from transformers import SmolVLMConfig

    text = lm_config.to_dict()
    for key in ("quantization_config", "_name_or_path", "architectures", "transformers_version", "dtype"):
        text.pop(key, None)
    text["vocab_size"] = vocab_size
    text["architectures"] = list(TEXT_ARCHITECTURES)
    text["tie_word_embeddings"] = model.tie_word_embeddings
    text["pad_token_id"] = pad_id
    if model.rope_theta is not None:
        rope = dict(text.get("rope_parameters") or {"rope_type": "default"})
        rope["rope_theta"] = model.rope_theta
        text["rope_parameters"] = rope
    if model.max_position_embeddings is not None:
        text["max_position_embeddings"] = model.max_position_embeddings
    vision_keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                   "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout")
    vision = {k: getattr(vision_config, k) for k in vision_keys}
    return SmolVLMConfig(
        vision_config=vision, text_config=text, scale_factor=model.scale_factor,
        image_token_id=image_token_id, tie_word_embeddings=model.tie_word_embeddings,
    )


def _grow_rows(weight, n_rows: int):
    """Copy `weight` into n_rows rows; the new rows are the mean of the existing ones."""
    import torch

    out = torch.empty(n_rows, weight.shape[1], dtype=weight.dtype)
    out[: weight.shape[0]] = weight
    out[weight.shape[0]:] = weight.mean(dim=0, keepdim=True)
    return out


def assemble_model(config, vision_state: dict, lm):
    """A SmolVLM carrying the parts' weights; only the connector is freshly initialised."""
    import torch
    from transformers import SmolVLMForConditionalGeneration

    model = SmolVLMForConditionalGeneration(config)
    model.model.vision_model.load_state_dict(vision_state, strict=True)
    n_vocab = config.text_config.vocab_size
    text_state = dict(lm.get_decoder().state_dict())
    text_state["embed_tokens.weight"] = _grow_rows(lm.get_input_embeddings().weight.detach(), n_vocab)
    model.model.text_model.load_state_dict(text_state, strict=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    else:
        with torch.no_grad():
            head = lm.get_output_embeddings().weight.detach()
            model.lm_head.weight.copy_(_grow_rows(head, n_vocab))
    return model


def build_processor(model: ModelSection, tokenizer):
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor
    from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE

    tile = model.vision.image_size
    p = model.processor
    common = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5], resample=1)  # 1 = LANCZOS
    image_processor = SmolVLMImageProcessor(
        do_image_splitting=p.do_image_splitting, size={"longest_edge": p.longest_edge},
        max_image_size={"longest_edge": tile}, **common,
    )
    frame_edge = p.video_longest_edge or tile
    video_processor = SmolVLMVideoProcessor(
        size={"longest_edge": frame_edge}, max_image_size={"longest_edge": tile}, do_sample_frames=False,
        video_sampling={"fps": p.video_fps, "max_frames": p.video_max_frames,
                        "video_size": {"longest_edge": frame_edge}},
        **common,
    )
    return SmolVLMProcessor(
        image_processor=image_processor, tokenizer=tokenizer, video_processor=video_processor,
        image_seq_len=image_seq_len(tile, model.vision.patch_size, model.scale_factor),
        chat_template=DEFAULT_CHAT_TEMPLATE,
    )


def count_parameters(model) -> dict[str, int]:
    inner = model.model
    embed = inner.text_model.get_input_embeddings().weight.numel()
    text_total = sum(p.numel() for p in inner.text_model.parameters())
    counts = {
        "vision tower": sum(p.numel() for p in inner.vision_model.parameters()),
        "connector": sum(p.numel() for p in inner.connector.parameters()),
        "LM layers": text_total - embed,
        "embeddings": embed,
    }
    if model.lm_head.weight is not inner.text_model.get_input_embeddings().weight:
        counts["lm_head"] = model.lm_head.weight.numel()
    return counts


def init_model(recipe: Recipe, out: Path, force: bool = False, vision_ref: str | None = None,
               text_ref: str | None = None) -> InitResult:
    import torch
    from transformers import GenerationConfig

    from .fsutil import atomic_output_dir, check_output_dir
    from .tokens import END_OF_UTTERANCE, IMAGE_TOKEN, add_smolvlm_tokens, padded_vocab_size

    out = Path(out)
    check_output_dir(out, force)
    m = recipe.model_section("smolvlm init")
    if vision_ref:
        m.vision.source = vision_ref
    if text_ref:
        m.text.source = text_ref
    vision = resolve_vision(m.vision.source, m)
    text = resolve_text(m.text.source, m)
    validate_parts(m, vision, text)

    vision_state = load_vision_state(vision, recipe.seed)
    lm, tokenizer = load_text(text, m, recipe.seed)
    add_smolvlm_tokens(tokenizer)
    vocab = padded_vocab_size(len(tokenizer), m.vocab_multiple)
    image_token_id = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    eou_id = tokenizer.convert_tokens_to_ids(END_OF_UTTERANCE)
    config = build_config(m, vision.config, lm.config, vocab, image_token_id, tokenizer.pad_token_id)
    torch.manual_seed(recipe.seed)
    model = assemble_model(config, vision_state, lm)
    del lm, vision_state
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=eou_id, pad_token_id=tokenizer.pad_token_id,
    )
    processor = build_processor(m, tokenizer)
    parameters = count_parameters(model)
    result = InitResult(
        out=out, parameters=parameters, total_parameters=sum(parameters.values()),
        image_seq_len=processor.image_seq_len, context_length=config.text_config.max_position_embeddings,
        vocab_size=vocab, sources={"vision": vision.origin, "text": text.origin, "connector": "new (random init)"},
        special_token_ids={"<image>": image_token_id, "<end_of_utterance>": eou_id},
    )
    model.to(getattr(torch, m.dtype))
    with atomic_output_dir(out, force) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / "recipe.yaml").write_text(dump_recipe(recipe))
        from .download import recorded_manifest

        manifest = {"recipe": recipe.name, "sources": result.sources, "parameters": parameters,
                    "total_parameters": result.total_parameters, "versions": package_versions(),
                    "download_manifest": recorded_manifest(recipe)}
        (tmp / INIT_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return result


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("smolvlm-cli", "torch", "transformers", "deepspeed", "peft", "datasets"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
