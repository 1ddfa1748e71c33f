"""The plugin's own unit tests: each node type's config and run(config, state)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agentflow_text_tools import REGEX_EXTRACT, TEXT_STATS, RegexExtractConfig, TextStatsConfig


def test_text_stats_counts_a_rendered_template():
    cfg = TextStatsConfig(text="{user_input} Said {metadata.who}.")
    out = TEXT_STATS.run(cfg, {"user_input": "Hello world! It's a fine day.\nReally", "metadata": {"who": "Ann"}})
    assert out == {"text_stats": {"characters": 46, "words": 9, "lines": 2, "sentences": 3, "unique_words": 9}}


def test_text_stats_of_empty_text_is_zero():
    out = TEXT_STATS.run(TextStatsConfig(output_key="s"), {"user_input": ""})
    assert out == {"s": {"characters": 0, "words": 0, "lines": 0, "sentences": 0, "unique_words": 0}}


def test_regex_extract_returns_matches_or_first_group():
    state = {"user_input": "Orders #12 and #345, ORDER #7"}
    assert REGEX_EXTRACT.run(RegexExtractConfig(pattern=r"#\d+"), state) == {"matches": ["#12", "#345", "#7"]}
    cfg = RegexExtractConfig(pattern=r"order\w* #(\d+)", ignore_case=True, max_matches=1, output_key="ids")
    assert REGEX_EXTRACT.run(cfg, state) == {"ids": ["12"]}


@pytest.mark.parametrize("bad", [{"pattern": "("}, {"pattern": "x", "colour": 1}, {"pattern": "x", "output_key": "1x"}])
def test_bad_configs_are_refused(bad):
    with pytest.raises(ValidationError):
        RegexExtractConfig.model_validate(bad)


def test_entry_point_objects_declare_what_agentflow_reads():
    assert TEXT_STATS.config_model is TextStatsConfig and TEXT_STATS.queue == "agentflow.text"
    assert REGEX_EXTRACT.config_model is RegexExtractConfig and not hasattr(REGEX_EXTRACT, "queue")
    assert TEXT_STATS.description and REGEX_EXTRACT.description
