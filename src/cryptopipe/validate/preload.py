"""Imported by the batch runner's forkserver (runner.py:worker_context): GX, with analytics off, imported once in
the server instead of in every worker process."""

from cryptopipe.validate.gx_runner import import_gx

import_gx()
