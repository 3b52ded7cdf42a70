"""``dreamrate demo --web``: the demo's community on the web home, with a local login.

After the demo, a fresh local Discord-compatible server plays Discord's OAuth2 for the
demo's members (and a moderator who is also a maintainer), and the web home serves the
demo's database and images on 127.0.0.1 until Ctrl-C. Logging in is one click: the local
authorize page has a button per member.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

from dreamrate.demo import DEMO_TOKEN

__all__ = ["DEMO_MODERATOR", "serve_demo_web"]

#: The demo's moderator and maintainer on the web (the members are 5000, 5001, ...).
DEMO_MODERATOR = 4999


def _socket(port: int) -> socket.socket:
    """A listening socket on 127.0.0.1:``port``, or on a free port when that one is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.bind(("127.0.0.1", 0))
    return sock


async def serve_demo_web(
    folder: Path,
    *,
    members: int,
    port: int = 8000,
    ready: Callable[[str], None] = print,
    stop: asyncio.Event | None = None,
) -> None:
    """Serve the demo in ``folder`` until ``stop`` is set (or the process is interrupted);
    ``ready`` gets the login URL once the server listens."""
    import uvicorn

    from dreamrate.core.settings import load_settings
    from dreamrate.db.engine import create_engine
    from dreamrate.db.migrate import upgrade
    from dreamrate.fake_discord import BASIC, GUILD_B_ID, GUILD_ID, MANAGE_GUILD, FakeDiscord
    from dreamrate.fake_discord import Member as FakeMember
    from dreamrate.web.app import create_app

    discord = FakeDiscord(bot_token=DEMO_TOKEN)
    await discord.start()
    moderator = FakeMember(DEMO_MODERATOR, "moderator", permissions=BASIC | MANAGE_GUILD)
    discord.oauth.add_account(moderator, [GUILD_ID, GUILD_B_ID])
    for k in range(members):
        discord.oauth.add_account(FakeMember(5000 + k, f"member{k}"), [GUILD_ID, GUILD_B_ID])
    sock = _socket(port)
    port = sock.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    discord.oauth.redirect_uris.add(f"{base}/callback")
    settings = load_settings(
        data_dir=folder / "data",
        discord={"api_base": discord.api_base, "token": DEMO_TOKEN},
        web={
            "host": "127.0.0.1",
            "port": port,
            "client_secret": discord.oauth.client_secret,
            "maintainers": [DEMO_MODERATOR],
        },
    )
    engine = create_engine(settings.database_url)
    await upgrade(engine)
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings, engine), log_level="warning", access_log=False)
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
        ready(f"{base}/login")
        if stop is None:
            await task
        else:
            await stop.wait()
    finally:
        server.should_exit = True
        await task
        await engine.dispose()
        await discord.stop()
