"""Wire conventions shared by the API server and its clients, beyond the .proto itself."""

from __future__ import annotations

# Trailing metadata key naming the leader's HOST:PORT on an UNAVAILABLE "not the leader".
LEADER_METADATA_KEY = "corral-leader"
# Every "not the leader" UNAVAILABLE message starts so; other UNAVAILABLEs are transport
# failures (nothing listening, connection reset).
NOT_LEADER_PREFIX = "not the leader"
