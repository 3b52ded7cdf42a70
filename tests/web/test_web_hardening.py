"""The web home's refusals of hostile input (issue 26): bodies counted as they stream, forged
cursors and ids, sessions that end for good, notices nobody can forge, strict clicks, choices
on pairs hidden since, and model names instead of server paths.

Database-independent checks run on SQLite only; what reads or writes rows the two databases
treat differently (64-bit ids, sessions, recorded choices) runs on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from urllib.parse import quote, urlsplit

import aiohttp
from sqlalchemy import func, insert, select, update

from dreamrate.db.models import (
    ChoiceEvent,
    Flag,
    GuildBan,
    Image,
    Job,
    RatingEvent,
    RegisteredModel,
    WebSession,
)
from dreamrate.db.types import utcnow
from dreamrate.fake_discord import GUILD_ID
from tests.databases import sqlite_only
from tests.web.conftest import ALICE, BOB, MOD, Web, client, login, serve

#: Far more than any form or click; an endless body stops here (the server never answered).
STREAM_CAP = 32 * 1024 * 1024


async def _count(web: Web, table, *where) -> int:  # type: ignore[no-untyped-def]
    async with web.engine.connect() as conn:
        return int(await conn.scalar(select(func.count()).select_from(table).where(*where)))


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url, allow_redirects=False) as response:
        return response.status, (await response.read()).decode(errors="replace")


def _cookie(session: aiohttp.ClientSession) -> str:
    return "; ".join(f"{c.key}={c.value}" for c in session.cookie_jar)


async def stream_post(
    base: str,
    path: str,
    headers: dict[str, str],
    piece: bytes,
    *,
    prefix: bytes = b"",
    endless: bool = True,
) -> tuple[int, int]:
    """POST ``path`` with a chunked body (no Content-Length): ``prefix``, then ``piece`` over
    and over until the server answers (or :data:`STREAM_CAP` bytes went out, then the body
    ends); ``piece`` once when not ``endless``. Returns the status and the bytes sent before
    the answer came."""
    where = urlsplit(base)
    reader, writer = await asyncio.open_connection(where.hostname, where.port)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: {where.netloc}\r\nTransfer-Encoding: chunked\r\n"
        f"{head}\r\n".encode()
    )
    answer = asyncio.ensure_future(reader.readline())
    sent = 0
    try:
        times = STREAM_CAP // len(piece) if endless else 1
        for chunk in (prefix, *([piece] * times)):
            if answer.done():
                break
            if chunk:
                writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.sleep(0)
        else:
            writer.write(b"0\r\n\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
        status_line = await asyncio.wait_for(answer, 120)
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    return int(status_line.split()[1]), sent


@sqlite_only
async def test_bodies_are_counted_as_they_stream_and_stop_at_the_limit(web: Web) -> None:
    """Item 1: no Content-Length (chunked) is no way around the 64 KB limit, logged in or not;
    the server answers 413 at the limit instead of reading (or spooling) the rest."""
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    field = b"f=" + b"x" * (64 * 1024 - 3) + b"&"
    multipart = {"Content-Type": "multipart/form-data; boundary=BOUNDARY"}
    file_head = (
        b'--BOUNDARY\r\nContent-Disposition: form-data; name="upload"; filename="big.bin"\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
    )
    async with client() as alice:
        csrf = await login(alice, web, ALICE)
        mine = {"Cookie": _cookie(alice)}
        # Logged out: the logout form, a form and a file part.
        for path, headers, prefix in (
            ("/logout", form, b""),
            ("/logout", multipart, file_head),
            ("/me/erase", form, b""),
        ):
            status, sent = await stream_post(web.base, path, headers, field, prefix=prefix)
            assert status == 413 and sent < STREAM_CAP, (path, status)
        # Logged in: a click's JSON, a moderation form, a file part to the privacy page.
        clicks = {"Content-Type": "application/json", "X-CSRF-Token": csrf, **mine}
        status, sent = await stream_post(
            web.base, f"/g/{GUILD_ID}/rate", clicks, b" " * 65536, prefix=b'{"image_id": 1, '
        )
        assert status == 413 and sent < STREAM_CAP
        for path, headers, prefix in (
            ("/me/erase", {**multipart, **mine}, file_head),
            (f"/g/{GUILD_ID}/mod/ban", {**form, **mine}, b""),
        ):
            status, sent = await stream_post(web.base, path, headers, field, prefix=prefix)
            assert status == 413 and sent < STREAM_CAP, (path, status)
        # A click's JSON is small: past 4 KB it is refused too, though under 64 KB.
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            data=json.dumps({"image_id": web.images[GUILD_ID][0], "value": 5, "pad": "x" * 5000}),
            headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 413
        # A small chunked click still counts: the limit is on size, not on chunking.
        small = json.dumps({"image_id": web.images[GUILD_ID][0], "value": 5}).encode()
        status, _ = await stream_post(
            web.base, f"/g/{GUILD_ID}/rate", clicks, small[10:], prefix=small[:10], endless=False
        )
        assert status == 200
        status, _ = await _get(alice, f"{web.base}/me")
        assert status == 200  # still logged in: the refused logouts changed nothing
    assert await _count(web, RatingEvent) == 1  # the chunked click, once


async def test_forged_cursors_and_huge_ids_are_4xx(web: Web) -> None:
    """Item 2: numbers beyond 64 bits in a cursor are a 400 on both databases, not a 500."""
    huge = "9" * 30
    async with client() as alice:
        csrf = await login(alice, web, ALICE)
        for url in (
            f"/g/{GUILD_ID}?sort=new&cursor={huge}",
            f"/g/{GUILD_ID}/more?sort=new&cursor={huge}",
            f"/g/{GUILD_ID}?sort=new&unrated=1&cursor={huge}",
            f"/g/{GUILD_ID}/more?sort=new&unrated=1&cursor=-{huge}",
            f"/g/{GUILD_ID}?cursor=5.0_{huge}",
            f"/g/{GUILD_ID}/more?cursor={huge}_{huge}",
            f"/g/{GUILD_ID}/more?cursor=nan_3",
            f"/g/{GUILD_ID}/more?q=picture&cursor=inf_{2**63}",
            f"/g/{GUILD_ID}/more?sort=new&cursor={2**31}",
        ):
            status, body = await _get(alice, web.base + url)
            assert status == 400 and "bad cursor" in body, url
        # The largest id an image may have is a page like any other.
        status, _ = await _get(alice, f"{web.base}/g/{GUILD_ID}/more?sort=new&cursor={2**31 - 1}")
        assert status == 200
        # Image ids past what the database holds (32 bits on PostgreSQL) are no image.
        for url in (
            f"/g/{GUILD_ID}/i/{2**40}",
            f"/img/{2**40}.png",
            f"/thumb/{2**40}.webp",
        ):
            status, _ = await _get(alice, web.base + url)
            assert status == 404, url
        async with alice.post(
            f"{web.base}/g/{GUILD_ID}/rate",
            json={"image_id": 2**40, "value": 5},
            headers={"X-CSRF-Token": csrf},
        ) as r:
            assert r.status == 404
    async with client() as mod:
        mod_csrf = await login(mod, web, MOD)
        for action in ("remove", "dismiss"):
            async with mod.post(
                f"{web.base}/g/{GUILD_ID}/mod/{action}",
                data={"image_id": str(2**40), "csrf": mod_csrf},
            ) as r:
                assert r.status == 400, action


async def test_a_logout_erase_or_ban_ends_the_session_in_every_process(
    web: Web, database_url: str
) -> None:
    """Item 3: sessions live in the database: a cookie kept from before a logout is refused
    by another web process (or the same one restarted); an erase or a ban after the login,
    on the web or on Discord, ends it too."""
    from dreamrate.community.moderation import set_banned
    from dreamrate.community.privacy import erase

    # A second web process on the same database and data folder (as after a restart).
    settings, engine, _, base, task, server = await serve(
        web.discord, database_url, web.settings.data_dir
    )
    try:
        async with client() as alice, client() as bob, client() as mod:
            csrf = await login(alice, web, ALICE)
            await login(bob, web, BOB)
            mod_csrf = await login(mod, web, MOD)
            kept = {c.key: c.value for c in alice.cookie_jar}
            async with client() as elsewhere:
                elsewhere.cookie_jar.update_cookies(kept)
                assert (await _get(elsewhere, f"{base}/me"))[0] == 200  # one login, both
            async with alice.post(f"{web.base}/logout", data={"csrf": csrf}) as r:
                assert r.status == 200
            for where in (web.base, base):
                async with client() as replay:
                    replay.cookie_jar.update_cookies(kept)
                    assert (await _get(replay, f"{where}/me"))[0] == 401, where
            async with web.engine.connect() as conn:
                stored = (await conn.execute(select(WebSession.id))).scalars().all()
            assert len(stored) == 3 and all(len(s) == 64 for s in stored)
            sids = [json.loads(_payload(v))["sid"] for v in kept.values()]
            assert not set(sids) & set(stored)  # only a hash of the id is kept
            # Bob is banned in a guild by a moderator on the web: his session ends.
            assert (await _get(bob, f"{base}/g/{GUILD_ID}"))[0] == 200
            async with mod.post(
                f"{web.base}/g/{GUILD_ID}/mod/ban",
                data={"discord_id": str(BOB.id), "csrf": mod_csrf},
            ) as r:
                assert r.status == 200
            assert (await _get(bob, f"{base}/g/{GUILD_ID}"))[0] == 401
            assert (await _get(mod, f"{base}/g/{GUILD_ID}"))[0] == 200  # his alone
        # Banned with /admin on Discord, or erased with /privacy there: the same.
        async with client() as alice, client() as mod, client() as bob:
            csrf = await login(alice, web, ALICE)
            await login(mod, web, MOD)
            await login(bob, web, BOB)
            async with alice.post(
                f"{base}/g/{GUILD_ID}/rate",
                json={"image_id": web.images[GUILD_ID][0], "value": 5},
                headers={"X-CSRF-Token": csrf},
            ) as r:
                assert r.status == 200  # something to erase
            await erase(web.engine, ALICE.id)
            assert (await _get(alice, f"{base}/me"))[0] == 401
            assert (await _get(mod, f"{base}/me"))[0] == 200  # hers alone
            await set_banned(web.engine, GUILD_ID, MOD.id, True)
            assert (await _get(mod, f"{web.base}/me"))[0] == 401
            assert (await _get(bob, f"{web.base}/me"))[0] == 200  # logged in after his ban
        # Logging in again after the erase is a new session, and it works.
        async with client() as alice:
            await login(alice, web, ALICE)
            assert (await _get(alice, f"{base}/me"))[0] == 200
    finally:
        server.should_exit = True
        await task
        await engine.dispose()
    _ = settings


def _payload(cookie: str) -> str:
    import base64

    value = cookie.split(".")[0]
    return base64.b64decode(value + "=" * (-len(value) % 4)).decode()


@sqlite_only
async def test_notices_come_from_the_server_not_from_the_link(web: Web) -> None:
    """Item 5: ``?done=`` text is never shown as a notice; the real notices still are."""
    lure = "Your account is suspended. Verify it at https://evil.example/login"
    async with client() as alice, client() as mod:
        csrf = await login(alice, web, ALICE)
        mod_csrf = await login(mod, web, MOD)
        status, html = await _get(alice, f"{web.base}/me?done={quote(lure)}")
        assert status == 200 and "evil.example" not in html and 'class="notice"' not in html
        status, html = await _get(mod, f"{web.base}/g/{GUILD_ID}/mod?done={quote(lure)}")
        assert status == 200 and "evil.example" not in html and 'class="notice"' not in html
        async with alice.post(f"{web.base}/me/optout", data={"csrf": csrf}) as r:
            assert r.status == 200 and "You opted out" in await r.text()
        status, html = await _get(alice, f"{web.base}/me")
        assert "You opted out" not in html  # shown once
        async with mod.post(
            f"{web.base}/g/{GUILD_ID}/mod/ban", data={"discord_id": str(BOB.id), "csrf": mod_csrf}
        ) as r:
            assert f"Member {BOB.id} banned here." in await r.text()


@sqlite_only
async def test_clicks_take_only_integers_of_the_scale(web: Web) -> None:
    """Item 6: ``true``, ``"5"``, ``5.5`` or an image id ``18.9`` are 400 and record nothing."""
    from dreamrate.web.security import ClickThrottle

    web.app.state.ctx.throttle = ClickThrottle(rate=1, burst=100)  # many clicks here
    image = web.images[GUILD_ID][0]
    url = f"{web.base}/g/{GUILD_ID}/rate"
    async with client() as alice:
        headers = {"X-CSRF-Token": await login(alice, web, ALICE)}
        for body in (
            {"image_id": image, "value": True},
            {"image_id": image, "value": False},
            {"image_id": image, "value": "5"},
            {"image_id": image, "value": 5.5},
            {"image_id": image, "value": 5.0},
            {"image_id": image, "value": None},
            {"image_id": image, "value": [5]},
            {"image_id": image + 0.9, "value": 5},
            {"image_id": str(image), "value": 5},
            {"image_id": True, "value": 5},
        ):
            async with alice.post(url, json=body, headers=headers) as r:
                assert r.status == 400, (body, await r.text())
        assert await _count(web, RatingEvent) == 0
        async with alice.get(f"{web.base}/g/{GUILD_ID}/compare/next") as r:
            pair = (await r.json())["pair"]
        compare = f"{web.base}/g/{GUILD_ID}/compare"
        for body in (
            {"pair": float(pair["id"]), "winner": "a"},
            {"pair": True, "winner": "a"},
            {"pair": pair["id"] + ".0", "winner": "a"},
            {"pair": pair["id"], "winner": True},
        ):
            async with alice.post(compare, json=body, headers=headers) as r:
                assert r.status == 400, (body, await r.text())
        assert await _count(web, ChoiceEvent) == 0
        async with alice.post(url, json={"image_id": image, "value": 5}, headers=headers) as r:
            assert r.status == 200
        async with alice.post(
            compare, json={"pair": pair["id"], "winner": "a"}, headers=headers
        ) as r:
            assert r.status == 200
    assert await _count(web, RatingEvent) == 1 and await _count(web, ChoiceEvent) == 1


async def test_a_choice_on_a_pair_hidden_since_it_was_shown_is_refused(web: Web) -> None:
    """Item 7: the same visibility rule as everywhere (reported, or its maker banned there)."""
    url = f"{web.base}/g/{GUILD_ID}/compare"
    async with client() as alice:
        headers = {"X-CSRF-Token": await login(alice, web, ALICE)}
        async with alice.get(f"{web.base}/g/{GUILD_ID}/compare/next") as r:
            pair = (await r.json())["pair"]
        # A report waits on the left image now: members no longer see it.
        async with web.engine.begin() as conn:
            await conn.execute(insert(Flag).values(image_id=pair["left"]["id"], reason=""))
        async with alice.post(url, json={"pair": pair["id"], "winner": "b"}, headers=headers) as r:
            assert r.status == 404 and "no longer shown" in (await r.json())["error"]
        async with alice.get(f"{web.base}/g/{GUILD_ID}/compare/next") as r:
            again = (await r.json())["pair"]
        assert again is None or pair["left"]["id"] not in (
            again["left"]["id"],
            again["right"]["id"],
        )
        # The images' maker is banned in this guild: none of their images may be chosen.
        async with web.engine.begin() as conn:
            await conn.execute(update(Flag).values(resolved_at=utcnow(), resolution="dismissed"))
            maker = await conn.scalar(
                select(Job.requester_id).where(Job.guild_id == GUILD_ID).limit(1)
            )
            await conn.execute(insert(GuildBan).values(guild_id=GUILD_ID, user_id=maker))
        async with alice.post(url, json={"pair": pair["id"], "winner": "a"}, headers=headers) as r:
            assert r.status == 404
    assert await _count(web, ChoiceEvent) == 0


@sqlite_only
async def test_image_pages_name_the_model_not_a_server_path(web: Web) -> None:
    """Item 8: a registered model by its name, any other local model by its folder's name;
    the gallery's model filter offers and takes those names."""
    registered, other = web.images[GUILD_ID][0], web.images[GUILD_ID][1]
    async with web.engine.begin() as conn:
        await conn.execute(
            insert(RegisteredModel).values(name="dreamy", kind="path", path="/srv/models/dreamy-v2")
        )
        for image, model in ((registered, "/srv/models/dreamy-v2"), (other, "/opt/secret/tiny-sd")):
            job = await conn.scalar(select(Image.job_id).where(Image.id == image))
            await conn.execute(update(Job).where(Job.id == job).values(model=model))
    async with client() as alice:
        await login(alice, web, ALICE)
        status, html = await _get(alice, f"{web.base}/g/{GUILD_ID}/i/{registered}")
        assert status == 200 and "<dd>dreamy</dd>" in html and "/srv/" not in html
        status, html = await _get(alice, f"{web.base}/g/{GUILD_ID}/i/{other}")
        assert status == 200 and "<dd>tiny-sd</dd>" in html and "/opt/" not in html
        status, html = await _get(alice, f"{web.base}/g/{GUILD_ID}")
        assert "/srv/" not in html and "/opt/" not in html
        assert "<option>dreamy</option>" in html and "<option>tiny-sd</option>" in html
        status, html = await _get(alice, f"{web.base}/g/{GUILD_ID}?model=dreamy")
        assert f'data-image="{registered}"' in html and html.count("data-image=") == 1
