"""Names and wildcard matching: `covers` against an independent regex reference, the
literal-prefix index invariant, name validation, and descriptor normalization."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from messaging.descriptor import DescriptorError, Rules, normalize_descriptor
from messaging.names import (
    InvalidName,
    covers,
    literal_prefix,
    prefixes,
    validate_pattern,
    validate_queue_name,
    validate_topic,
)

# A small alphabet so that generated patterns and topics actually match each other.
LITERALS = st.sampled_from(["a", "b", "c1"])
topics = st.lists(LITERALS, min_size=1, max_size=5).map("/".join)


@st.composite
def patterns(draw: st.DrawFn) -> str:
    segments = draw(st.lists(st.one_of(LITERALS, st.just("+")), min_size=0, max_size=5))
    if not segments or draw(st.booleans()):
        segments.append("*")
    return "/".join(segments)


@st.composite
def narrowed(draw: st.DrawFn, pattern: str) -> str:
    """A pattern near `pattern`: segments swapped for a literal or `+`, cut short or extended."""
    segments = pattern.split("/")
    star = segments[-1] == "*"
    if star:
        segments = segments[:-1]
    changed = [s if draw(st.booleans()) else draw(st.one_of(LITERALS, st.just("+"))) for s in segments]
    changed = changed[: draw(st.integers(0, len(changed)))]
    changed += draw(st.lists(st.one_of(LITERALS, st.just("+")), max_size=2))
    if not changed or draw(st.booleans()):
        changed.append("*")
    return "/".join(changed)


@st.composite
def instance_of(draw: st.DrawFn, pattern: str) -> str:
    """A concrete topic the pattern usually matches (a literal is sometimes swapped)."""
    topic: list[str] = []
    for segment in pattern.split("/"):
        if segment == "*":
            topic += draw(st.lists(LITERALS, min_size=1, max_size=2))
        elif segment == "+" or draw(st.integers(0, 9)) == 0:
            topic.append(draw(LITERALS))
        else:
            topic.append(segment)
    return "/".join(topic)


@st.composite
def pattern_and_topic(draw: st.DrawFn) -> tuple[str, str]:
    pattern = draw(patterns())
    return pattern, draw(st.one_of(topics, instance_of(pattern)))


@st.composite
def filter_pattern_topic(draw: st.DrawFn) -> tuple[str, str, str]:
    filter_ = draw(patterns())
    pattern = draw(st.one_of(patterns(), narrowed(filter_)))
    return filter_, pattern, draw(st.one_of(topics, instance_of(pattern)))


def reference_regex(pattern: str) -> re.Pattern[str]:
    """`+` is one segment, a trailing `*` one or more further segments; the rest literal."""
    segments = pattern.split("/")
    trailing_star = segments[-1] == "*"
    if trailing_star:
        segments = segments[:-1]
    body = "/".join("[^/]+" if segment == "+" else re.escape(segment) for segment in segments)
    if trailing_star:
        body = f"{body}/.+" if segments else ".+"
    return re.compile(f"^{body}$")


def test_reference_regex_is_itself_right_on_known_cases():
    assert reference_regex("a/+/c").match("a/x/c")
    assert not reference_regex("a/+/c").match("a/x/y/c")
    assert reference_regex("a/*").match("a/x/y")
    assert not reference_regex("a/*").match("a")
    assert reference_regex("*").match("x")


@settings(max_examples=500, deadline=None)
@given(pattern_and_topic())
def test_covers_matches_the_reference_on_concrete_topics(case):
    pattern, topic = case
    assert covers(pattern, topic) == bool(reference_regex(pattern).match(topic))


@settings(max_examples=300, deadline=None)
@given(pattern_and_topic())
def test_a_matching_pattern_is_found_under_one_of_the_topics_prefixes(case):
    pattern, topic = case
    if covers(pattern, topic):
        assert literal_prefix(pattern) in prefixes(topic)


@given(patterns())
def test_every_generated_pattern_is_valid_and_covers_itself(pattern):
    assert validate_pattern(pattern) == pattern
    assert covers(pattern, pattern)


@settings(max_examples=500, deadline=None)
@given(filter_pattern_topic())
def test_a_filter_never_admits_a_subscription_broader_than_itself(case):
    filter_, pattern, topic = case
    # If the filter admits the pattern, everything the pattern matches the filter matches.
    if covers(filter_, pattern) and covers(pattern, topic):
        assert covers(filter_, topic)


def witnesses(pattern: str, longest: int) -> list[str]:
    """Topics of `pattern` with every wildcard filled by a segment no pattern spells (`z`),
    `*` as 1..longest segments: enough to tell whether another pattern matches all of it."""
    fixed = ["z" if segment == "+" else segment for segment in pattern.split("/")]
    if fixed[-1] != "*":
        return ["/".join(fixed)]
    return ["/".join(fixed[:-1] + ["z"] * count) for count in range(1, longest + 1)]


@settings(max_examples=500, deadline=None)
@given(filter_pattern_topic())
def test_filter_covers_a_pattern_exactly_when_it_matches_everything_the_pattern_matches(case):
    filter_, pattern, _ = case
    everything = all(reference_regex(filter_).match(topic)
                     for topic in witnesses(pattern, len(filter_.split("/")) + 1))
    assert covers(filter_, pattern) == everything


@given(topics)
def test_prefixes_run_from_empty_to_the_whole_topic(topic):
    found = prefixes(topic)
    assert found[0] == "" and found[-1] == topic
    assert len(found) == topic.count("/") + 2
    assert all(topic.startswith(prefix) for prefix in found)


@pytest.mark.parametrize(("pattern", "prefix"), [
    ("a/b/c/*", "a/b/c"), ("a/+/c", "a"), ("+/b", ""), ("*", ""), ("a/b", "a/b"),
])
def test_literal_prefix_stops_at_the_first_wildcard(pattern, prefix):
    assert literal_prefix(pattern) == prefix


@pytest.mark.parametrize(("filter_", "name", "admitted"), [
    ("a/b/c/+", "a/b/c/*", False),
    ("a/b/c/*", "a/b/c/+/x", True),
    ("a/b/c/*", "a/b/c/+", True),
    ("a/b/c/*", "a/b/c/*", True),
    ("a/b/c/+", "a/b/c/+", True),
    ("a/b/c/x", "a/b/c/+", False),
    ("a/b/c/*", "a/b/c", False),
    ("a/b/c/*", "a/b/*", False),
    ("a/b/c/*", "a/b/+/x", False),
    ("*", "a/b/c/*", True),
    ("+/*", "*", False),
])
def test_filter_covers_only_narrower_or_equal_patterns(filter_, name, admitted):
    assert covers(filter_, name) is admitted


# Name validation

VALID_QUEUES = ["a/b/c/q1", "q", "a-b_c.d/e", "x" * 111, "a/" + "y" * 109, "/".join(["s"] * 20)]
INVALID_NAMES = [
    "",
    "x" * 112,
    "a/" + "y" * 110,
    "a/b/c/q!",
    "a/b/c/q 1",
    "a/b/c/ä",
    "a//b",
    "/a/b",
    "a/b/",
    "a/./b",
    "a/../b",
    "..",
    "/".join(["s"] * 21),
]


@pytest.mark.parametrize("name", VALID_QUEUES)
def test_valid_queue_names_and_topics_are_accepted(name):
    assert validate_queue_name(name) == name
    assert validate_topic(name) == name


@pytest.mark.parametrize("name", INVALID_NAMES)
def test_invalid_queue_names_and_topics_are_rejected(name):
    with pytest.raises(InvalidName):
        validate_queue_name(name)
    with pytest.raises(InvalidName):
        validate_topic(name)


@pytest.mark.parametrize("topic", ["a/+/c", "a/b/*", "*", "+"])
def test_concrete_topics_reject_wildcards(topic):
    with pytest.raises(InvalidName):
        validate_topic(topic)
    assert validate_pattern(topic) == topic


@pytest.mark.parametrize("pattern", [
    "", "a/*/c", "*/a", "a//b", "a/b/", "a/./b", "a/../b", "a/b*", "a/+x", "a/b c",
    "/".join(["s"] * 21), "x" * 112 + "/*",
])
def test_invalid_patterns_are_rejected(pattern):
    with pytest.raises(InvalidName):
        validate_pattern(pattern)


def test_pattern_of_twenty_segments_is_accepted():
    pattern = "/".join(["s"] * 19 + ["*"])
    assert validate_pattern(pattern) == pattern


# Descriptor normalization


def test_descriptor_defaults_are_filled_in():
    normalized = normalize_descriptor({"namespace": "a/b/c"}, "myem")
    assert normalized == {
        "emname": "myem",
        "version": "1.1.0",
        "namespace": "a/b/c",
        "options": {"management": True, "messagingrest": True, "messaging": True},
        "rules": {
            "topicRules": {"publishFilter": ["a/b/c/*"], "subscribeFilter": ["a/b/c/*"]},
            "queueRules": {"publishFilter": ["a/b/c/*"], "subscribeFilter": ["a/b/c/*"]},
        },
    }


def test_descriptor_substitutes_the_namespace_and_keeps_given_values():
    normalized = normalize_descriptor({
        "emname": "myem", "version": "1.1.0", "namespace": "x/y/z",
        "options": {"messaging": False},
        "rules": {"topicRules": {"publishFilter": ["${namespace}/orders/+"], "subscribeFilter": ["*"]}},
    }, "myem")
    assert normalized["options"] == {"management": True, "messagingrest": True, "messaging": False}
    assert normalized["rules"]["topicRules"] == {"publishFilter": ["x/y/z/orders/+"], "subscribeFilter": ["*"]}
    assert normalized["rules"]["queueRules"]["publishFilter"] == ["x/y/z/*"]


def test_rules_allow_by_filter_coverage():
    rules = Rules(normalize_descriptor({
        "namespace": "a/b/c", "rules": {"topicRules": {"subscribeFilter": ["a/b/c/*", "sap/s4/+/created"]}},
    }, "myem")["rules"])
    assert rules.allows("topicRules", "publishFilter", "a/b/c/orders")
    assert not rules.allows("topicRules", "publishFilter", "d/e/f/orders")
    assert not rules.allows("topicRules", "publishFilter", "a/b/c")
    assert rules.allows("topicRules", "subscribeFilter", "sap/s4/x/created")
    assert not rules.allows("topicRules", "subscribeFilter", "sap/s4/*")
    assert rules.allows("queueRules", "subscribeFilter", "a/b/c/q1")


@pytest.mark.parametrize(("raw", "fragment"), [
    ([], "JSON object"),
    ({"namespace": "a/b"}, "namespace"),
    ({"namespace": "a_b/c/d"}, "namespace"),
    ({"namespace": "abcdefgh/abcdefgh/abcdefgh"}, "namespace"),
    ({"namespace": "a/b/c", "emname": "other"}, "emname"),
    ({"namespace": "a/b/c", "emname": "bad name"}, "emname"),
    ({"namespace": "a/b/c", "extra": 1}, "extra"),
    ({"namespace": "a/b/c", "options": {"amqp": True}}, "amqp"),
    ({"namespace": "a/b/c", "options": {"messaging": 1}}, "messaging"),
    ({"namespace": "a/b/c", "rules": {"topicRules": {"publishFilter": "a/b/c/*"}}}, "publishFilter"),
    ({"namespace": "a/b/c", "rules": {"topicRules": {"publishFilter": ["${namespace}/*/x"]}}}, "publishFilter"),
    ({"namespace": "a/b/c", "rules": {"queueRules": {"consumeFilter": []}}}, "queueRules"),
    ({"namespace": "a/b/c", "version": 2}, "version"),
])
def test_invalid_descriptors_are_rejected_with_a_message_naming_the_problem(raw, fragment):
    with pytest.raises(DescriptorError) as error:
        normalize_descriptor(raw, "myem")
    assert fragment in str(error.value)
