"""Speaker labels on finals of ``diarize=true`` sessions: the ASR worker's hook.

For each final with text, one embedding of the segment's audio (an injected callable; by default
the pyannote model of ``DIARIZE_EMBEDDING_MODEL``, loaded on the first such job), then the pure
:class:`workers.speakers.OnlineClustering` against the session's speakers. Their state lives in
Redis (``speakers:{session}``, updated with WATCH/MULTI so two ASR workers labelling segments of
one session never lose an update), so any worker can label any segment. A failure here never
fails the job: the final goes out without ``speaker``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import numpy as np
import redis.asyncio as aioredis
from redis.exceptions import WatchError

from shared.audio import SAMPLE_RATE, pcm16_to_float32
from shared.keys import Keys
from shared.schemas import AsrJob, Transcript
from shared.settings import Settings
from workers.speakers import ClusterConfig, ClusterState, OnlineClustering

log = logging.getLogger(__name__)

Embedder = Callable[[np.ndarray], np.ndarray]
WATCH_RETRIES = 10


def default_embedder(settings: Settings) -> Embedder:
    from workers.pyannote_embedding import PyannoteEmbedding

    return PyannoteEmbedding.from_settings(settings)


class SpeakerLabeler:
    def __init__(
        self,
        settings: Settings,
        r: aioredis.Redis,
        keys: Keys,
        load: Callable[[], Embedder] | None = None,
    ) -> None:
        self.r = r
        self.keys = keys
        self.ttl = settings.session_ttl_s
        self.clustering = OnlineClustering(
            ClusterConfig(
                threshold=settings.diarize_threshold,
                max_speakers=settings.diarize_max_speakers,
                min_duration_s=settings.diarize_min_duration_s,
            )
        )
        self._load = load or (lambda: default_embedder(settings))
        self._embedder: Embedder | None = None
        self._unavailable = False

    def _get_embedder(self) -> Embedder | None:
        if self._embedder is None and not self._unavailable:
            try:
                self._embedder = self._load()
            except Exception:
                self._unavailable = True
                log.exception("speaker embedding model unavailable: finals go out without speaker")
        return self._embedder

    def _embed(self, pcm: bytes) -> np.ndarray | None:
        embedder = self._get_embedder()
        return None if embedder is None else embedder(pcm16_to_float32(pcm))

    async def label(self, job: AsrJob, result: Transcript) -> None:
        """For a ``diarize`` job's final: set ``speaker`` on ``result`` and its words (in
        place); never raises."""
        if not (job.diarize and job.final and result.text) or result.error is not None:
            return
        try:
            embedding = await asyncio.to_thread(self._embed, job.pcm)
            if embedding is None:
                return
            duration = len(job.pcm) / 2 / SAMPLE_RATE
            speaker = await self._assign(job.session_id, embedding, duration)
        except Exception:
            log.exception(
                "session=%s segment=%d: speaker label failed", job.session_id, job.segment
            )
            return
        result.speaker = speaker
        for word in result.words:
            word.speaker = speaker

    async def _assign(self, session_id: str, embedding: np.ndarray, duration: float) -> str | None:
        key = self.keys.speakers(session_id)
        for _ in range(WATCH_RETRIES):
            async with self.r.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    state = ClusterState.from_bytes(await pipe.get(key))
                    speaker = self.clustering.assign(state, embedding, duration)
                    pipe.multi()
                    pipe.set(key, state.to_bytes(), ex=self.ttl)
                    await pipe.execute()
                    return speaker
                except WatchError:
                    continue
        log.warning("session=%s: speaker state contended; segment left unlabelled", session_id)
        return None
