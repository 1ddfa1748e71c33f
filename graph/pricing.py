"""Prices for cost accounting: USD per 1K tokens for chat models, USD per image.

A source's own `input_cost_per_1k` / `output_cost_per_1k` / `cost_per_image` win over
this table. Users add or override entries with a JSON file named by
`AGENTFLOW_PRICES_FILE`:

    {"models": {"my-model": {"input": 0.001, "output": 0.002}},
     "images": {"my-image-model": 0.02}}          # or {"1024x1024": 0.02}
                                                  # or {"hd": {"1024x1024": 0.08}}

Unknown models cost 0.0 (we would rather under-report than invent a price).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from typing import Any

log = logging.getLogger(__name__)

PRICES_ENV = "AGENTFLOW_PRICES_FILE"

# USD per 1K tokens (list prices; update here or through AGENTFLOW_PRICES_FILE).
MODEL_PRICES: dict[str, dict[str, float]] = {
    "gpt-5": {"input": 0.00125, "output": 0.01},
    "gpt-5-mini": {"input": 0.00025, "output": 0.002},
    "gpt-5-nano": {"input": 0.00005, "output": 0.0004},
    "gpt-4.1": {"input": 0.002, "output": 0.008},
    "gpt-4.1-mini": {"input": 0.0004, "output": 0.0016},
    "gpt-4.1-nano": {"input": 0.0001, "output": 0.0004},
    "gpt-4o": {"input": 0.0025, "output": 0.01},
    "gpt-4o-mini": {"input": 0.00015, "output": 0.0006},
    "gpt-4-turbo": {"input": 0.01, "output": 0.03},
    "gpt-4": {"input": 0.03, "output": 0.06},
    "gpt-3.5-turbo": {"input": 0.0005, "output": 0.0015},
    "o1": {"input": 0.015, "output": 0.06},
    "o1-mini": {"input": 0.0011, "output": 0.0044},
    "o3": {"input": 0.002, "output": 0.008},
    "o3-mini": {"input": 0.0011, "output": 0.0044},
    "o4-mini": {"input": 0.0011, "output": 0.0044},
}

# USD per image: {model: {quality: {size: price}}}; "*" is the fallback quality/size.
IMAGE_PRICES: dict[str, Any] = {
    "dall-e-3": {
        "standard": {"1024x1024": 0.04, "1024x1792": 0.08, "1792x1024": 0.08},
        "hd": {"1024x1024": 0.08, "1024x1792": 0.12, "1792x1024": 0.12},
    },
    "dall-e-2": {"*": {"256x256": 0.016, "512x512": 0.018, "1024x1024": 0.02}},
    "gpt-image-1": {
        "low": {"1024x1024": 0.011, "1024x1536": 0.016, "1536x1024": 0.016},
        "medium": {"1024x1024": 0.042, "1024x1536": 0.063, "1536x1024": 0.063},
        "high": {"1024x1024": 0.167, "1024x1536": 0.25, "1536x1024": 0.25},
    },
}
# What the provider uses when the request names no quality.
_DEFAULT_QUALITY = {"dall-e-3": "standard", "gpt-image-1": "medium"}

_lock = threading.Lock()
_loaded_from: tuple[str, float] | None = None  # (path, mtime) of the extra file merged in
_extra_models: dict[str, dict[str, float]] = {}
_extra_images: dict[str, Any] = {}


def _load_extra() -> None:
    """Merge AGENTFLOW_PRICES_FILE lazily; re-read when the path or its mtime changes."""
    global _loaded_from, _extra_models, _extra_images
    path = os.environ.get(PRICES_ENV)
    if not path:
        _loaded_from, _extra_models, _extra_images = None, {}, {}
        return
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        log.warning("price file %s (from %s) not found; using the built-in table", path, PRICES_ENV)
        _loaded_from, _extra_models, _extra_images = (path, -1.0), {}, {}
        return
    if _loaded_from == (path, mtime):
        return
    with _lock:
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            models = {str(k): {"input": float(v.get("input", 0)), "output": float(v.get("output", 0))}
                      for k, v in (data.get("models") or {}).items()}
            images = dict(data.get("images") or {})
        except (OSError, ValueError, AttributeError, TypeError) as exc:
            log.warning("price file %s is not valid (%s); using the built-in table", path, exc)
            models, images = {}, {}
        _extra_models, _extra_images, _loaded_from = models, images, (path, mtime)


def _match(table: dict[str, Any], model: str) -> Any:
    """Exact name, else the longest table key that prefixes the name at a '-' boundary
    (gpt-4o-mini-2024-07-18 -> gpt-4o-mini, never gpt-4o -> gpt-4)."""
    name = model.rsplit("/", 1)[-1].lower()  # "openai/gpt-4o" -> "gpt-4o"
    lowered = {k.lower(): v for k, v in table.items()}
    if name in lowered:
        return lowered[name]
    best = max((k for k in lowered if name.startswith(k) and name[len(k)] in "-:@"),
               key=len, default=None)
    return lowered[best] if best else None


def model_price(model: str | None) -> dict[str, float] | None:
    if not model:
        return None
    _load_extra()
    return _match(_extra_models, model) or _match(MODEL_PRICES, model)


def llm_cost(source: Any, model: str | None, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for one chat call: the source's overrides, else the table, else 0.0."""
    in_price = getattr(source, "input_cost_per_1k", None)
    out_price = getattr(source, "output_cost_per_1k", None)
    if in_price is None or out_price is None:
        row = model_price(model or getattr(source, "model", None)) or {}
        in_price = row.get("input", 0.0) if in_price is None else in_price
        out_price = row.get("output", 0.0) if out_price is None else out_price
    return round((prompt_tokens or 0) / 1000 * in_price + (completion_tokens or 0) / 1000 * out_price, 8)


def _image_unit(entry: Any, model: str, size: str | None, quality: str | None) -> float:
    if isinstance(entry, (int, float)):
        return float(entry)
    if not isinstance(entry, dict):
        return 0.0
    if size in entry and isinstance(entry[size], (int, float)):  # flat {size: price}
        return float(entry[size])
    if all(isinstance(v, (int, float)) for v in entry.values()):
        return float(entry.get("*", 0.0))
    q = (quality or _DEFAULT_QUALITY.get(model.lower(), "*")).lower()
    if q in ("auto", "standard") and q not in entry:
        q = _DEFAULT_QUALITY.get(model.lower(), "*")
    by_size = entry.get(q) or entry.get("*") or {}
    if isinstance(by_size, (int, float)):
        return float(by_size)
    return float(by_size.get(size or "", by_size.get("*", 0.0)))


def image_cost(source: Any, model: str | None, size: str | None, quality: str | None, n: int) -> float:
    """USD for `n` images: the source's `cost_per_image`, else the table, else 0.0."""
    override = getattr(source, "cost_per_image", None)
    if override is not None:
        return round(override * n, 8)
    model = model or getattr(source, "model", "") or ""
    _load_extra()
    entry = _match(_extra_images, model) if _extra_images else None
    if entry is None:
        entry = _match(IMAGE_PRICES, model)
    return round(_image_unit(entry, model, size, quality) * n, 8) if entry is not None else 0.0
