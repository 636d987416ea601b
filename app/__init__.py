"""The recommendation service: FastAPI routes over a hot-swappable mixed policy.

Build the application with :func:`app.main.create_app`; run it with ``ialp serve``.
"""
