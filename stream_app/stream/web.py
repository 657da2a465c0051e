"""The worker's web port: /metrics, /healthz and /ready, and nothing else.

Faust's own web server is off (`web_enabled=False`, in FAUST_WEB_OPTIONS below: the one place that decides
it). It would serve `/table/<table>/<key>/` (an entity's whole state, e.g. a user's rating window, to anyone
who reaches the port, which Prometheus scrapes and the Kubernetes Service exposes), `/router/` and an index
too. This small aiohttp server runs as a Faust service instead: started once table recovery is complete (as
Faust's was), on the worker's event loop (so /healthz answering means the loop runs), at
RECSYS_WEB_BIND:RECSYS_WEB_PORT. Any other path is 404; any other method 405.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from mode import Service

FAUST_WEB_OPTIONS = dict(web_enabled=False)  # Faust settings: no built-in views (see above)
PATHS = ("/metrics", "/healthz", "/ready")


class WebServer(Service):
    """aiohttp on `bind:port` serving PATHS. metrics: the exposition body; readiness: () -> (ready, why)."""

    def __init__(self, bind: str, port: int, metrics: Callable[[], bytes], content_type: str,
                 readiness: Callable[[], tuple[bool, str]], **kwargs):
        super().__init__(**kwargs)
        self.bind, self.port = bind, int(port)
        self._metrics, self._content_type, self._readiness = metrics, content_type, readiness
        self._runner: web.AppRunner | None = None

    def application(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/ready", self.ready)
        return app

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self._metrics(), content_type=self._content_type)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def ready(self, request: web.Request) -> web.Response:
        ready, why = self._readiness()
        return web.Response(text=why + "\n", status=200 if ready else 503)

    async def on_start(self) -> None:
        self._runner = web.AppRunner(self.application(), access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, self.bind, self.port).start()
        self.log.info("serving %s on %s:%s", ", ".join(PATHS), self.bind, self.port)

    async def on_stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
