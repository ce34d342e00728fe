from corral.api.gen.corral.v1 import jobs_pb2 as _jobs_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListHistoryRequest(_message.Message):
    __slots__ = ("role", "since", "state", "page_size", "page_token")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    role: str
    since: float
    state: str
    page_size: int
    page_token: str
    def __init__(self, role: _Optional[str] = ..., since: _Optional[float] = ..., state: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class HistoryJob(_message.Message):
    __slots__ = ("key", "state", "tier", "submitted_at", "finished_at", "message", "tasks", "attempts", "losses", "work_lost_seconds", "cpu_hours", "cost")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    WORK_LOST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    CPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    key: str
    state: _jobs_pb2.JobState
    tier: _jobs_pb2.Tier
    submitted_at: float
    finished_at: float
    message: str
    tasks: int
    attempts: int
    losses: int
    work_lost_seconds: float
    cpu_hours: float
    cost: _jobs_pb2.Cost
    def __init__(self, key: _Optional[str] = ..., state: _Optional[_Union[_jobs_pb2.JobState, str]] = ..., tier: _Optional[_Union[_jobs_pb2.Tier, str]] = ..., submitted_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., message: _Optional[str] = ..., tasks: _Optional[int] = ..., attempts: _Optional[int] = ..., losses: _Optional[int] = ..., work_lost_seconds: _Optional[float] = ..., cpu_hours: _Optional[float] = ..., cost: _Optional[_Union[_jobs_pb2.Cost, _Mapping]] = ...) -> None: ...

class ListHistoryResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[HistoryJob]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[HistoryJob, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class CostReportRequest(_message.Message):
    __slots__ = ("role", "since")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    role: str
    since: float
    def __init__(self, role: _Optional[str] = ..., since: _Optional[float] = ...) -> None: ...

class RoleCost(_message.Message):
    __slots__ = ("role", "finished_jobs", "running_jobs", "cost")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    FINISHED_JOBS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_JOBS_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    role: str
    finished_jobs: int
    running_jobs: int
    cost: _jobs_pb2.Cost
    def __init__(self, role: _Optional[str] = ..., finished_jobs: _Optional[int] = ..., running_jobs: _Optional[int] = ..., cost: _Optional[_Union[_jobs_pb2.Cost, _Mapping]] = ...) -> None: ...

class CostReportResponse(_message.Message):
    __slots__ = ("roles", "history")
    ROLES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    roles: _containers.RepeatedCompositeFieldContainer[RoleCost]
    history: bool
    def __init__(self, roles: _Optional[_Iterable[_Union[RoleCost, _Mapping]]] = ..., history: _Optional[bool] = ...) -> None: ...
