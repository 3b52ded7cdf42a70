"""The web home over HTTP: login through the local Discord, what each member may see, and
every refusal (CSRF, forged or expired sessions, OAuth state, other guilds, traversal, bad
input) recording nothing.

Tests whose outcome does not depend on the database (logins, refusals, escaping, files,
the throttle) run on SQLite only; those that read or write what the two databases treat
differently (ids and cursors, rankings, recorded ratings and choices, erase, the audit
log, per-day figures) run on both."""

from __future__ import annotations

import base64
import json
import time

import aiohttp
from itsdangerous import TimestampSigner
from sqlalchemy import func, select, update

from dreamrate.db.models import (
    AuditEntry,
    ChoiceEvent,
    Flag,
    GuildBan,
    Image,
    Job,
    Rating,
    RatingEvent,
    User,
)
from dreamrate.fake_discord import GUILD_B_ID, GUILD_ID
from tests.bot.conftest import TOKEN
from tests.databases import sqlite_only
from tests.web.conftest import (
    ALICE,
    BOB,
    MOD,
    STRANGER,
    Web,
    client,
    csrf_of,
    login,
    signed_session,
)


async def _count(web: Web, table) -> int:  # type: ignore[no-untyped-def]
    async with web.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table)))


async def _text(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, allow_redirects=False) as response:
        return response.status, (await response.read()).decode(errors="replace")


@sqlite_only
async def test_login_shows_only_guilds_shared_with_the_bot(web: Web) -> None:
    async with client() as alice, client() as bob, client() as stranger:
        await login(alice, web, ALICE)
        await login(bob, web, BOB)
        await login(stranger, web, STRANGER)
        _, home = await _text(alice, f"{web.base}/")
        assert f"/g/{GUILD_ID}" in home and f"/g/{GUILD_B_ID}" not in home
        _, home = await _text(bob, f"{web.base}/")
        assert f"/g/{GUILD_ID}" in home and f"/g/{GUILD_B_ID}" in home
        _, home = await _text(stranger, f"{web.base}/")
        assert "You share no server with the bot yet." in home
        # The session cookie: signed, HttpOnly, SameSite=Lax; not Secure over plain http.
        (morsel,) = [c for c in alice.cookie_jar if c.key == "dreamrate_session"]
        assert morsel["httponly"] and morsel["samesite"].lower() == "lax"
        assert not morsel["secure"]
        # The access tokens Discord gave never reach a cookie (it is signed, not encrypted).
        value = morsel.value.split(".")[0]
        session = json.loads(base64.b64decode(value + "=" * (-len(value) % 4)))
        assert session["uid"] == str(ALICE.id)
        assert set(session) == {"uid", "name", "guilds", "csrf", "sid", "at"}
        tokens = list(web.discord.oauth._tokens)
        assert len(tokens) == 3 and not any(t in json.dumps(session) for t in tokens)


@sqlite_only
async def test_a_member_of_one_guild_sees_nothing_of_another(web: Web) -> None:
    secret = web.prompts[web.images[GUILD_B_ID][0]]
    b_image = web.images[GUILD_B_ID][0]
    a_image = web.images[GUILD_ID][0]
    async with client() as alice:
        await login(alice, web, ALICE)
        for url in (
            f"/g/{GUILD_B_ID}",
            f"/g/{GUILD_B_ID}/more",
            f"/g/{GUILD_B_ID}/i/{b_image}",
            f"/g/{GUILD_B_ID}/mod",
            f"/g/{GUILD_B_ID}/rate",
        ):
            status, body = await _text(alice, web.base + url)
            assert status == 403, url
            assert secret not in body and "nightowls" not in body, url
        # Another guild's image through this guild's pages, or its files: not found.
        for url in (f"/g/{GUILD_ID}/i/{b_image}", f"/img/{b_image}.png", f"/thumb/{b_image}.webp"):
            status, body = await _text(alice, web.base + url)
            assert status == 404 and secret not in body, url
        async with alice.get(f"{web.base}/img/{a_image}.png") as response:
            assert response.status == 200
            etag = response.headers["ETag"]
        # The content's hash is its version: a browser's copy is confirmed, not sent again;
        # another guild's image stays not found, whatever the browser claims to hold.
        for image, expected in ((a_image, 304), (b_image, 404)):
            url = f"{web.base}/img/{image}.png"
            async with alice.get(url, headers={"If-None-Match": etag}) as response:
                assert response.status == expected
                assert (response.headers.get("ETag") == etag) == (expected == 304)
        # A member is no moderator: the moderation page of their own guild is refused.
        status, body = await _text(alice, f"{web.base}/g/{GUILD_ID}/mod")
        assert status == 403 and "Only moderators" in body
        status, body = await _text(alice, f"{web.base}/maintainers")
        assert status == 403


@sqlite_only
async def test_refusals_without_login_and_with_bad_sessions(web: Web) -> None:
    image = web.images[GUILD_ID][0]
    async with client() as anonymous:
        for url in (f"/g/{GUILD_ID}", f"/g/{GUILD_ID}/i/{image}", f"/img/{image}.png", "/me"):
            status, body = await _text(anonymous, web.base + url)
            assert status == 401 and "Log in with Discord" in body, url
        async with anonymous.get(f"{web.base}/g/{GUILD_ID}/rate/next") as response:
            assert response.status == 401 and (await response.json())["error"]
    # A forged cookie: the right shape, signed with another key.
    forged = TimestampSigner("not-the-key").sign(
        _b64(
            {
                "uid": str(MOD.id),
                "name": "x",
                "guilds": {str(GUILD_ID): ["x", True]},
                "csrf": "c",
                "at": time.time(),
            }
        )
    )
    async with client() as forger:
        forger.cookie_jar.update_cookies({"dreamrate_session": forged.decode()})
        status, _ = await _text(forger, f"{web.base}/g/{GUILD_ID}/mod")
        assert status == 401
    # An expired login: the session's login time is older than the session lifetime.
    login = {
        "uid": str(MOD.id),
        "name": "x",
        "guilds": {str(GUILD_ID): ["x", True]},
        "csrf": "c",
        "sid": "old",
        "at": time.time() - 13 * 3600,
    }
    old = await signed_session(web, login)
    async with client() as late:
        late.cookie_jar.update_cookies({"dreamrate_session": old})
        status, _ = await _text(late, f"{web.base}/g/{GUILD_ID}/mod")
        assert status == 401
    # The same cookie with a fresh login time is accepted: the test above tests expiry.
    fresh = await signed_session(web, {**login, "sid": "fresh", "at": time.time()})
    async with client() as ok:
        ok.cookie_jar.update_cookies({"dreamrate_session": fresh})
        status, _ = await _text(ok, f"{web.base}/g/{GUILD_ID}/mod")
        assert status == 200
    # Signed with the right key but no login of the database's: refused.
    key = (web.settings.data_dir / "web-secret-key").read_text().strip()
    for unknown in ({**login, "sid": "never-logged-in", "at": time.time()},
                    {k: v for k, v in login.items() if k != "sid"} | {"at": time.time()}):  # fmt: skip
        async with client() as forger:
            cookie = TimestampSigner(key).sign(_b64(unknown)).decode()
            forger.cookie_jar.update_cookies({"dreamrate_session": cookie})
            status, _ = await _text(forger, f"{web.base}/g/{GUILD_ID}/mod")
            assert status == 401


def _b64(data: dict[str, object]) -> bytes:
    import base64

    return base64.b64encode(json.dumps(data).encode())


@sqlite_only
async def test_oauth_state_and_codes_are_checked(web: Web) -> None:
    async with client() as session:
        # A callback this browser did not start: refused, no session.
        status, body = await _text(session, f"{web.base}/callback?code=abc&state=forged")
        assert status == 400 and "Login refused" in body
        status, _ = await _text(session, f"{web.base}/g/{GUILD_ID}")
        assert status == 401
        # A login started here but finished with another state.
        async with session.get(f"{web.base}/login", allow_redirects=False) as response:
            location = response.headers["Location"]
        assert "state=" in location and "scope=identify+guilds" in location
        status, body = await _text(session, f"{web.base}/callback?code=abc&state=other")
        assert status == 400 and "Login refused" in body
        # A code Discord does not know (the state is right this time).
        async with session.get(f"{web.base}/login", allow_redirects=False) as response:
            state = response.headers["Location"].split("state=")[1].split("&")[0]
        status, body = await _text(session, f"{web.base}/callback?code=made-up&state={state}")
        assert status == 502 and "invalid_grant" in body
        assert web.discord.oauth.token_requests[-1] == "invalid_grant"
        status, _ = await _text(session, f"{web.base}/g/{GUILD_ID}")
        assert status == 401


@sqlite_only
async def test_clicks_need_the_csrf_token_and_a_value_on_the_scale(web: Web) -> None:
    image = web.images[GUILD_ID][0]
    url = f"{web.base}/g/{GUILD_ID}/rate"
    async with client() as alice:
        csrf = await login(alice, web, ALICE)
        for headers in ({}, {"X-CSRF-Token": "wrong"}):
            async with alice.post(url, json={"image_id": image, "value": 5}, headers=headers) as r:
                assert r.status == 403 and "CSRF" in (await r.json())["error"]
        ok = {"X-CSRF-Token": csrf}
        for body, status in (
            ({"image_id": image, "value": 11}, 400),
            ({"image_id": image, "value": "high"}, 400),
            ({"image_id": image}, 400),
            ({"image_id": web.images[GUILD_B_ID][0], "value": 5}, 404),
            ({"image_id": 999_999, "value": 5}, 404),
        ):
            async with alice.post(url, json=body, headers=ok) as r:
                assert r.status == status, (body, await r.text())
        async with alice.post(
            url, data="[1,2]", headers={**ok, "Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
        # A choice on a pair never shown to this member.
        choose = f"{web.base}/g/{GUILD_ID}/compare"
        async with alice.post(choose, json={"pair": "-123", "winner": "a"}, headers=ok) as r:
            assert r.status == 404 and "not shown to you" in (await r.json())["error"]
        # Forms need it too: a moderator action and an erase without the token.
        async with alice.post(f"{web.base}/me/erase", data={"confirm": "erase"}) as r:
            assert r.status == 403
    assert await _count(web, RatingEvent) == 0 and await _count(web, ChoiceEvent) == 0
    async with client() as mod:
        await login(mod, web, MOD)
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/ban", data={"discord_id": str(ALICE.id), "csrf": "x"}
        ) as r:
            assert r.status == 403
    assert await _count(web, GuildBan) == 0 and await _count(web, AuditEntry) == 0


async def test_a_pair_shown_to_one_member_takes_only_their_choice(web: Web) -> None:
    async with client() as alice, client() as bob:
        a_csrf = await login(alice, web, ALICE)
        b_csrf = await login(bob, web, BOB)
        async with alice.get(f"{web.base}/g/{GUILD_ID}/compare/next") as r:
            pair = (await r.json())["pair"]
        url = f"{web.base}/g/{GUILD_ID}/compare"
        async with bob.post(
            url, json={"pair": pair["id"], "winner": "b"}, headers={"X-CSRF-Token": b_csrf}
        ) as r:
            assert r.status == 404
        async with alice.post(
            url, json={"pair": pair["id"], "winner": "x"}, headers={"X-CSRF-Token": a_csrf}
        ) as r:
            assert r.status == 400
        async with alice.post(
            url, json={"pair": pair["id"], "winner": "b"}, headers={"X-CSRF-Token": a_csrf}
        ) as r:
            assert r.status == 200 and (await r.json())["outcome"] == "chosen"
    assert await _count(web, ChoiceEvent) == 1


@sqlite_only
async def test_the_click_throttle_slows_one_member_only(web: Web) -> None:
    from dreamrate.web.security import ClickThrottle

    # Three clicks at once, then one a minute: the fourth in a row is refused.
    web.app.state.ctx.throttle = ClickThrottle(rate=1 / 60, burst=3)
    image = web.images[GUILD_ID][0]
    url = f"{web.base}/g/{GUILD_ID}/rate"
    async with client() as alice, client() as bob:
        a = {"X-CSRF-Token": await login(alice, web, ALICE)}
        b = {"X-CSRF-Token": await login(bob, web, BOB)}
        statuses = []
        for k in range(6):
            async with alice.post(
                url, json={"image_id": image, "value": 1 + k % 10}, headers=a
            ) as r:
                statuses.append(r.status)
        assert statuses == [200, 200, 200, 429, 429, 429]
        async with bob.post(url, json={"image_id": image, "value": 4}, headers=b) as r:
            assert r.status == 200
    async with web.engine.connect() as conn:
        # Every accepted click is one rating event pair at most; the refused ones left none.
        accepted = statuses.count(200)
        adds = await conn.scalar(
            select(func.count()).where(
                RatingEvent.kind == "add", RatingEvent.discord_user_id == ALICE.id
            )
        )
    assert adds == accepted


@sqlite_only
async def test_paths_that_try_to_leave_the_image_store_are_refused(web: Web) -> None:
    image = web.images[GUILD_ID][0]
    async with client() as alice:
        await login(alice, web, ALICE)
        for url in (
            "/img/..%2F..%2Fdreamrate.db.png",
            "/img/%2e%2e/web-secret-key",
            "/thumb/..%2fweb-secret-key.webp",
            "/static/..%2Fweb-secret-key",
            "/static/%2e%2e/%2e%2e/dreamrate.db",
            f"/img/{image}.png/../../dreamrate.db",
        ):
            status, body = await _text(alice, web.base + url)
            assert status == 404, url
            assert "SQLite" not in body
        # A tampered row pointing outside the store is refused too.
        async with web.engine.begin() as conn:
            await conn.execute(
                update(Image).where(Image.id == image).values(path="../web-secret-key")
            )
        for url in (f"/img/{image}.png", f"/thumb/{image}.webp"):
            status, body = await _text(alice, web.base + url)
            assert status == 404, url
        key = (web.settings.data_dir / "web-secret-key").read_text().strip()
        assert key not in body


async def test_oversized_queries_bad_cursors_and_unknown_ids_are_clear_4xx(web: Web) -> None:
    async with client() as alice:
        await login(alice, web, ALICE)
        status, _ = await _text(alice, f"{web.base}/g/{GUILD_ID}?q={'x' * 5000}")
        assert status == 414
        status, body = await _text(alice, f"{web.base}/g/{GUILD_ID}?q={'x' * 300}")
        assert status == 400 and "200 characters" in body
        status, body = await _text(alice, f"{web.base}/g/{GUILD_ID}/more?cursor=zzz")
        assert status == 400 and "bad cursor" in body
        status, _ = await _text(alice, f"{web.base}/g/{GUILD_ID}?sort=random")
        assert status == 400
        status, _ = await _text(alice, f"{web.base}/g/{GUILD_ID}?since=yesterday")
        assert status == 400
        status, _ = await _text(alice, f"{web.base}/g/{GUILD_ID}/i/999999")
        assert status == 404
        status, _ = await _text(alice, f"{web.base}/g/123")
        assert status == 403
        status, _ = await _text(alice, f"{web.base}/g/notanumber")
        assert status == 404


async def test_gallery_pages_cover_every_shown_image_once_best_first(web: Web) -> None:
    ids = web.images[GUILD_ID]
    removed, flagged, reported = ids[0], ids[1], ids[2]
    async with web.engine.begin() as conn:
        await conn.execute(update(Image).where(Image.id == removed).values(removed=True))
        await conn.execute(update(Image).where(Image.id == flagged).values(flagged=True))
        await conn.execute(Flag.__table__.insert().values(image_id=reported, reason=""))
    shown = ids[3:]
    async with client() as alice, client() as bob:
        a = {"X-CSRF-Token": await login(alice, web, ALICE)}
        b = {"X-CSRF-Token": await login(bob, web, BOB)}
        url = f"{web.base}/g/{GUILD_ID}/rate"
        # Ratings that make an order: shown[1] best, then shown[0], the rest unrated.
        for session, headers, image, value in (
            (alice, a, shown[1], 9), (bob, b, shown[1], 8), (alice, a, shown[0], 6),
        ):  # fmt: skip
            async with session.post(
                url, json={"image_id": image, "value": value}, headers=headers
            ) as r:
                assert r.status == 200
        from dreamrate.web import pages_gallery

        pages_gallery.PAGE, page_size = 2, pages_gallery.PAGE
        try:
            seen: list[int] = []
            status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}")
            while True:
                import re

                seen += [int(i) for i in re.findall(r'data-image="(\d+)"', html)]
                more = re.search(r'data-more="([^"]+)"', html)
                if more is None:
                    break
                status, html = await _text(alice, web.base + more.group(1).replace("&amp;", "&"))
                assert status == 200
            unrated = sorted(set(shown) - {shown[0], shown[1]}, reverse=True)
            assert seen == [shown[1], shown[0], *unrated]
            status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}?sort=new&unrated=1")
            assert shown[1] not in [int(i) for i in re.findall(r'data-image="(\d+)"', html)]
            status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}?q=picture+4")
            assert [int(i) for i in re.findall(r'data-image="(\d+)"', html)] == [ids[4]]
            status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}?q=%25")
            assert re.findall(r'data-image="(\d+)"', html) == []  # % is a character, not a wildcard
        finally:
            pages_gallery.PAGE = page_size
        # Removed, flagged and reported images have no page and no file.
        for image in (removed, flagged, reported):
            status, _ = await _text(alice, f"{web.base}/g/{GUILD_ID}/i/{image}")
            assert status == 404
            status, _ = await _text(alice, f"{web.base}/img/{image}.png")
            assert status == 404
        status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}/i/{shown[1]}")
        assert "8.50" in html and "by maker" in html


@sqlite_only
async def test_the_requester_name_hides_when_they_opt_out_and_prompts_are_text(web: Web) -> None:
    image = web.images[GUILD_ID][3]
    async with web.engine.begin() as conn:
        job_id = await conn.scalar(select(Image.job_id).where(Image.id == image))
        await conn.execute(
            update(Job)
            .where(Job.id == job_id)
            .values(prompt='<script>alert(1)</script><img src=x onerror="alert(2)">')
        )
    async with client() as alice:
        await login(alice, web, ALICE)
        status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}/i/{image}")
        assert (
            "<script>alert(1)</script>" not in html
            and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        )
        assert "by maker" in html
        async with web.engine.begin() as conn:
            requester = await conn.scalar(select(Job.requester_id).where(Job.id == job_id))
            await conn.execute(update(User).where(User.id == requester).values(opted_out=True))
        status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}/i/{image}")
        assert status == 200 and "by maker" not in html
        async with alice.get(f"{web.base}/g/{GUILD_ID}/i/{image}") as response:
            csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp


@sqlite_only
async def test_thumbnails_are_made_once_and_cached(web: Web) -> None:
    image = web.images[GUILD_ID][4]
    async with client() as alice:
        await login(alice, web, ALICE)
        async with alice.get(f"{web.base}/thumb/{image}.webp") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "image/webp"
            assert (
                "immutable" in r.headers["Cache-Control"]
                and "private" in r.headers["Cache-Control"]
            )
            first = await r.read()
        made = list((web.settings.data_dir / "thumbnails").rglob("*.webp"))
        assert len(made) == 1
        stamp = made[0].stat().st_mtime_ns
        async with alice.get(f"{web.base}/thumb/{image}.webp") as r:
            assert await r.read() == first
        assert made[0].stat().st_mtime_ns == stamp
        from io import BytesIO

        from PIL import Image as PILImage

        assert PILImage.open(BytesIO(first)).format == "WEBP"


async def test_moderators_ban_remove_and_change_settings_with_an_audit_trail(web: Web) -> None:
    image = web.images[GUILD_ID][5]
    # The image's message is on Discord (the local server), posted with the bot's token.
    async with (
        aiohttp.ClientSession() as bot,
        bot.post(
            f"{web.discord.api_base}/channels/{GUILD_ID + 1}/messages",
            json={"content": "an image"},
            headers={"Authorization": f"Bot {TOKEN}"},
        ) as posted,
    ):
        message = int((await posted.json())["id"])
    async with web.engine.begin() as conn:
        await conn.execute(
            update(Image).where(Image.id == image).values(discord_message_id=message)
        )
    async with client() as mod, client() as alice:
        csrf = await login(mod, web, MOD)
        a_csrf = await login(alice, web, ALICE)
        status, html = await _text(mod, f"{web.base}/g/{GUILD_ID}/mod")
        assert status == 200 and "Moderating dreamers" in html
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/remove", data={"image_id": str(image), "csrf": csrf}
        ) as r:
            assert r.status == 200 and "removed (1 Discord message(s) deleted)" in await r.text()
        assert message not in web.discord.messages
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/remove",
            data={"image_id": str(web.images[GUILD_B_ID][0]), "csrf": csrf},
        ) as r:
            assert r.status == 404  # another guild's image
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/ban", data={"discord_id": str(ALICE.id), "csrf": csrf}
        ) as r:
            assert r.status == 200
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/ban", data={"discord_id": "alice", "csrf": csrf}
        ) as r:
            assert r.status == 400
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/settings",
            data={
                "csrf": csrf,
                "allowed_channel_ids": f"{GUILD_ID + 1}, {GUILD_ID + 101}",
                "feed_channel_id": "",
                "feed_interval_minutes": "30",
                "feed_compare_percent": "20",
                "blocked_terms": "castle, Gore\nrobot, castle",
            },
        ) as r:
            assert r.status == 200 and "Settings saved." in await r.text()
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/settings",
            data={"csrf": csrf, "feed_interval_minutes": "0"},
        ) as r:
            assert r.status == 400
        # Only this server's text channels: not another server's, not a made-up id.
        for channel in (GUILD_B_ID + 1, 12345):
            for field in ("feed_channel_id", "allowed_channel_ids"):
                async with mod.post(
                    f"{web.base}/g/{GUILD_ID}/mod/settings",
                    data={"csrf": csrf, field: str(channel)},
                ) as r:
                    assert r.status == 400
                    assert "not a text channel of this server" in await r.text()
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/ban", data={"discord_id": str(2**64), "csrf": csrf}
        ) as r:
            assert r.status == 400
        # The ban ended the banned member's session; logged in again, their clicks are
        # refused and recorded nowhere.
        async with alice.get(f"{web.base}/me") as r:
            assert r.status == 401
        a_csrf = await login(alice, web, ALICE)
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            json={"image_id": web.images[GUILD_ID][6], "value": 3},
            headers={"X-CSRF-Token": a_csrf},
        ) as r:
            assert r.status == 403 and "banned" in (await r.json())["error"]
        status, html = await _text(mod, f"{web.base}/g/{GUILD_ID}/mod")
        assert (
            html.count("moddy (2003)") == 3
            and f"image {image}" in html
            and f"member {ALICE.id}" in html
        )
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/unban", data={"discord_id": str(ALICE.id), "csrf": csrf}
        ) as r:
            assert r.status == 200
    from dreamrate.community.guild_settings import get_guild_settings
    from dreamrate.community.moderation import is_banned_in

    settings = await get_guild_settings(web.engine, GUILD_ID)
    assert settings is not None and settings.allowed_channel_ids == [GUILD_ID + 1, GUILD_ID + 101]
    assert settings.feed_interval_minutes == 30 and settings.feed_compare_percent == 20
    assert settings.blocked_terms == ["castle", "Gore", "robot"]
    assert not await is_banned_in(web.engine, GUILD_ID, ALICE.id)
    async with web.engine.connect() as conn:
        actions = list(
            (await conn.execute(select(AuditEntry.action).order_by(AuditEntry.id))).scalars()
        )
        assert await conn.scalar(select(Image.removed).where(Image.id == image)) is True
    assert actions == ["remove", "ban", "settings", "unban"]
    assert await _count(web, Rating) == 0


async def test_erase_on_the_web_is_privacy_erase(web: Web) -> None:
    image = web.images[GUILD_ID][3]
    async with client() as alice:
        csrf = await login(alice, web, ALICE)
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            json={"image_id": image, "value": 7},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 200
        async with alice.get(f"{web.base}/me/data.json") as r:
            mine = await r.json()
        assert [x["value"] for x in mine["ratings"]] == [7.0]
        async with alice.post(f"{web.base}/me/erase", data={"csrf": csrf, "confirm": "nope"}) as r:
            assert r.status == 400
        assert await _count(web, Rating) == 1
        async with alice.post(f"{web.base}/me/erase", data={"csrf": csrf, "confirm": "erase"}) as r:
            assert r.status == 200 and "Erased 1 rating(s)" in await r.text()
        assert await _count(web, Rating) == 0 and await _count(web, RatingEvent) == 0
        # An erase ends the member's sessions: they log in again to go on.
        status, _ = await _text(alice, f"{web.base}/me")
        assert status == 401
        csrf = await login(alice, web, ALICE)
        async with alice.post(f"{web.base}/me/optout", data={"csrf": csrf}) as r:
            assert "You opted out" in await r.text()
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            json={"image_id": image, "value": 2},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 403 and "opted out" in (await r.json())["error"]
        async with alice.post(f"{web.base}/me/optin", data={"csrf": csrf}) as r:
            assert "You opted in" in await r.text()
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            json={"image_id": image, "value": 2},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 200
        # Logging out ends the session, also for a copy of the cookie kept from before.
        kept = {c.key: c.value for c in alice.cookie_jar}
        async with alice.post(f"{web.base}/logout", data={"csrf": csrf}) as r:
            assert r.status == 200
        status, _ = await _text(alice, f"{web.base}/me")
        assert status == 401
    async with client() as replay:
        replay.cookie_jar.update_cookies(kept)
        status, _ = await _text(replay, f"{web.base}/me")
        assert status == 401
        async with replay.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            json={"image_id": image, "value": 9},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 401
    assert await _count(web, Rating) == 1


async def test_maintainers_see_the_queue_workers_and_plots(database_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.fake_discord import FakeDiscord
    from tests.web.conftest import register_accounts, serve

    discord = FakeDiscord()
    await discord.start()
    register_accounts(discord)
    settings, engine, app, base, task, server = await serve(
        discord, database_url, tmp_path / "d", maintainers=[MOD.id]
    )
    world = Web(base, discord, engine, settings, app)
    try:
        from tests.web.conftest import seed_images

        await seed_images(engine, settings.images_dir, GUILD_ID, ["x"])
        async with engine.begin() as conn:
            await conn.execute(update(Job).values(status="failed", error="CUDA out of memory"))
        async with client() as mod:
            await login(mod, world, MOD)
            status, html = await _text(mod, f"{base}/maintainers")
            assert status == 200 and "failed: 1" in html and "CUDA out of memory" in html
            assert "None found" in html
            # What maintainers wrote under the data folder: a score run, a manifest, a dataset.
            runs = settings.data_dir / "runs"
            (runs / "out" / "scores").mkdir(parents=True)
            (runs / "out" / "scores" / "scores_00000.parquet").write_bytes(b"x" * 2_000_000)
            (runs / "kept").mkdir()
            (runs / "kept" / "manifest.json").write_text(
                json.dumps({"format": "dreamrate-manifest", "rows_in": 1000, "rows_out": 250,
                            "selection": {"threshold": 5.5}, "excluded": {"urls": 3, "domains": 4},
                            "predictor": {"id": "abc123"}})
            )  # fmt: skip
            (runs / "ds").mkdir()
            (runs / "ds" / "ratings.parquet").write_bytes(b"")
            (runs / "ds" / "README.md").write_text("datasheet")
            (runs / "other").mkdir()
            (runs / "other" / "manifest.json").write_text("{not json")
            status, html = await _text(mod, f"{base}/maintainers")
            assert str(runs / "out" / "scores") in html and "2.0 MB" in html
            assert str(runs / "kept") in html and "1000 → 250" in html and "abc123" in html
            assert ">7<" in html  # opt-outs dropped
            assert str(runs / "ds") in html and "ratings.parquet" in html
            assert str(runs / "other") not in html
            async with mod.get(f"{base}/maintainers/plot/ratings.svg") as r:
                assert r.status == 200 and (await r.text()).lstrip().startswith("<?xml")
            status, _ = await _text(mod, f"{base}/maintainers/plot/nope.svg")
            assert status == 404
            # A predictor's report and card, from its own folder only.
            import numpy as np

            from dreamrate.aesthetic.predictor import Predictor, save_predictor
            from dreamrate.aesthetic.predictor_registry import register_predictor
            from dreamrate.db.models import Predictor as PredictorRow

            predictor = Predictor("m", 2, [(np.array([[1.0, 0.0]]), np.array([0.0]))])
            folder = save_predictor(predictor, tmp_path / "pred")
            (folder / "report.html").write_text("<h1>the report</h1>")
            (folder / "PREDICTOR.md").write_text("# the card")
            (tmp_path / "secret.png").write_bytes(b"not yours")
            await register_predictor(engine, predictor, folder, activate=False)
            async with engine.connect() as conn:
                pid = await conn.scalar(select(PredictorRow.id))
            status, html = await _text(mod, f"{base}/maintainers")
            assert f"/maintainers/predictors/{pid}/report.html" in html
            async with mod.get(f"{base}/maintainers/predictors/{pid}/report.html") as r:
                assert r.status == 200 and "the report" in await r.text()
                assert "script-src" not in r.headers["Content-Security-Policy"]
            status, card = await _text(mod, f"{base}/maintainers/predictors/{pid}/PREDICTOR.md")
            assert status == 200 and card == "# the card"
            for name in ("..%2Fsecret.png", "meta.json", "x.html", "%2e%2e"):
                status, _ = await _text(mod, f"{base}/maintainers/predictors/{pid}/{name}")
                assert status == 404, name
            async with client() as alice:
                await login(alice, world, ALICE)
                status, _ = await _text(alice, f"{base}/maintainers/predictors/{pid}/report.html")
                assert status == 403
    finally:
        server.should_exit = True
        await task
        await engine.dispose()
        await discord.stop()
    _ = csrf_of


async def test_best_predicted_first_with_the_active_predictor(web: Web, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import re

    import numpy as np

    from dreamrate.aesthetic.clip_model import model_spec
    from dreamrate.aesthetic.predictor import Predictor, save_predictor
    from dreamrate.aesthetic.predictor_registry import register_predictor
    from dreamrate.db.models import Embedding

    async with client() as alice:
        await login(alice, web, ALICE)
        status, body = await _text(alice, f"{web.base}/g/{GUILD_ID}?sort=predicted")
        assert status == 400 and "No predictor is active" in body
        emb = web.settings.embedding
        model = model_spec(emb.model, emb.pretrained)[2]
        ids = web.images[GUILD_ID]
        # The predictor scores the first coordinate; image k lies at angle k: a known order.
        angles = {image: (k * 7) % 5 for k, image in enumerate(ids[:5])}
        async with web.engine.begin() as conn:
            await conn.execute(
                Embedding.__table__.insert(),
                [
                    {
                        "image_id": image,
                        "model": model,
                        "dim": 2,
                        "vector": np.array([np.cos(a / 4), np.sin(a / 4)], np.float32).tobytes(),
                    }
                    for image, a in angles.items()
                ],
            )
        predictor = Predictor(model, 2, [(np.array([[1.0, 0.0]]), np.array([0.0]))])
        path = save_predictor(predictor, tmp_path / "predictor")
        await register_predictor(web.engine, predictor, path, activate=True)
        status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}?sort=predicted")
        assert status == 200, html
        order = [int(i) for i in re.findall(r'data-image="(\d+)"', html)]
        best_first = sorted(angles, key=lambda image: angles[image])
        unembedded = sorted(set(ids) - set(angles), reverse=True)
        assert order == best_first + unembedded


async def test_a_banned_members_images_are_nowhere_and_moderators_see_reported_ones(
    web: Web,
) -> None:
    import re

    ids = web.images[GUILD_ID]
    reported = ids[0]
    async with web.engine.begin() as conn:
        await conn.execute(Flag.__table__.insert().values(image_id=reported, reason=""))
        # The maker of guild A's images is banned there.
        maker = await conn.scalar(
            select(Job.requester_id).join(Image, Image.job_id == Job.id).where(Image.id == ids[1])
        )
        await conn.execute(GuildBan.__table__.insert().values(guild_id=GUILD_ID, user_id=maker))
    async with client() as alice, client() as mod:
        a = {"X-CSRF-Token": await login(alice, web, ALICE)}
        await login(mod, web, MOD)
        for url in (f"/img/{ids[1]}.png", f"/thumb/{ids[1]}.webp", f"/g/{GUILD_ID}/i/{ids[1]}"):
            status, _ = await _text(alice, web.base + url)
            assert status == 404, url
        status, html = await _text(alice, f"{web.base}/g/{GUILD_ID}")
        assert re.findall(r'data-image="(\d+)"', html) == []
        async with alice.get(f"{web.base}/g/{GUILD_ID}/rate/next") as r:
            assert (await r.json())["image"] is None
        async with alice.get(f"{web.base}/g/{GUILD_ID}/compare/next") as r:
            assert (await r.json())["pair"] is None
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate", json={"image_id": ids[1], "value": 5}, headers=a
        ) as r:
            assert r.status == 404
        # The moderator sees the reported image they must judge; members do not.
        status, _ = await _text(alice, f"{web.base}/thumb/{reported}.webp")
        assert status == 404
        status, html = await _text(mod, f"{web.base}/g/{GUILD_ID}/mod")
        assert f'src="/thumb/{reported}.webp"' in html
        status, _ = await _text(mod, f"{web.base}/thumb/{reported}.webp")
        assert status == 200
        # Another guild's rating pages are refused like its gallery.
        for url in (f"/g/{GUILD_B_ID}/rate/next", f"/g/{GUILD_B_ID}/compare/next"):
            async with alice.get(web.base + url) as r:
                assert r.status == 403, url
    assert await _count(web, RatingEvent) == 0


async def test_one_pair_shown_twice_is_one_choice_and_erase_unlinks_it(web: Web) -> None:
    from dreamrate.db.models import ComparisonPost

    async with client() as alice:
        a = {"X-CSRF-Token": await login(alice, web, ALICE)}
        async with alice.get(f"{web.base}/g/{GUILD_ID}/compare/next") as r:
            first = (await r.json())["pair"]
        async with alice.get(f"{web.base}/g/{GUILD_ID}/compare/next") as r:
            again = (await r.json())["pair"]
        assert again == first  # a reload or a second tab: the same post, until chosen
        url = f"{web.base}/g/{GUILD_ID}/compare"
        async with alice.post(url, json={"pair": first["id"], "winner": "a"}, headers=a) as r:
            assert r.status == 200
        # A second web post of the same two images (made by hand) takes no second choice.
        from dreamrate.community.web_ratings import WEB_CHANNEL

        async with web.engine.begin() as conn:
            await conn.execute(
                ComparisonPost.__table__.insert().values(
                    message_id=-99, image_a_id=first["right"]["id"], image_b_id=first["left"]["id"],
                    channel_id=WEB_CHANNEL, guild_id=GUILD_ID, kind="web", shown_to=ALICE.id,
                )
            )  # fmt: skip
        async with alice.post(url, json={"pair": "-99", "winner": "b"}, headers=a) as r:
            assert r.status == 404 and "already chose" in (await r.json())["error"]
        async with alice.post(
            f"{web.base}/me/erase", data={"csrf": a["X-CSRF-Token"], "confirm": "erase"}
        ) as r:
            assert r.status == 200
    async with web.engine.connect() as conn:
        linked = await conn.scalar(select(func.count()).where(ComparisonPost.shown_to == ALICE.id))
    assert linked == 0 and await _count(web, ChoiceEvent) == 0


async def test_filtered_pages_walk_the_ranking_in_chunks_without_gaps(web: Web) -> None:
    import re

    from dreamrate.web import pages_gallery, queries

    async with client() as alice:
        await login(alice, web, ALICE)
        page, chunk = pages_gallery.PAGE, queries.CHUNK
        pages_gallery.PAGE, queries.CHUNK = 1, 2
        try:
            seen: list[int] = []
            url = f"{web.base}/g/{GUILD_ID}?q=picture"
            while url:
                status, html = await _text(alice, url)
                assert status == 200
                seen += [int(i) for i in re.findall(r'data-image="(\d+)"', html)]
                more = re.search(r'data-more="([^"]+)"', html)
                url = web.base + html_unescape(more.group(1)) if more else ""
        finally:
            pages_gallery.PAGE, queries.CHUNK = page, chunk
    assert seen == sorted(web.images[GUILD_ID], reverse=True)


def html_unescape(text: str) -> str:
    import html

    return html.unescape(text)


@sqlite_only
async def test_stale_moderator_rights_and_big_bodies_are_refused(web: Web) -> None:
    hour_old = await signed_session(
        web,
        {"uid": str(MOD.id), "name": "moddy", "guilds": {str(GUILD_ID): ["dreamers", True]},
         "csrf": "c", "sid": "s", "at": time.time() - 3700},
    )  # fmt: skip
    async with client() as late:
        late.cookie_jar.update_cookies({"dreamrate_session": hour_old})
        status, body = await _text(late, f"{web.base}/g/{GUILD_ID}/mod")
        assert status == 403 and "Log in again to moderate" in body
        status, _ = await _text(late, f"{web.base}/g/{GUILD_ID}")
        assert status == 200  # still a member for the session's length
    async with client() as alice:
        csrf = await login(alice, web, ALICE)
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            data=b"x" * 100_000,
            headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"},
        ) as r:
            assert r.status == 413
        status, _ = await _text(alice, f"{web.base}/g/{2**64}")
        assert status == 404
        status, _ = await _text(alice, f"{web.base}/img/{2**64}.png")
        assert status == 404
    assert await _count(web, RatingEvent) == 0


@sqlite_only
async def test_the_moderator_role_of_the_settings_moderates_on_the_web_too(
    database_url: str, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from dreamrate.fake_discord import FakeDiscord, Member
    from tests.web.conftest import register_accounts, serve

    discord = FakeDiscord()
    await discord.start()
    register_accounts(discord)
    by_role = Member(2005, "rolemod", roles=["moderators"])
    discord.oauth.add_account(by_role, [GUILD_ID])
    settings, engine, app, base, task, server = await serve(
        discord, database_url, tmp_path / "d", discord_settings={"moderator_role": "moderators"}
    )
    world = Web(base, discord, engine, settings, app)
    try:
        async with client() as rolemod, client() as alice:
            await login(rolemod, world, by_role)
            await login(alice, world, ALICE)
            status, html = await _text(rolemod, f"{base}/g/{GUILD_ID}/mod")
            assert status == 200 and "Moderating dreamers" in html
            status, _ = await _text(alice, f"{base}/g/{GUILD_ID}/mod")
            assert status == 403
    finally:
        server.should_exit = True
        await task
        await engine.dispose()
        await discord.stop()
