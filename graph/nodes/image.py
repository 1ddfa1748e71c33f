"""image: one image generation call; the result is {url|b64_json, revised_prompt} (a list for n > 1)."""

from __future__ import annotations

from ..errors import InvalidOutput
from ..pricing import image_cost
from ..sources import openai_image
from ..templates import render
from .base import NodeImpl


class ImageNodeImpl(NodeImpl):
    calls_outside = True

    def run(self, state, ctx):
        cfg = self.node.config
        prompt = render(cfg.prompt, state)
        result = self.call_source(lambda: openai_image.generate(
            self.source, prompt, size=cfg.size, n=cfg.n, quality=cfg.quality, env=ctx.env,
            timeout=self.timeout))
        if not result.images:
            raise InvalidOutput(f"image source '{self.source.id}' returned no image")
        update = {cfg.output_key: result.images[0] if cfg.n == 1 else result.images,
                  "cost": image_cost(self.source, self.source.model, cfg.size, cfg.quality,
                                     len(result.images))}
        if result.total_tokens is not None:
            update["tokens_used"] = int(result.total_tokens)
        return update
