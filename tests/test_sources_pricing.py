"""pricing: the price table, name prefixes, source overrides, AGENTFLOW_PRICES_FILE."""

from __future__ import annotations

import json
import os

import pytest

from agentflow.graph import pricing
from agentflow.graph.spec import ImageSource, LLMSource


def llm(model="gpt-4o-mini", **kw) -> LLMSource:
    return LLMSource(id="gpt", kind="llm", model=model, **kw)


@pytest.fixture(autouse=True)
def _no_price_file(monkeypatch):
    monkeypatch.delenv(pricing.PRICES_ENV, raising=False)


@pytest.mark.parametrize("model,row", [
    ("gpt-4o-mini", "gpt-4o-mini"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
    ("GPT-3.5-Turbo-0125", "gpt-3.5-turbo"),
    ("openai/gpt-4o", "gpt-4o"),
    ("o3-mini", "o3-mini"),
])
def test_table_lookup_with_prefixes(model, row):
    expected = pricing.MODEL_PRICES[row]
    cost = pricing.llm_cost(llm(model), model, 1000, 2000)
    assert cost == pytest.approx(expected["input"] + 2 * expected["output"])


def test_prefix_needs_a_separator_and_unknown_models_are_free():
    # "gpt-4oz" must not be priced as gpt-4, nor "my-model" at all
    assert pricing.model_price("gpt-4oz") is None
    assert pricing.llm_cost(llm("my-model"), "my-model", 10_000, 10_000) == 0.0


def test_source_overrides_win():
    src = llm(input_cost_per_1k=1.0, output_cost_per_1k=2.0)
    assert pricing.llm_cost(src, src.model, 500, 250) == pytest.approx(1.0)
    half = llm(input_cost_per_1k=1.0)  # output still from the table
    assert pricing.llm_cost(half, half.model, 1000, 1000) == pytest.approx(1.0 + 0.0006)


@pytest.mark.parametrize("model,size,quality,unit", [
    ("dall-e-3", "1024x1024", None, 0.04),
    ("dall-e-3", "1792x1024", "hd", 0.12),
    ("dall-e-3", "1024x1024", "standard", 0.04),
    ("dall-e-2", "512x512", None, 0.018),
    ("gpt-image-1", "1024x1024", None, 0.042),
    ("gpt-image-1", "1536x1024", "high", 0.25),
    ("unknown-painter", "1024x1024", None, 0.0),
])
def test_image_prices(model, size, quality, unit):
    src = ImageSource(id="img", kind="image", model=model)
    assert pricing.image_cost(src, model, size, quality, 3) == pytest.approx(unit * 3)


def test_image_source_override():
    src = ImageSource(id="img", kind="image", model="dall-e-3", cost_per_image=0.5)
    assert pricing.image_cost(src, "dall-e-3", "1024x1024", None, 2) == 1.0


def test_prices_file_extends_and_is_reloaded(tmp_path, monkeypatch):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"local-llama": {"input": 0.01, "output": 0.02}},
                                "images": {"my-painter": {"1024x1024": 0.3}, "flat": 0.1}}))
    monkeypatch.setenv(pricing.PRICES_ENV, str(path))
    assert pricing.llm_cost(llm("local-llama"), "local-llama-7b", 1000, 1000) == pytest.approx(0.03)
    img = ImageSource(id="i", kind="image", model="my-painter")
    assert pricing.image_cost(img, "my-painter", "1024x1024", None, 1) == pytest.approx(0.3)
    assert pricing.image_cost(img, "flat", "256x256", None, 2) == pytest.approx(0.2)
    # the table still answers for what the file does not name
    assert pricing.model_price("gpt-4o") == pricing.MODEL_PRICES["gpt-4o"]

    path.write_text(json.dumps({"models": {"local-llama": {"input": 1, "output": 1}}}))
    os.utime(path, (1, 1))  # a different mtime, whatever the clock resolution
    assert pricing.llm_cost(llm("local-llama"), "local-llama", 1000, 0) == pytest.approx(1.0)


def test_broken_prices_file_falls_back_to_table(tmp_path, monkeypatch, caplog):
    path = tmp_path / "prices.json"
    path.write_text("{not json")
    monkeypatch.setenv(pricing.PRICES_ENV, str(path))
    assert pricing.model_price("gpt-4o") == pricing.MODEL_PRICES["gpt-4o"]
    assert "not valid" in caplog.text
