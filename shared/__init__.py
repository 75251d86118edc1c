"""What the gateway and the workers share. Importing it installs the asyncio fix every process
of the service needs on Python 3.11 (:mod:`shared.aio`)."""

from shared import aio as _aio

_aio.install()
