"""Gunicorn worker classes whose apps run on oxloop.

    gunicorn app:app -k oxloop.gunicorn.UvicornWorker      # an ASGI app, served by uvicorn
    gunicorn app:make_app -k oxloop.gunicorn.AiohttpWorker  # an aiohttp.web application

Each is the framework's own worker class with the loop set to oxloop's; a class is made when
first asked for, so only the framework it names needs to be installed.
"""

from __future__ import annotations

from typing import Any

_made: dict[str, type] = {}


def _uvicorn_worker() -> type:
    from uvicorn.workers import UvicornWorker as Base

    class UvicornWorker(Base):
        """uvicorn's worker class, its loop oxloop's."""

        CONFIG_KWARGS = {**Base.CONFIG_KWARGS, "loop": "oxloop:new_event_loop"}

    return UvicornWorker


def _aiohttp_worker() -> type:
    import asyncio

    from aiohttp.worker import GunicornWebWorker as Base

    class AiohttpWorker(Base):
        """aiohttp's worker class, its loop oxloop's."""

        def init_process(self) -> None:
            import oxloop

            # aiohttp's worker makes its loop with asyncio.new_event_loop(), as its uvloop
            # worker does after setting uvloop's policy.
            asyncio.set_event_loop_policy(oxloop.EventLoopPolicy())
            super().init_process()

    return AiohttpWorker


_MAKERS = {"UvicornWorker": _uvicorn_worker, "AiohttpWorker": _aiohttp_worker}


def __getattr__(name: str) -> Any:
    if name not in _MAKERS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name not in _made:
        _made[name] = _MAKERS[name]()
    return _made[name]
