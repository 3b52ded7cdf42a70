"""The requests use case, called directly (no Discord): a server's limits hold on every path
a member can get a prompt rendered by (/dream, Reroll, /arena), and on none of another's."""

from __future__ import annotations

import random
import re

import pytest
from sqlalchemy import func, select

from dreamrate.community.arena import ArenaError, ArenaRounds
from dreamrate.community.guild_settings import update_guild_settings
from dreamrate.community.members import Member
from dreamrate.community.moderation import set_banned
from dreamrate.community.refusals import NotAllowed, NotFound
from dreamrate.community.requests import Requests, server_limits
from dreamrate.db.models import GuildSettings, Job
from dreamrate.generation.queue import JobRepository
from dreamrate.generation.request import GenerationLimits, RequestError, RequestInput

GUILD, OTHER_GUILD, CHANNEL = 7001, 7002, 8001
ADA, BOB = Member(11, "ada"), Member(12, "bob")
BASE = GenerationLimits(default_model="tiny", blocked_terms=("gore",), max_best_of=4)


@pytest.fixture
def requests(engine) -> Requests:  # type: ignore[no-untyped-def]
    repo = JobRepository(engine, per_user_cap=10, global_cap=100)
    return Requests(engine=engine, repo=repo, limits=BASE)


async def _jobs(engine) -> int:  # type: ignore[no-untyped-def]
    async with engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(Job)) or 0)


def test_server_limits_add_the_guilds_terms_and_its_best_of_only_with_a_predictor() -> None:
    guild = GuildSettings(guild_id=GUILD, blocked_terms=["castle"], best_of=3)
    limits = server_limits(BASE, guild, predictor_active=True)
    assert limits.blocked_terms == ("gore", "castle") and limits.default_best_of == 3
    assert limits.can_pick
    waiting = server_limits(BASE, guild, predictor_active=False)
    assert waiting.blocked_terms == ("gore", "castle") and waiting.default_best_of == 1
    assert not waiting.can_pick
    capped = server_limits(BASE, GuildSettings(guild_id=GUILD, best_of=9), predictor_active=True)
    assert capped.default_best_of == 4  # never past the settings' own cap
    assert server_limits(BASE, None, predictor_active=False).blocked_terms == ("gore",)


async def test_dream_reroll_and_arena_obey_the_guilds_blocked_terms_of_today(
    requests: Requests, engine
) -> None:  # type: ignore[no-untyped-def]
    request = await requests.dream(RequestInput(prompt="a castle at dawn"), None, guild_id=GUILD)
    queued = await requests.enqueue(request, member=ADA, guild_id=GUILD, channel_id=CHANNEL)
    await update_guild_settings(engine, GUILD, blocked_terms=["castle"])
    blocked = re.escape("prompt: contains the blocked term 'castle'; please rephrase.")
    with pytest.raises(RequestError, match=blocked):
        await requests.dream(RequestInput(prompt="a CASTLE"), None, guild_id=GUILD)
    with pytest.raises(RequestError, match=blocked):
        await requests.reroll(queued.job.id, guild_id=GUILD, member=ADA, moderator=False)
    with pytest.raises(RequestError, match=blocked):
        await ArenaRounds(requests).plan(GUILD, "a castle by the sea")
    # The settings' own list holds everywhere, the guild's only there.
    with pytest.raises(RequestError, match="'gore'"):
        await requests.dream(RequestInput(prompt="gore"), None, guild_id=OTHER_GUILD)
    elsewhere = await requests.dream(RequestInput(prompt="a castle"), None, guild_id=OTHER_GUILD)
    assert elsewhere.prompt == "a castle"
    assert await _jobs(engine) == 1


async def test_reroll_is_the_requesters_or_a_moderators_and_stays_in_its_guild(
    requests: Requests,
) -> None:
    request = await requests.dream(RequestInput(prompt="a kite", seed=5), "64", guild_id=GUILD)
    job = (await requests.enqueue(request, member=ADA, guild_id=GUILD, channel_id=CHANNEL)).job
    with pytest.raises(NotAllowed, match="Only the requester or a moderator can reroll"):
        await requests.reroll(job.id, guild_id=GUILD, member=BOB, moderator=False)
    with pytest.raises(NotFound, match=re.escape(f"There is no job {job.id}.")):
        await requests.reroll(job.id, guild_id=OTHER_GUILD, member=ADA, moderator=True)
    again = await requests.reroll(
        job.id, guild_id=GUILD, member=BOB, moderator=True, rng=random.Random(1)
    )
    assert (again.prompt, again.width, again.steps) == ("a kite", 64, job.steps)
    assert again.seed != 5 and again.notes[0] == f"reroll of job {job.id}, seed {again.seed}"


async def test_a_reroll_repeats_the_jobs_best_of_under_todays_rules(
    requests: Requests, engine
) -> None:  # type: ignore[no-untyped-def]
    """Same settings, new seed: best-of too. With no predictor active now to pick the best,
    the reroll is refused in one line rather than quietly rendering one candidate."""
    from dreamrate.generation.queue import JobRepository as Repo
    from tests.generation.conftest import make_request

    user = (
        await requests.enqueue(
            await requests.dream(RequestInput(prompt="x"), None, guild_id=GUILD),
            member=ADA,
            guild_id=GUILD,
            channel_id=CHANNEL,
        )
    ).job.requester_id
    repo: Repo = requests.repo
    job = await repo.enqueue(
        make_request("a lantern", best_of=3, model="tiny"), requester_id=user, guild_id=GUILD
    )
    with pytest.raises(RequestError, match="best_of"):
        await requests.reroll(job.id, guild_id=GUILD, member=ADA, moderator=False)


async def test_where_a_member_may_ask(requests: Requests, engine) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NotAllowed, match="works in a server's channels"):
        await requests.check(None, None, ADA)
    await requests.check(GUILD, CHANNEL, ADA)
    await update_guild_settings(engine, GUILD, allowed_channel_ids=[CHANNEL + 1])
    with pytest.raises(
        NotAllowed, match=re.escape(f"/arena is not allowed in this channel; use <#{CHANNEL + 1}>.")
    ):
        await requests.check(GUILD, CHANNEL, ADA, "/arena")
    await requests.check(GUILD, CHANNEL + 1, ADA)
    await set_banned(engine, GUILD, ADA.discord_id, True)
    with pytest.raises(NotAllowed, match="You are banned"):
        await requests.check(GUILD, CHANNEL + 1, ADA)
    await requests.check(OTHER_GUILD, CHANNEL, ADA)  # a ban holds where it was made


async def test_an_arena_round_checks_its_prompt_then_needs_two_models(requests: Requests) -> None:
    with pytest.raises(RequestError, match=re.escape("prompt: must not be empty.")):
        await ArenaRounds(requests).plan(GUILD, "   ")
    with pytest.raises(ArenaError, match="needs two models"):
        await ArenaRounds(requests).plan(GUILD, "a fox")
