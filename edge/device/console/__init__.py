"""The gateway's local web console (`[console]` in the config): see what the box sees.

- :mod:`~edge.device.console.service`: :class:`Console`, the part the gateway starts and stops;
- :mod:`~edge.device.console.settings`: its settings and the sources it reads (passed in);
- :mod:`~edge.device.console.api`: the routes, independent of the HTTP framework;
- :mod:`~edge.device.console.server`: aiohttp on its own thread, with the connection cap and limits;
- :mod:`~edge.device.console.auth`: token or scrypt password;
- :mod:`~edge.device.console.frames`: live-view JPEGs, encoded only while watched, rate-capped;
- :mod:`~edge.device.console.history`: the hour of samples behind the plots, recent events;
- :mod:`~edge.device.console.metrics`: the Prometheus registry behind /metrics;
- ``static/``: the page (HTML, JS, CSS) and uPlot (MIT, vendored with its licence; no build step, no CDN).
"""
