"""The ``voice-agent`` command: ``serve`` runs the server, ``talk`` plays a WAV into one."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config


def _config_or_none(args: argparse.Namespace):
    """The configuration of ``--config``, or None after saying on stderr what is wrong with it."""
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"voice-agent: configuration error: {exc}", file=sys.stderr)
        return None


def _serve(args: argparse.Namespace) -> int:
    from agent.server.app import create_app

    config = _config_or_none(args)
    if config is None:
        return 2
    if args.host:
        config.server.host = args.host
    if args.port:
        config.server.port = args.port
    logging.basicConfig(
        level=config.logging.level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("aioice").setLevel(logging.WARNING)
    logging.getLogger("aiortc").setLevel(logging.WARNING)
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()
    if config.auth.mode == "off" and not _is_loopback(config.server.host):
        logging.getLogger("agent").warning(
            "serving on %s with auth.mode: off: anyone who can reach this address can talk to the agent and read "
            "every call record; set auth.mode: token (VOICE_AGENT_AUTH__MODE=token) and add accounts with "
            "voice-agent user add",
            config.server.host,
        )
    app = create_app(config)
    print(f"voice-agent: serving on http://{config.server.host}:{config.server.port}", file=sys.stderr)
    asyncio.run(_run_until_stopped(app, config))
    return 0


async def _run_until_stopped(app, config) -> None:
    """Serve until SIGTERM or SIGINT; then drain (server.shutdown_grace_seconds) and close everything."""
    from aiohttp import web

    from agent.server.state import STATE_KEY

    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
    await runner.setup()
    await web.TCPSite(runner, config.server.host, config.server.port).start()
    loop = asyncio.get_running_loop()
    stop, stop_now = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:
        (stop_now if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    try:
        await stop.wait()
        await app[STATE_KEY].drain(config.server.shutdown_grace_seconds, stop_now)
    finally:
        await runner.cleanup()


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _user_add(args: argparse.Namespace) -> int:
    import asyncio
    import getpass

    from agent.calls.store import RecordStore, StoreUnavailable
    from agent.server.auth import create_account
    from agent.server.errors import ApiError

    config = _config_or_none(args)
    if config is None:
        return 2
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass(f"password for {args.name}: ")

    async def add() -> str:
        config.records.data_path.mkdir(parents=True, exist_ok=True)
        store = await RecordStore.open(config.records.url)
        try:
            user = await create_account(store, args.name, password, "admin" if args.admin else "user")
        finally:
            await store.close()
        return f"added {user.role} {user.name} (id {user.id})"

    try:
        print(asyncio.run(add()))
    except ApiError as exc:
        print(f"voice-agent: {exc.message}", file=sys.stderr)
        return 1
    except StoreUnavailable as exc:
        print(f"voice-agent: the records database is unavailable: {exc}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice-agent", description="Realtime voice agent server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server")
    serve.add_argument(
        "--config", default=str(DEFAULT_CONFIG_PATH), help="YAML config (default: %(default)s)"
    )
    serve.add_argument("--host", help="address to listen on (default from config: 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default from config: 8000)")
    serve.set_defaults(handler=_serve)
    user = commands.add_parser("user", help="manage accounts (auth.mode: token)")
    user_commands = user.add_subparsers(dest="user_command", required=True)
    add = user_commands.add_parser("add", help="create an account")
    add.add_argument("name")
    add.add_argument("--admin", action="store_true", help="the account sees every call")
    add.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    add.add_argument("--config", default=str(DEFAULT_CONFIG_PATH), help="YAML config (default: %(default)s)")
    add.set_defaults(handler=_user_add)
    commands.add_parser("talk", help="play a WAV as the microphone and report the reply (voice-agent talk --help)")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["talk"]:
        from agent.client.talk import main as talk_main

        return talk_main(argv[1:])
    args = parser.parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
