"""The suite's one rule for optional parts (tests/conftest.py): a test marked
``needs(part)`` skips, with a reason saying what is missing, unless ``DREAMRATE_REQUIRE_ALL=1``
(CI) or ``DREAMRATE_REQUIRE_<PART>=1`` asks for the part; then it fails. Under
``DREAMRATE_REQUIRE_ALL=1`` any other skip fails too."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

CONFTEST = """
from tests.conftest import PARTS, pytest_configure, pytest_runtest_setup  # noqa: F401

# As on a machine without Ray and without ../shared/reference.
PARTS["ray"] = (lambda: False, PARTS["ray"][1])
PARTS["reference"] = (lambda: False, PARTS["reference"][1])
"""
TESTS = """
import pytest

@pytest.mark.needs("ray")
def test_ray():
    pass

@pytest.mark.needs("reference")
def test_reference():
    pass

def test_plain():
    pass

def test_skips_itself():
    pytest.skip("a reason of its own")

@pytest.mark.xfail(reason="known", strict=True)
def test_known_bug():
    assert False
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parents[1]))
    for name in ("DREAMRATE_REQUIRE_ALL", "DREAMRATE_REQUIRE_RAY", "DREAMRATE_REQUIRE_REFERENCE"):
        monkeypatch.delenv(name, raising=False)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_parts=TESTS)
    return pytester


def _run(suite: pytest.Pytester, *args: str) -> pytest.RunResult:
    return suite.runpytest_subprocess("-p", "no:cacheprovider", "-rfEs", *args)


def test_a_contributor_sees_each_missing_part_skipped_with_its_reason(
    suite: pytest.Pytester,
) -> None:
    result = _run(suite)
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    result.stdout.fnmatch_lines_random(
        [
            "SKIPPED*Ray is not installed (`make install` adds the dev extras)",
            "SKIPPED*needs the reference data in ../shared/reference (*reference is missing)",
            "SKIPPED*a reason of its own",
        ]
    )


def test_one_required_part_fails_and_the_others_still_skip(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DREAMRATE_REQUIRE_RAY", "1")
    result = _run(suite)
    result.assert_outcomes(passed=1, skipped=2, errors=1, xfailed=1)
    result.stdout.fnmatch_lines(
        ["*Ray is not installed*(DREAMRATE_REQUIRE_RAY=1 forbids skipping)"]
    )


def test_in_ci_nothing_skips(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAMRATE_REQUIRE_ALL", "1")
    suite.makepyfile(test_module_skip="import pytest\npytest.importorskip('no_such_module')\n")
    result = _run(suite, "--continue-on-collection-errors")
    # Ray and the reference fail at setup, the module at collection, the test's own skip
    # in its call; an expected failure is no skip.
    result.assert_outcomes(passed=1, failed=1, errors=3, xfailed=1)
    result.stdout.fnmatch_lines_random(
        [
            "*Ray is not installed*(DREAMRATE_REQUIRE_ALL=1 forbids skipping)",
            "*needs the reference data*(DREAMRATE_REQUIRE_ALL=1 forbids skipping)",
            "*DREAMRATE_REQUIRE_ALL=1 forbids skipping; the skip's reason: *no_such_module*",
            "*DREAMRATE_REQUIRE_ALL=1 forbids skipping; the skip's reason: *a reason of its own",
        ]
    )
