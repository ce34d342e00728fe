"""``corral.v1.HistoryService``: the job history and cost reports over gRPC.

Behind the same ``SecurityInterceptor`` as ``JobService``: the caller is authenticated,
and sees only the roles it may act for (naming another is PERMISSION_DENIED). Reads come
from the history database (any replica with ``--history`` answers) and, for the live part
of a cost report, from the leading core (``corral.observe.reports``).
"""

from __future__ import annotations

import base64
import json
import logging
import math
from typing import TYPE_CHECKING, NoReturn

import grpc

from corral.api.convert import cost_to_proto
from corral.api.gen.corral.v1 import history_pb2 as hpb
from corral.api.gen.corral.v1 import history_pb2_grpc as hpb_grpc
from corral.api.gen.corral.v1 import jobs_pb2 as pb
from corral.api.security import abort, caller
from corral.core.cost import CostView
from corral.core.model import NAME_RE
from corral.observe import reports

if TYPE_CHECKING:
    from corral.observe.observer import Observer

log = logging.getLogger(__name__)

STATES = ("FINISHED", "FAILED", "KILLED")
MAX_PAGE = 1000


def _token(before: tuple[float, str]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(before)).encode()).decode()


def _untoken(raw: str) -> tuple[float, str] | None:
    if not raw:
        return None
    try:
        v = json.loads(base64.urlsafe_b64decode(raw.encode()))
        if isinstance(v, list) and len(v) == 2 and isinstance(v[0], int | float) \
                and isinstance(v[1], str) and math.isfinite(v[0]):
            return float(v[0]), v[1]
    except (ValueError, TypeError):
        pass
    raise ValueError("page_token: not a token this server gave")


class HistoryServicer(hpb_grpc.HistoryServiceServicer):
    def __init__(self, observer: Observer) -> None:
        self.obs = observer

    def _allowed(self, role: str) -> frozenset[str] | None:
        who = caller()
        if role and not NAME_RE.fullmatch(role):
            raise ValueError("role: not a role name")
        if role and not who.may_act_for(role):
            raise PermissionError(f"{who.name} may not act for role {role}")
        return None if who.admin else frozenset(who.roles)

    async def _abort(self, context: grpc.aio.ServicerContext, exc: Exception) -> NoReturn:
        if isinstance(exc, PermissionError):
            await abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        if isinstance(exc, ValueError):
            await abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        if isinstance(exc, reports.NoHistory):
            await abort(context, grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        log.warning("history request failed: %s: %s", type(exc).__name__, exc)
        await abort(context, grpc.StatusCode.UNAVAILABLE,
                    f"the job history cannot be read now ({type(exc).__name__})")

    async def ListHistory(self, request: hpb.ListHistoryRequest,
                          context: grpc.aio.ServicerContext) -> hpb.ListHistoryResponse:
        try:
            allowed = self._allowed(request.role)
            if request.state and request.state.upper() not in STATES:
                raise ValueError(f"state: expected one of {', '.join(STATES)}")
            if not math.isfinite(request.since) or request.since < 0:
                raise ValueError("since: must be a time >= 0")
            size = request.page_size or 100
            if not 1 <= size <= MAX_PAGE:
                raise ValueError(f"page_size: must be 1..{MAX_PAGE}")
            before = _untoken(request.page_token)
            recs = await reports.history(
                self.obs, allowed, role=request.role or None, since=request.since or None,
                state=request.state.upper() or None, limit=size + 1, before=before)
        except Exception as exc:
            await self._abort(context, exc)
        out = hpb.ListHistoryResponse()
        for r in recs[:size]:
            job = out.jobs.add(
                key=r.job_key, state=pb.JobState.Value(f"JOB_STATE_{r.state}"),
                tier=pb.Tier.Value(f"TIER_{r.tier.upper()}") if r.tier else pb.TIER_PREFERRED,
                submitted_at=r.submitted_at, message=r.message, tasks=r.tasks,
                attempts=r.attempts, losses=r.losses, work_lost_seconds=r.work_lost_seconds,
                cpu_hours=r.cpu_hours)
            if r.finished_at is not None:
                job.finished_at = r.finished_at
            if r.currency:
                job.cost.CopyFrom(cost_to_proto(CostView(
                    currency=r.currency, useful=r.cost_useful, lost=r.cost_lost,
                    checkpoint=r.cost_checkpoint, spare=r.cost_spare, total=r.cost_total,
                    on_demand=r.cost_on_demand, savings=r.cost_on_demand - r.cost_total)))
        if len(recs) > size:
            last = recs[size - 1]
            out.next_page_token = _token((last.finished_at or 0.0, last.job_key))
        return out

    async def GetCostReport(self, request: hpb.CostReportRequest,
                            context: grpc.aio.ServicerContext) -> hpb.CostReportResponse:
        try:
            allowed = self._allowed(request.role)
            if not math.isfinite(request.since) or request.since < 0:
                raise ValueError("since: must be a time >= 0")
            rows, with_history = await reports.cost_report(
                self.obs, allowed, role=request.role or None, since=request.since or None)
        except Exception as exc:
            await self._abort(context, exc)
        out = hpb.CostReportResponse(history=with_history)
        for row in rows:
            out.roles.add(role=row.role, finished_jobs=row.finished_jobs,
                          running_jobs=row.running_jobs, cost=cost_to_proto(row.cost))
        return out
