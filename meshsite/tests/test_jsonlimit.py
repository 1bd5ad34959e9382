"""The JSON depth check: a linear bracket count outside strings that agrees with the real
nesting of any JSON value, and refuses what would make the decoder recurse too deep."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshsite.jsonlimit import JSONTooDeep, loads, nesting_exceeds

# Strings full of what the scanner must not count: brackets, quotes, backslashes.
TRICKY_TEXT = st.text(alphabet=st.sampled_from(list('[]{}"\\ab\u00e9\n')), max_size=8)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3),
    max_leaves=30,
)


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max((depth(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(item) for item in value.values()), default=0)
    return 0


@given(JSON_VALUES, st.booleans())
def test_the_scan_measures_the_real_nesting_of_any_json(value, ascii_only):
    text = json.dumps(value, ensure_ascii=ascii_only)
    assert not nesting_exceeds(text, depth(value))
    if depth(value) > 0:
        assert nesting_exceeds(text, depth(value) - 1)


@pytest.mark.parametrize("deep", ["[" * 1000 + "]" * 1000, '{"a":' * 1000 + "1" + "}" * 1000, "[" * 100_000])
def test_deep_json_is_refused_before_the_decoder_recurses(deep):
    with pytest.raises(JSONTooDeep, match="deeper than 32"):
        loads(deep, limit=32)


def test_the_refusal_is_a_value_error_like_any_malformed_json():
    with pytest.raises(ValueError):
        loads("[" * 1000, limit=32)


@pytest.mark.parametrize("malformed", ['["unterminated [[[[[[', "]]]]]]" + "[" * 40, '"\\'])
def test_malformed_json_is_left_to_the_decoder(malformed):
    assert not nesting_exceeds(malformed, 3)
    with pytest.raises(json.JSONDecodeError):
        loads(malformed, limit=3)


def test_the_default_limit_is_the_setting(settings):
    settings.MESH_MAX_JSON_DEPTH = 2
    assert loads(b'{"a": [1]}') == {"a": [1]}
    with pytest.raises(JSONTooDeep, match="deeper than 2"):
        loads(b'{"a": [[1]]}')
