"""Request validation: pure, every refusal one sentence naming the field and its range."""

from __future__ import annotations

import random

import pytest

from dreamrate.generation.model_info import ModelDefaults, model_defaults
from dreamrate.generation.request import (
    MAX_SEED,
    GenerationLimits,
    RequestError,
    RequestInput,
    clean_text,
    parse_size,
    validate_request,
)

LIMITS = GenerationLimits(
    default_model="sd",
    allowed_models=("sdxl",),
    max_prompt_chars=100,
    max_images=4,
    min_size=64,
    max_size=1024,
    max_steps=50,
    max_guidance=20.0,
    blocked_terms=("gore", "bad word"),
)
DEFAULTS = ModelDefaults(width=512, height=512, steps=30, guidance=7.5)


def few_tokens(text: str) -> int:
    return len(text.split()) + 2


def check(**fields: object):  # type: ignore[no-untyped-def]
    raw = RequestInput(**{"prompt": "a lighthouse", **fields})  # type: ignore[arg-type]
    return validate_request(raw, LIMITS, DEFAULTS, rng=random.Random(7), count_tokens=few_tokens)


def test_defaults_are_filled_in_and_seed_recorded() -> None:
    request = check()
    assert (request.width, request.height, request.steps, request.guidance) == (512, 512, 30, 7.5)
    assert request.num_images == 1 and request.model == "sd"
    assert 0 <= request.seed <= MAX_SEED
    assert request.seed == random.Random(7).randint(0, MAX_SEED)
    assert any("chosen at random" in note for note in request.notes)


def test_given_values_are_kept() -> None:
    request = check(
        seed=0,
        steps=4,
        guidance=0.0,
        width=768,
        height=512,
        images=4,
        model="sdxl",
        negative="blurry",
    )
    assert (request.seed, request.steps, request.guidance) == (0, 4, 0.0)
    assert (request.width, request.height, request.num_images, request.model) == (
        768,
        512,
        4,
        "sdxl",
    )
    assert request.negative_prompt == "blurry" and request.notes == ()


def test_settings_defaults_override_the_models() -> None:
    limits = GenerationLimits(default_model="sd", default_steps=1, default_guidance=0.0)
    request = validate_request(RequestInput(prompt="x"), limits, DEFAULTS, count_tokens=few_tokens)
    assert (request.steps, request.guidance) == (1, 0.0)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"prompt": "   "}, "prompt: must not be empty."),
        ({"prompt": "\u202e\u200f\x00 "}, "prompt: must not be empty."),
        ({"prompt": "x" * 101}, "prompt: must be at most 100 characters, got 101."),
        (
            {"prompt": "so much GORE here"},
            "prompt: contains the blocked term 'gore'; please rephrase.",
        ),
        (
            {"prompt": "a Bad  Word!"},
            "prompt: contains the blocked term 'bad word'; please rephrase.",
        ),
        ({"negative": "y" * 101}, "negative: must be at most 100 characters, got 101."),
        ({"seed": -1}, "seed: must be between 0 and 4294967295, got -1."),
        ({"seed": 2**32}, "seed: must be between 0 and 4294967295, got 4294967296."),
        ({"steps": 0}, "steps: must be between 1 and 50, got 0."),
        ({"steps": 51}, "steps: must be between 1 and 50, got 51."),
        ({"guidance": 25.0}, "guidance: must be between 0 and 20, got 25."),
        ({"guidance": float("nan")}, "guidance: must be a number between 0 and 20."),
        ({"images": 5}, "images: must be between 1 and 4, got 5."),
        ({"images": 0}, "images: must be between 1 and 4, got 0."),
        ({"width": 100}, "width: must be a multiple of 8 between 64 and 1024, got 100."),
        ({"height": 2048}, "height: must be a multiple of 8 between 64 and 1024, got 2048."),
        ({"width": 56}, "width: must be a multiple of 8 between 64 and 1024, got 56."),
        ({"model": "other"}, "model: 'other' is not available; choose one of: sd, sdxl."),
    ],
)
def test_refusals(fields: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError) as info:
        check(**fields)
    assert str(info.value) == message
    assert info.value.field == message.split(":")[0]


def test_blocked_terms_are_whole_words() -> None:
    assert check(prompt="a gorey ungore tale").prompt == "a gorey ungore tale"


def test_clean_text_strips_controls_and_bidi_but_keeps_emoji_sequences() -> None:
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"
    assert clean_text(" a\tb\n\nc\x07 ") == "a b c"
    assert clean_text("safe \u202egnp.exe") == "safe gnp.exe"
    assert clean_text(f"family {family}") == f"family {family}"


def test_truncation_note_uses_the_real_clip_tokenizer() -> None:
    long = validate_request(
        RequestInput(prompt="castle " * 90),
        LIMITS.__class__(default_model="sd", max_prompt_chars=1000),
        DEFAULTS,
        rng=random.Random(1),
    )
    assert any("90 tokens" in note and "first 75" in note for note in long.notes)
    short = validate_request(RequestInput(prompt="castle " * 10, seed=3), LIMITS, DEFAULTS)
    assert short.notes == ()


@pytest.mark.parametrize(
    ("text", "size"), [("512", (512, 512)), ("768x512", (768, 512)), (" 640 X 480 ", (640, 480))]
)
def test_parse_size(text: str, size: tuple[int, int]) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "big", "512x", "-512", "1e3"])
def test_parse_size_refuses(text: str) -> None:
    with pytest.raises(RequestError, match="size: give N or WxH"):
        parse_size(text)


def test_model_defaults_from_config_files(tiny_models) -> None:  # type: ignore[no-untyped-def]
    defaults = model_defaults(str(tiny_models[0]))
    assert (defaults.width, defaults.height, defaults.steps, defaults.guidance) == (64, 64, 50, 7.5)
    # A hub model not in the cache gets Stable Diffusion's defaults.
    assert model_defaults("someone/not-cached-model") == ModelDefaults(512, 512, 50, 7.5)


@pytest.mark.parametrize(
    "prompt",
    [
        "much go\u200bre",  # a zero-width space inside the word
        "much g\u00adore",  # a soft hyphen
        "much g\u2060o\ufe0fre",  # word joiner, variation selector
        "much g\u043er\u0435",  # Cyrillic о and е
        "much \u0261\u03bfre",  # a script g, a Greek omicron
        "much \uff27\uff2f\uff32\uff25",  # fullwidth letters (NFKC)
        "much bad\u200b word",
        "much gore\u2800photo",  # a blank that shows like a space separates words
        "much \u0262\u1d0f\u0280\u1d07",  # Latin small capitals
        "much G\u041eR\u0415",  # Cyrillic capitals О and Е
    ],
)
def test_blocked_terms_match_as_the_model_reads_them(prompt: str) -> None:
    with pytest.raises(RequestError) as info:
        check(prompt=prompt)
    assert "contains the blocked term" in str(info.value)


@pytest.mark.parametrize("prompt", ["\u3164\u3164", "\u2800\u2800\u2800", "\u200b\u3164\u2800"])
def test_fillers_and_blank_patterns_are_not_visible_text(prompt: str) -> None:
    with pytest.raises(RequestError) as info:
        check(prompt=prompt)
    assert str(info.value) == "prompt: must contain visible text."


def test_other_scripts_and_accents_are_kept_and_not_blocked() -> None:
    for prompt in ("Москва at night", "a naïve café", "東京の夜"):
        assert check(prompt=prompt).prompt == prompt
