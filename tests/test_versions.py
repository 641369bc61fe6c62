"""The order of firmware versions: vendor spellings, SemVer agreement, totality."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from repo_service.domain.versions import MAX_LENGTH, Version, parse_version
from repo_service.errors import InvalidInput

# Enough examples to find ordering slips, few enough to keep the file quick.
PROPERTY_SETTINGS = settings(max_examples=150, deadline=None)


def compare(left: Version, right: Version) -> int:
    return (left > right) - (left < right)


# --- Example-based behaviour -------------------------------------------------


def test_ten_sorts_after_nine_in_dotted_numbers() -> None:
    assert parse_version("1.10") > parse_version("1.9")


def test_numbers_compare_part_by_part_from_the_left() -> None:
    assert parse_version("2.0") > parse_version("1.99.99")
    assert parse_version("1.2.10") > parse_version("1.2.9")


def test_trailing_zeros_do_not_change_a_version() -> None:
    assert parse_version("1.2") == parse_version("1.2.0") == parse_version("1.2.0.0")
    assert hash(parse_version("1.2")) == hash(parse_version("1.2.0.0"))


def test_a_fourth_part_sorts_after_the_three_part_release() -> None:
    assert parse_version("1.2.3") < parse_version("1.2.3.1") < parse_version("1.2.4")


def test_leading_zeros_in_numbers_do_not_count() -> None:
    assert parse_version("1.02") == parse_version("1.2")


def test_a_vendor_prefix_is_ignored() -> None:
    assert parse_version("V1.2.3") == parse_version("v1.2.3") == parse_version("1.2.3")
    assert parse_version("R4.10") == parse_version("4.10")
    assert parse_version("FW2.1") == parse_version("2.1.0")


def test_a_prefixed_version_still_orders_by_number() -> None:
    assert parse_version("R4.10") > parse_version("R4.9")
    assert parse_version("FW2.1") > parse_version("V2.0.9")


def test_text_keeps_the_original_spelling_without_surrounding_whitespace() -> None:
    assert parse_version("  V1.2-RC1 \n").text == "V1.2-RC1"


def test_a_pre_release_sorts_before_its_release() -> None:
    assert parse_version("1.2.3-rc1") < parse_version("1.2.3")
    assert parse_version("1.2.3-rc1") > parse_version("1.2.2")


def test_a_pre_release_may_follow_the_release_without_a_hyphen() -> None:
    assert parse_version("1.2.3rc1") == parse_version("1.2.3-rc1")
    assert parse_version("V2.0beta.2") == parse_version("2.0.0-beta.2")


def test_release_candidate_ten_sorts_after_release_candidate_two() -> None:
    assert parse_version("1.2.3-rc2") < parse_version("1.2.3-rc10")


def test_bare_letters_sort_before_the_same_letters_with_a_number() -> None:
    assert parse_version("1.0.0-rc") < parse_version("1.0.0-rc0")


def test_numeric_identifiers_sort_before_alphanumeric_ones() -> None:
    assert parse_version("1.0.0-9") < parse_version("1.0.0-alpha")


def test_the_semver_specification_example_is_in_order() -> None:
    spellings = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
    ]
    versions = [parse_version(spelling) for spelling in spellings]
    assert all(left < right for left, right in itertools.pairwise(versions))


def test_letters_compare_without_regard_to_case() -> None:
    assert parse_version("1.0.0-RC1") == parse_version("1.0.0-rc1")
    # Plain ASCII order would put "Beta" before "alpha".
    assert parse_version("1.0.0-Beta") > parse_version("1.0.0-alpha")


def test_build_metadata_breaks_ties_after_everything_else() -> None:
    spellings = ["2.0.0", "2.0.0+build5", "2.0.0+build6", "2.0.1-rc1"]
    versions = [parse_version(spelling) for spelling in spellings]
    assert all(left < right for left, right in itertools.pairwise(versions))


def test_build_metadata_does_not_lift_a_pre_release_past_its_release() -> None:
    assert parse_version("1.0.0-rc1+build99") < parse_version("1.0.0")


def test_distinct_builds_are_distinct_versions() -> None:
    assert parse_version("1.0+20240101.abc") != parse_version("1.0+20240101.abd")
    assert parse_version("1.0+20240101.abc") != parse_version("1.0")


def test_vendor_versions_sort_in_release_order() -> None:
    spellings = [
        "V0.9",
        "1.0.0-alpha",
        "1.0.0-beta.2",
        "1.0.0rc1",
        "1.0.0-rc2",
        "1.0.0-RC10",
        "1.0",
        "1.0.0+build5",
        "1.0.0.1",
        "R1.9",
        "FW1.10",
    ]
    versions = [parse_version(spelling) for spelling in spellings]
    # Interleaved so that sorting has work to do.
    shuffled = versions[1::2] + versions[::2]
    assert [version.text for version in sorted(shuffled)] == spellings


@pytest.mark.parametrize(
    ("spelling", "canonical"),
    [
        ("1.2.3", "1.2.3"),
        ("V1.2.3", "1.2.3"),
        ("R4.10", "4.10.0"),
        ("0", "0.0.0"),
        ("1.2.3.4", "1.2.3.4"),
        ("1.02.0.0", "1.2.0"),
        ("1.2.3RC01", "1.2.3-rc1"),
        ("fw2.1-Beta.02+Build.007", "2.1.0-beta.2+build.7"),
        ("2.0.0+build5", "2.0.0+build5"),
    ],
)
def test_canonical_spelling_drops_what_does_not_count(
    spelling: str, canonical: str
) -> None:
    assert parse_version(spelling).canonical == canonical


def test_versions_that_are_equal_are_one_set_member() -> None:
    assert (
        len({parse_version("V1.2"), parse_version("1.2.0"), parse_version("1.2")}) == 1
    )


def test_a_version_is_not_equal_to_its_string() -> None:
    assert parse_version("1.2.3") != "1.2.3"


def test_a_version_cannot_be_ordered_against_a_string() -> None:
    with pytest.raises(TypeError):
        assert parse_version("1.2.3") < "1.2.4"  # type: ignore[operator]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("1" * (MAX_LENGTH + 1), f"must be at most {MAX_LENGTH} characters"),
        ("abc", "'abc' is not a version: no release number after the prefix 'abc'"),
        ("abcd1.2", "a prefix has at most 3 letters, found 'abcd'"),
        ("-1.2", "expected a release number such as 1.2.3 at position 0, found '-'"),
        ("1..2", "'1..2' is not a version: empty number between dots"),
        ("1.2.", "'1.2.' is not a version: ends with a dot"),
        ("1.2.x", "expected a number after the dot at position 3, found 'x'"),
        ("1.2.3-", "empty pre-release after '-'"),
        ("1.2.3-+build", "empty pre-release after '-'"),
        ("1.2.3+", "empty build metadata after '+'"),
        ("1.2.3-rc..1", "empty identifier in the pre-release 'rc..1'"),
        ("1.2.3-rc.", "empty identifier in the pre-release 'rc.'"),
        ("1.2.3+b.", "empty identifier in the build metadata 'b.'"),
        ("1.2.3-rc_1", "the pre-release may contain only letters, digits"),
        ("1.2.3+b+c", "the build metadata may contain only letters, digits"),
        ("1_2", "unexpected '_' at position 1"),
        ("1 2", "'1 2' is not a version: contains a space at position 1"),
        ("1.2.3é", "'é' at position 5 is not printable ASCII"),
        ("1.2\t3", "'\\t' at position 3 is not printable ASCII"),
    ],
)
def test_unparseable_strings_raise_invalid_input_naming_the_field(
    text: str, message: str
) -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_version(text, field="firmware_version")
    assert raised.value.field == "firmware_version"
    assert message in raised.value.message


def test_the_field_is_called_version_unless_told_otherwise() -> None:
    with pytest.raises(InvalidInput) as raised:
        parse_version("1..2")
    assert raised.value.field == "version"
    assert raised.value.message == "'1..2' is not a version: empty number between dots"


def test_a_value_that_is_not_a_string_is_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="must be a string"):
        parse_version(123)  # type: ignore[arg-type]


def test_the_longest_accepted_spelling_is_the_length_limit() -> None:
    longest = "1.2." + "3" * (MAX_LENGTH - len("1.2."))
    assert parse_version(longest).canonical == longest


def test_a_version_whose_padded_release_outgrows_the_limit_is_rejected() -> None:
    # 64 characters as written, 66 once padded to "1.<digits>.0".
    text = "1." + "2" * (MAX_LENGTH - len("1."))
    with pytest.raises(InvalidInput, match="once normalized"):
        parse_version(text)


def test_a_version_whose_canonical_spelling_outgrows_the_limit_is_rejected() -> None:
    # 64 characters as written, 65 once "-" is put before the pre-release.
    text = "1.2.3rc" + "a" * (MAX_LENGTH - len("1.2.3rc"))
    with pytest.raises(InvalidInput, match="once normalized"):
        parse_version(text)


# --- Strategies ----------------------------------------------------------------

# Small numbers and few words make equal and near-equal versions common, which
# is where ordering mistakes hide.
numbers = st.integers(min_value=0, max_value=12)
words = st.sampled_from(["alpha", "beta", "rc", "RC", "a", "b", "Beta", "dev"])
identifiers = st.one_of(
    numbers.map(str),
    numbers.map(lambda number: f"0{number}"),
    words,
    st.tuples(words, numbers).map(lambda pair: f"{pair[0]}{pair[1]}"),
    st.text(alphabet="ab01-", min_size=1, max_size=4),
)
prefixes = st.sampled_from(["", "v", "V", "R", "FW", "fw", "abc"])


@st.composite
def version_texts(draw: st.DrawFn, prefix: st.SearchStrategy[str] = prefixes) -> str:
    release = draw(st.lists(numbers, min_size=1, max_size=4))
    text = draw(prefix) + ".".join(str(number) for number in release)
    pre_release = draw(st.none() | st.lists(identifiers, min_size=1, max_size=3))
    if pre_release:
        joined = ".".join(pre_release)
        hyphen = "" if joined[0].isalpha() and draw(st.booleans()) else "-"
        text += hyphen + joined
    build = draw(st.none() | st.lists(identifiers, min_size=1, max_size=2))
    if build:
        text += "+" + ".".join(build)
    return text


parsed_versions = version_texts().map(parse_version)


# --- Total order -----------------------------------------------------------------


@PROPERTY_SETTINGS
@given(parsed_versions, parsed_versions)
def test_exactly_one_of_less_equal_or_greater_holds(
    left: Version, right: Version
) -> None:
    outcomes = [left < right, left == right, left > right]
    assert outcomes.count(True) == 1
    assert (left <= right) == (left < right or left == right)
    assert (left >= right) == (left > right or left == right)
    assert (left < right) == (right > left)


@PROPERTY_SETTINGS
@given(parsed_versions, parsed_versions)
def test_ordering_is_antisymmetric(left: Version, right: Version) -> None:
    if left <= right <= left:
        assert left == right
        assert hash(left) == hash(right)


@PROPERTY_SETTINGS
@given(parsed_versions, parsed_versions, parsed_versions)
def test_ordering_is_transitive(
    first: Version, second: Version, third: Version
) -> None:
    for low, middle, high in itertools.permutations([first, second, third]):
        if low <= middle <= high:
            assert low <= high
        if low < middle <= high or low <= middle < high:
            assert low < high


@PROPERTY_SETTINGS
@given(st.lists(st.lists(numbers, min_size=1, max_size=5), min_size=2, max_size=8))
def test_release_order_matches_integer_tuples_without_trailing_zeros(
    releases: list[list[int]],
) -> None:
    def without_trailing_zeros(release: list[int]) -> tuple[int, ...]:
        trimmed = list(release)
        while trimmed and trimmed[-1] == 0:
            trimmed.pop()
        return tuple(trimmed)

    spellings = [".".join(str(number) for number in release) for release in releases]
    by_parser = [
        without_trailing_zeros(release)
        for release, _ in sorted(
            zip(releases, spellings), key=lambda pair: parse_version(pair[1])
        )
    ]
    assert by_parser == sorted(without_trailing_zeros(release) for release in releases)


# --- Canonical spelling ---------------------------------------------------------


@PROPERTY_SETTINGS
@given(parsed_versions)
def test_canonical_spelling_parses_back_to_the_same_version(version: Version) -> None:
    again = parse_version(version.canonical)
    assert again == version
    assert again.canonical == version.canonical


@PROPERTY_SETTINGS
@given(parsed_versions, parsed_versions)
def test_canonical_spellings_are_equal_exactly_when_versions_are(
    left: Version, right: Version
) -> None:
    assert (left.canonical == right.canonical) == (left == right)


# --- Vendor habits ---------------------------------------------------------------


@PROPERTY_SETTINGS
@given(
    version_texts(prefix=st.just("")),
    version_texts(prefix=st.just("")),
    prefixes,
    prefixes,
)
def test_a_prefix_never_changes_the_order(
    left: str, right: str, left_prefix: str, right_prefix: str
) -> None:
    plain = compare(parse_version(left), parse_version(right))
    prefixed = compare(
        parse_version(left_prefix + left), parse_version(right_prefix + right)
    )
    assert prefixed == plain


@PROPERTY_SETTINGS
@given(
    st.lists(numbers, min_size=1, max_size=4),
    st.lists(identifiers, min_size=1, max_size=3),
    st.none() | st.lists(identifiers, min_size=1, max_size=2),
    st.none() | st.lists(identifiers, min_size=1, max_size=2),
)
def test_a_pre_release_is_always_less_than_its_release(
    release: list[int],
    pre_release: list[str],
    pre_release_build: list[str] | None,
    release_build: list[str] | None,
) -> None:
    def with_build(text: str, build: list[str] | None) -> str:
        return text + "+" + ".".join(build) if build else text

    release_text = ".".join(str(number) for number in release)
    candidate = with_build(
        release_text + "-" + ".".join(pre_release), pre_release_build
    )
    assert parse_version(candidate) < parse_version(
        with_build(release_text, release_build)
    )


# --- Agreement with SemVer 2.0.0 --------------------------------------------------

SEMVER = re.compile(
    r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?"
    r"(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?"
)


def semver_compare(left: str, right: str) -> int:
    """SemVer 2.0.0 §11 precedence, written from the specification alone."""

    def parts(text: str) -> tuple[list[int], list[str] | None]:
        match = SEMVER.fullmatch(text)
        assert match, text
        pre_release = match[4].split(".") if match[4] is not None else None
        return [int(match[1]), int(match[2]), int(match[3])], pre_release

    def sign(difference: int) -> int:
        return (difference > 0) - (difference < 0)

    left_release, left_pre = parts(left)
    right_release, right_pre = parts(right)
    for left_number, right_number in zip(left_release, right_release):
        if left_number != right_number:
            return sign(left_number - right_number)
    if left_pre is None or right_pre is None:
        # §11.3: a version with a pre-release has lower precedence.
        return (left_pre is None) - (right_pre is None)
    for left_identifier, right_identifier in zip(left_pre, right_pre):
        if left_identifier == right_identifier:
            continue
        left_numeric, right_numeric = (
            left_identifier.isdigit(),
            right_identifier.isdigit(),
        )
        if left_numeric and right_numeric:
            return sign(int(left_identifier) - int(right_identifier))
        if left_numeric != right_numeric:
            return -1 if left_numeric else 1
        return -1 if left_identifier < right_identifier else 1
    return sign(len(left_pre) - len(right_pre))


def _plain_semver_identifier(text: str) -> bool:
    # Excluded on purpose: letters-then-digits ("rc10") is where this module
    # departs from SemVer, and SemVer forbids leading zeros in numbers.
    if text.isdigit():
        return text == "0" or not text.startswith("0")
    return re.fullmatch(r"[a-z]+[0-9]+", text) is None


semver_identifiers = st.one_of(
    st.integers(min_value=0, max_value=20).map(str),
    st.sampled_from(["alpha", "beta", "rc", "x-y", "a-1", "0a", "-"]),
    st.text(alphabet="az09-", min_size=1, max_size=4),
).filter(_plain_semver_identifier)


@st.composite
def semver_texts(draw: st.DrawFn, with_build: bool = False) -> str:
    release = draw(st.tuples(numbers, numbers, numbers))
    text = ".".join(str(number) for number in release)
    pre_release = draw(st.none() | st.lists(semver_identifiers, min_size=1, max_size=3))
    if pre_release:
        text += "-" + ".".join(pre_release)
    if with_build and draw(st.booleans()):
        text += "+" + ".".join(
            draw(st.lists(semver_identifiers, min_size=1, max_size=2))
        )
    return text


@PROPERTY_SETTINGS
@given(semver_texts(), semver_texts())
def test_order_agrees_with_semver_precedence_without_build_metadata(
    left: str, right: str
) -> None:
    assert compare(parse_version(left), parse_version(right)) == semver_compare(
        left, right
    )


@PROPERTY_SETTINGS
@given(semver_texts(with_build=True), semver_texts(with_build=True))
def test_build_metadata_only_breaks_semver_ties(left: str, right: str) -> None:
    expected = semver_compare(left, right)
    assume(expected != 0)
    assert compare(parse_version(left), parse_version(right)) == expected
