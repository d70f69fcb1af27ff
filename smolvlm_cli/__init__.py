"""smolvlm-cli: reproduce and train SmolVLM2 vision-language models."""

__version__ = "0.1.0"
