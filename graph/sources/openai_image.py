"""OpenAI image generation (DALL-E, gpt-image-1, or a compatible server)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import openai

from .openai_llm import client_for, convert_error


@dataclass
class ImageResult:
    images: list[dict]          # each {"url"|"b64_json": ..., "revised_prompt": ...}
    total_tokens: int | None = None


def generate(source: Any, prompt: str, *, size: str, n: int = 1, quality: str | None = None,
             env: Mapping[str, str] | None = None, timeout: float = 60.0) -> ImageResult:
    client = client_for(source, env, timeout)
    kwargs: dict[str, Any] = {"model": source.model, "prompt": prompt, "size": size, "n": n,
                              "timeout": timeout}
    if quality:
        kwargs["quality"] = quality
    try:
        resp = client.images.generate(**kwargs)
    except openai.OpenAIError as exc:
        raise convert_error(exc, source, "image", timeout) from None
    images = []
    for item in resp.data or []:
        out: dict[str, Any] = {}
        if getattr(item, "url", None):
            out["url"] = item.url
        if getattr(item, "b64_json", None):
            out["b64_json"] = item.b64_json
        out["revised_prompt"] = getattr(item, "revised_prompt", None)
        images.append(out)
    usage = getattr(resp, "usage", None)
    return ImageResult(images, getattr(usage, "total_tokens", None) if usage else None)
