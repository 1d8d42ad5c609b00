"""Serving a dump over HTTP (``stepline serve``) and scoring files with it (``stepline predict``).

``stepline.serving.app(PATH, ...)`` returns the Starlette ASGI app (Open Inference Protocol
v2 plus MLflow-style ``/predict``), for mounting in your own server; see ``docs/serving.md``.
Starlette, uvicorn, pandas and pyarrow come with ``pip install 'stepline[serve]'`` and are
imported only when used.
"""
from __future__ import annotations


def app(path, **options):
    """The ASGI app serving the dump at ``path`` (see :func:`stepline.serving.asgi.app`)."""
    from stepline.serving.asgi import app as make_app
    return make_app(path, **options)


__all__ = ["app"]
