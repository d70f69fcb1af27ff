# Resolve a part reference (hub id | local folder | .gguf file | random:NAME) and load its weights.
# Resolution reads configs only, so `init` can validate every size before it loads anything heavy.
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import PartError

if TYPE_CHECKING:
    from .recipe import ModelSection

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


@dataclass
class Part:
    """A located part: where it is, and its config (SigLIP vision config or causal-LM config)."""

    role: str  # "vision" | "text"
    kind: str  # "random" | "gguf" | "dir" | "hub"
    ref: str
    config: Any
    path: Path | None = None  # folder (dir/hub) or file (gguf)
    random_spec: Any = None

    @property
    def origin(self) -> str:
        if self.kind == "hub":
            return f"{self.ref} (hub cache)"
        if self.kind == "random":
            return f"{self.ref} (random init)"
        return str(self.path)


def _locate(role: str, ref: str, revision: str | None) -> tuple[str, Path | None]:
    if ref.startswith("random:"):
        return "random", None
    path = Path(ref).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise PartError(f"{role} part '{ref}' not found", "check the path to the .gguf file")
        if role != "text":
            raise PartError(f"{role} part '{ref}' is a GGUF file", "GGUF is supported for the text part only")
        return "gguf", path
    if path.is_dir():
        return "dir", path
    if path.exists():
        raise PartError(f"{role} part '{ref}' is a file", "pass a model folder, a hub id or (text only) a .gguf file")
    if ref.startswith((".", "/", "~")) or not HUB_ID.match(ref):
        raise PartError(f"{role} part '{ref}' not found", "pass an existing folder, a .gguf file or a hub id")
    return "hub", _hub_snapshot(role, ref, revision)


def _hub_snapshot(role: str, repo_id: str, revision: str | None) -> Path:
    """A hub part must already be in the local cache: `init` never downloads."""
    from huggingface_hub import errors, snapshot_download

    incomplete = getattr(errors, "IncompleteSnapshotError", ())  # `smolvlm download` fetches only needed files
    try:
        return Path(snapshot_download(repo_id, revision=revision, local_files_only=True))
    except incomplete as e:
        return Path(e.snapshot_path)
    except (errors.LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError):
        raise PartError(
            f"{role} part '{repo_id}' is not in the local Hugging Face cache",
            f"download it first (hf download {repo_id}) or set model.{role}.source to a local folder",
        ) from None


def resolve_vision(ref: str, model: "ModelSection") -> Part:
    from transformers import AutoConfig, SiglipVisionConfig

    kind, path = _locate("vision", ref, model.vision.revision)
    if kind == "random":
        spec = _random_spec(ref, model, "vision")
        return Part("vision", kind, ref, SiglipVisionConfig(**spec.model_dump()), random_spec=spec)
    config = _read_config("vision", ref, path)
    model_type = getattr(config, "model_type", None)
    if model_type == "siglip":
        config = AutoConfig.from_pretrained(path).vision_config
    elif model_type != "siglip_vision_model":
        raise PartError(
            f"vision part '{ref}' is a '{model_type}' model, not SigLIP",
            "pass a SigLIP checkpoint (SiglipModel or SiglipVisionModel), e.g. google/siglip-base-patch16-512",
        )
    return Part("vision", kind, ref, config, path=path)


def resolve_text(ref: str, model: "ModelSection") -> Part:
    from transformers import AutoConfig

    kind, path = _locate("text", ref, model.text.revision)
    if kind == "random":
        spec = _random_spec(ref, model, "text")
        return Part("text", kind, ref, None, random_spec=spec)
    if kind == "gguf":
        try:
            config = AutoConfig.from_pretrained(path.parent, gguf_file=path.name)
        except Exception as e:  # gguf raises many types for a bad file
            raise PartError(f"text part '{ref}' is not a readable GGUF file ({type(e).__name__})",
                            "pass a GGUF of a Llama-family LM, e.g. SmolLM2-135M-Instruct") from None
    else:
        config = _read_config("text", ref, path)
    _check_causal_lm(ref, config)
    tok_dir = Path(model.text.tokenizer).expanduser() if model.text.tokenizer else path
    if kind != "gguf" and not any((tok_dir / f).is_file() for f in TOKENIZER_FILES):
        raise PartError(f"no tokenizer found in '{tok_dir}' for text part '{ref}'",
                        "put tokenizer.json next to the model or set model.text.tokenizer")
    return Part("text", kind, ref, config, path=path)


def _random_spec(ref: str, model: "ModelSection", role: str):
    name = ref.split(":", 1)[1]
    spec = model.random_parts.get(name)
    if spec is None or getattr(spec, role) is None:
        known = ", ".join(f"random:{k}" for k, v in model.random_parts.items() if getattr(v, role)) or "none"
        raise PartError(f"no random {role} part '{name}' in the recipe's model.random_parts",
                        f"define it there or use one of: {known}")
    return getattr(spec, role)


def _read_config(role: str, ref: str, path: Path):
    from transformers import AutoConfig

    if not (path / "config.json").is_file():
        raise PartError(f"{role} part '{ref}' has no config.json", "pass a Hugging Face model folder")
    try:
        return AutoConfig.from_pretrained(path)
    except (ValueError, KeyError, OSError) as e:
        raise PartError(f"{role} part '{ref}': config.json cannot be read ({e})".splitlines()[0],
                        "pass a Hugging Face model folder saved with save_pretrained") from None


def _check_causal_lm(ref: str, config) -> None:
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    model_type = getattr(config, "model_type", None)
    archs = getattr(config, "architectures", None) or []
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or getattr(config, "is_encoder_decoder", False) or (
        archs and not all(a.endswith("ForCausalLM") for a in archs)
    ):
        what = archs[0] if archs else model_type
        raise PartError(f"text part '{ref}' is a {what}, not a causal language model",
                        "pass a Llama-family causal LM such as SmolLM2-135M-Instruct")


def load_vision_state(part: Part, seed: int) -> dict:
    """The SigLIP vision tower's weights (pooling head dropped), keyed as in SmolVLM's vision_model."""
    import torch
    from transformers import SiglipVisionModel

    if part.kind == "random":
        torch.manual_seed(seed)
        model = SiglipVisionModel(part.config)
    else:
        try:
            model, info = SiglipVisionModel.from_pretrained(part.path, output_loading_info=True, dtype=torch.float32)
        except OSError as e:
            raise PartError(f"vision part '{part.ref}' weights cannot be loaded: {str(e).splitlines()[0]}",
                            "check the folder holds model.safetensors") from None
        if info["missing_keys"]:
            missing = sorted(info["missing_keys"])[0]
            raise PartError(f"vision part '{part.ref}' lacks weights (e.g. {missing})",
                            "pass a complete SigLIP checkpoint")
    return {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}


def load_text(part: Part, model_section: "ModelSection", seed: int):
    """(causal LM in fp32, tokenizer) for a text part."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    if part.kind == "random":
        from .tokens import build_builtin_tokenizer

        spec = part.random_spec
        tokenizer = build_builtin_tokenizer(spec.tokenizer_vocab_size)
        config = LlamaConfig(
            vocab_size=len(tokenizer), **spec.model_dump(exclude={"tokenizer_vocab_size"}),
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            rope_parameters={"rope_type": "default", "rope_theta": 100000.0},
        )  # no pad_token_id: nn.Embedding would zero that row, and a zero row breaks DoRA's norm on lm_head
        torch.manual_seed(seed + 1)
        part.config = config
        return LlamaForCausalLM(config), tokenizer
    kwargs = {"gguf_file": part.path.name} if part.kind == "gguf" else {}
    where = part.path.parent if part.kind == "gguf" else part.path
    try:
        lm = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kwargs)
    except OSError as e:
        raise PartError(f"text part '{part.ref}' weights cannot be loaded: {str(e).splitlines()[0]}",
                        "check the folder holds the model weights") from None
    tok_where = Path(model_section.text.tokenizer).expanduser() if model_section.text.tokenizer else where
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_where, **kwargs)
    except (OSError, ValueError) as e:
        raise PartError(f"tokenizer of text part '{part.ref}' cannot be loaded: {str(e).splitlines()[0]}",
                        "set model.text.tokenizer to a folder with tokenizer.json") from None
    return lm, tokenizer
