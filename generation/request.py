"""Validating a generation request: pure functions, no I/O, one clear sentence per refusal."""

from __future__ import annotations

import random
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confusable_homoglyphs import confusables

from dreamrate.core.errors import DreamrateError
from dreamrate.generation.model_info import ModelDefaults
from dreamrate.generation.tokens import CLIP_CONTEXT_TOKENS

if TYPE_CHECKING:
    from dreamrate.core.settings import GenerationSettings

__all__ = [
    "MAX_SEED",
    "GenerationLimits",
    "GenerationRequest",
    "RequestError",
    "RequestInput",
    "clean_text",
    "has_visible",
    "match_form",
    "parse_size",
    "prepare_validation",
    "validate_request",
]

MAX_SEED = 2**32 - 1
#: Characters that reorder text on display (bidi overrides/isolates): a prompt could spoof what others see.
_BIDI_CONTROLS = dict.fromkeys(
    [0x200E, 0x200F, 0x061C, *range(0x202A, 0x202F), *range(0x2066, 0x206A)], None
)


class RequestError(DreamrateError, ValueError):
    """The request was refused."""

    def __init__(self, field_name: str, message: str) -> None:
        self.field = field_name
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestInput:
    """What a member typed; every field but the prompt optional."""

    prompt: str
    negative: str | None = None
    seed: int | None = None
    steps: int | None = None
    guidance: float | None = None
    width: int | None = None
    height: int | None = None
    images: int | None = None
    model: str | None = None
    #: Candidates per requested image, of which the active predictor keeps the best.
    best_of: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationLimits:
    """The bounds a request must respect (from :class:`GenerationSettings`)."""

    default_model: str
    allowed_models: tuple[str, ...] = ()
    max_prompt_chars: int = 1000
    max_images: int = 4
    min_size: int = 32
    max_size: int = 1024
    max_steps: int = 50
    max_guidance: float = 20.0
    blocked_terms: tuple[str, ...] = ()
    default_steps: int | None = None
    default_guidance: float | None = None
    #: Registered names (``dreamrate models add``) and the model each loads, for defaults.
    registered: dict[str, str] = field(default_factory=dict)
    #: Most candidates per image a request may ask for (1: best-of-N is off).
    max_best_of: int = 1
    #: Candidates per image when a request gives none (a guild's default).
    default_best_of: int = 1
    #: Whether an active predictor exists to pick the best of several candidates.
    can_pick: bool = False

    @classmethod
    def from_settings(cls, settings: GenerationSettings) -> GenerationLimits:
        return cls(
            default_model=settings.model,
            allowed_models=tuple(settings.allowed_models),
            max_prompt_chars=settings.max_prompt_chars,
            max_images=settings.max_images,
            min_size=settings.min_size,
            max_size=settings.max_size,
            max_steps=settings.max_steps,
            max_guidance=settings.max_guidance,
            blocked_terms=tuple(settings.blocked_terms),
            default_steps=settings.default_steps,
            default_guidance=settings.default_guidance,
            max_best_of=settings.max_best_of,
        )

    @property
    def models(self) -> tuple[str, ...]:
        configured = (
            self.default_model,
            *(m for m in self.allowed_models if m != self.default_model),
        )
        return (*configured, *(m for m in self.registered if m not in configured))

    def loads(self, model: str) -> str:
        """The diffusers model behind ``model`` (a registered LoRA's base), for its defaults."""
        return self.registered.get(model, model)


@dataclass(frozen=True, slots=True, kw_only=True)
class GenerationRequest:
    """A valid request, every parameter resolved (the seed too), ready to queue."""

    prompt: str
    negative_prompt: str | None
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    num_images: int
    model: str
    scheduler: str = "default"
    #: Candidates rendered per requested image (the active predictor keeps the best).
    best_of: int = 1
    #: Things the member should know that are not errors (e.g. truncation at 77 tokens).
    notes: tuple[str, ...] = field(default=())


def clean_text(text: str) -> str:
    """Strip control and display-reordering characters, collapse whitespace, trim.

    Zero-width joiners stay: emoji sequences need them.
    """
    text = unicodedata.normalize("NFC", text).translate(_BIDI_CONTROLS)
    text = "".join(" " if unicodedata.category(ch) == "Cc" else ch for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def parse_size(text: str) -> tuple[int, int]:
    """``"512"`` -> (512, 512); ``"768x512"`` -> (768, 512).

    Raises
    ------
    RequestError
        when the text is neither form.
    """
    match = re.fullmatch(r"\s*(\d{1,5})\s*(?:[xX×]\s*(\d{1,5}))?\s*", text)
    if not match:
        raise RequestError(
            "size", f"size: give N or WxH in pixels (e.g. 512 or 768x512), not {text!r}."
        )
    width = int(match.group(1))
    return width, int(match.group(2) or width)


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _in_range(name: str, value: float, low: float, high: float) -> None:
    if not low <= value <= high:
        raise RequestError(
            name, f"{name}: must be between {_num(low)} and {_num(high)}, got {_num(value)}."
        )


#: Characters that show nothing although Unicode calls them letters or symbols (fillers,
#: blank patterns) or that are default-ignorable (joiners, variation selectors, tags).
_BLANK = frozenset(
    (
        *(0x115F, 0x1160, 0x17B4, 0x17B5, 0x2800, 0x3164, 0xFFA0, 0xFEFF, 0x034F, 0x180E),
        *range(0x180B, 0x1810),
        *range(0x200B, 0x2010),
        *range(0x2060, 0x2070),
        *range(0xFE00, 0xFE10),
        *range(0x1D173, 0x1D17B),
        *range(0xE0000, 0xE1000),
    )
)
#: Latin letters that Unicode's confusables table leaves alone (it only maps other scripts).
#: Latin small capitals, script and dotless letters, and the lower-case Cyrillic letters
#: that look like small capitals (в н т м к): the confusables table maps none of them.
_LATIN_LOOKALIKES = str.maketrans(
    {
        **dict(zip("ᴀʙᴄᴅᴇꜰɢʜɪᴊᴋʟᴍɴᴏᴘʀꜱᴛᴜᴠᴡʏᴢ", "abcdefghijklmnoprstuvwyz", strict=True)),
        **{"ɡ": "g", "ı": "i", "ſ": "s", "ɑ": "a", "ɩ": "i"},
        **dict(zip("вгнтмкпш", "brhtmknw", strict=True)),
    }
)


def _fold_lookalikes(text: str) -> str:
    """Letters of other scripts that look like Latin ones (Cyrillic а, Greek ο) replaced by
    the Latin letter, after Unicode's confusables table."""
    found = confusables.is_confusable(text, greedy=True, preferred_aliases=["latin", "common"])
    swap: dict[str, str] = {}
    for entry in found or ():
        latin = [g["c"] for g in entry["homoglyphs"] if g["c"].isascii() and g["c"].isalnum()]
        if latin:
            swap[entry["character"]] = latin[0]
    return "".join(swap.get(ch, ch) for ch in text).translate(_LATIN_LOOKALIKES)


def match_form(text: str, *, hidden: str = "") -> str:
    """``text`` as blocked terms are matched against it: compatibility forms unified (NFKC),
    invisible and format characters replaced by ``hidden`` (dropped by default: a word
    split by a zero-width space still reads as one), case and look-alike letters folded
    (before and after case folding, so capitals of other scripts fold too)."""
    text = _fold_lookalikes(unicodedata.normalize("NFKC", text))
    kept = "".join(
        hidden if unicodedata.category(ch) == "Cf" or ord(ch) in _BLANK else ch for ch in text
    )
    return _fold_lookalikes(kept.casefold())


def has_visible(text: str) -> bool:
    """Whether anything in ``text`` would show: a letter, digit, mark of punctuation or
    symbol that is not a blank filler or pattern."""
    return any(unicodedata.category(ch)[0] in "LNPS" and ord(ch) not in _BLANK for ch in text)


def _blocked(prompt: str, terms: Sequence[str]) -> str | None:
    # Both readings of an invisible character: it joins ("go\u200bre") or it separates, as
    # a blank that shows like a space does ("nude\u2800photo").
    forms = (match_form(prompt), match_form(prompt, hidden=" "))
    for term in terms:
        pattern = r"(?<!\w)" + re.escape(match_form(term)) + r"(?!\w)"
        if term.strip() and any(re.search(pattern, form) for form in forms):
            return term
    return None


def validate_request(
    raw: RequestInput,
    limits: GenerationLimits,
    defaults: ModelDefaults,
    *,
    rng: random.Random | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> GenerationRequest:
    """Check every field against ``limits`` and fill in what was left out.

    Parameters
    ----------
    raw
        The member's input.
    limits
        Bounds from settings.
    defaults
        The chosen model's own size, steps and guidance (used when absent).
    rng
        Source of random seeds (default: the system's).
    count_tokens
        Counts CLIP tokens of the prompt (default: the real CLIP tokenizer).

    Raises
    ------
    RequestError
        one sentence naming the field and what is allowed.
    """
    # 1. Model
    model = raw.model or limits.default_model
    if model not in limits.models:
        raise RequestError(
            "model",
            f"model: {model!r} is not available; choose one of: {', '.join(limits.models)}.",
        )

    # 2. Prompt and negative prompt
    prompt = clean_text(raw.prompt or "")
    if not prompt:
        raise RequestError("prompt", "prompt: must not be empty.")
    if not has_visible(prompt):
        # Only fillers, blank patterns or zero-width characters: nothing a reader (or CLIP) sees.
        raise RequestError("prompt", "prompt: must contain visible text.")
    if len(prompt) > limits.max_prompt_chars:
        raise RequestError(
            "prompt",
            f"prompt: must be at most {limits.max_prompt_chars} characters, got {len(prompt)}.",
        )
    term = _blocked(prompt, limits.blocked_terms)
    if term is not None:
        raise RequestError(
            "prompt", f"prompt: contains the blocked term {term!r}; please rephrase."
        )
    negative = clean_text(raw.negative) if raw.negative else None
    if negative is not None and len(negative) > limits.max_prompt_chars:
        raise RequestError(
            "negative",
            f"negative: must be at most {limits.max_prompt_chars} characters, got {len(negative)}.",
        )

    # 3. Numbers
    seed = raw.seed if raw.seed is not None else (rng or random.SystemRandom()).randint(0, MAX_SEED)
    _in_range("seed", seed, 0, MAX_SEED)
    steps = (
        raw.steps
        if raw.steps is not None
        else (limits.default_steps or min(defaults.steps, limits.max_steps))
    )
    _in_range("steps", steps, 1, limits.max_steps)
    guidance = (
        raw.guidance
        if raw.guidance is not None
        else (limits.default_guidance if limits.default_guidance is not None else defaults.guidance)
    )
    if guidance != guidance:  # NaN
        raise RequestError(
            "guidance", f"guidance: must be a number between 0 and {limits.max_guidance:g}."
        )
    _in_range("guidance", guidance, 0, limits.max_guidance)
    images = raw.images if raw.images is not None else 1
    _in_range("images", images, 1, limits.max_images)
    best_of = raw.best_of if raw.best_of is not None else limits.default_best_of
    _in_range("best_of", best_of, 1, limits.max_best_of)
    if best_of > 1 and not limits.can_pick:
        raise RequestError(
            "best_of",
            "best_of: no predictor is active to pick the best (a maintainer trains one "
            "with `dreamrate train`).",
        )
    width = raw.width if raw.width is not None else defaults.width
    height = raw.height if raw.height is not None else defaults.height
    for name, value in (("width", width), ("height", height)):
        if value % 8 or not limits.min_size <= value <= limits.max_size:
            raise RequestError(
                name,
                f"{name}: must be a multiple of 8 between {limits.min_size} and {limits.max_size}, got {value}.",
            )

    # 4. Notes that are not refusals
    notes: list[str] = []
    if raw.seed is None:
        notes.append(f"seed {seed} chosen at random")
    counter = count_tokens
    if counter is None:
        from dreamrate.generation.tokens import clip_token_count

        counter = clip_token_count
    tokens = counter(prompt)
    if tokens > CLIP_CONTEXT_TOKENS:
        notes.append(
            f"the prompt is {tokens - 2} tokens; the text encoder reads only the first "
            f"{CLIP_CONTEXT_TOKENS - 2}, the rest is ignored"
        )
    return GenerationRequest(
        prompt=prompt,
        negative_prompt=negative or None,
        seed=int(seed),
        steps=int(steps),
        guidance=float(guidance),
        width=int(width),
        height=int(height),
        num_images=int(images),
        model=model,
        notes=tuple(notes),
        best_of=int(best_of),
    )


def prepare_validation(limits: GenerationLimits) -> None:
    """Load what validation reads (the CLIP tokenizer, each allowed model's defaults) now,
    before the first request: a bot that loads them on its first ``/dream`` answers late.
    Blocking; run it in a thread."""
    from dreamrate.generation.model_info import model_defaults
    from dreamrate.generation.tokens import clip_token_count

    clip_token_count("warm up")
    for model in limits.models:
        model_defaults(limits.loads(model))
