from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Tier(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TIER_UNSPECIFIED: _ClassVar[Tier]
    TIER_PREFERRED: _ClassVar[Tier]
    TIER_PREEMPTIBLE: _ClassVar[Tier]
    TIER_REVOCABLE: _ClassVar[Tier]

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_PENDING: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_FINISHED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_KILLED: _ClassVar[JobState]
TIER_UNSPECIFIED: Tier
TIER_PREFERRED: Tier
TIER_PREEMPTIBLE: Tier
TIER_REVOCABLE: Tier
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_PENDING: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_FINISHED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_KILLED: JobState

class TaskSpec(_message.Message):
    __slots__ = ("command", "cpus", "mem", "disk", "gpus", "ports", "env", "image")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    command: str
    cpus: float
    mem: float
    disk: float
    gpus: int
    ports: int
    env: _containers.ScalarMap[str, str]
    image: str
    def __init__(self, command: _Optional[str] = ..., cpus: _Optional[float] = ..., mem: _Optional[float] = ..., disk: _Optional[float] = ..., gpus: _Optional[int] = ..., ports: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ..., image: _Optional[str] = ...) -> None: ...

class WorkerSpec(_message.Message):
    __slots__ = ("command", "cpus", "mem", "disk", "gpus", "ports", "env", "image", "min", "max", "initial")
    class EnvEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    CPUS_FIELD_NUMBER: _ClassVar[int]
    MEM_FIELD_NUMBER: _ClassVar[int]
    DISK_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ENV_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MIN_FIELD_NUMBER: _ClassVar[int]
    MAX_FIELD_NUMBER: _ClassVar[int]
    INITIAL_FIELD_NUMBER: _ClassVar[int]
    command: str
    cpus: float
    mem: float
    disk: float
    gpus: int
    ports: int
    env: _containers.ScalarMap[str, str]
    image: str
    min: int
    max: int
    initial: int
    def __init__(self, command: _Optional[str] = ..., cpus: _Optional[float] = ..., mem: _Optional[float] = ..., disk: _Optional[float] = ..., gpus: _Optional[int] = ..., ports: _Optional[int] = ..., env: _Optional[_Mapping[str, str]] = ..., image: _Optional[str] = ..., min: _Optional[int] = ..., max: _Optional[int] = ..., initial: _Optional[int] = ...) -> None: ...

class DriverSpec(_message.Message):
    __slots__ = ("command",)
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    command: str
    def __init__(self, command: _Optional[str] = ...) -> None: ...

class Checkpoint(_message.Message):
    __slots__ = ("uri", "interval_seconds")
    URI_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    uri: str
    interval_seconds: float
    def __init__(self, uri: _Optional[str] = ..., interval_seconds: _Optional[float] = ...) -> None: ...

class Constraints(_message.Message):
    __slots__ = ("max_per_host", "attributes", "spread_over")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    MAX_PER_HOST_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    SPREAD_OVER_FIELD_NUMBER: _ClassVar[int]
    max_per_host: int
    attributes: _containers.ScalarMap[str, str]
    spread_over: str
    def __init__(self, max_per_host: _Optional[int] = ..., attributes: _Optional[_Mapping[str, str]] = ..., spread_over: _Optional[str] = ...) -> None: ...

class RestartPolicy(_message.Message):
    __slots__ = ("max_failures", "backoff_seconds", "backoff_max_seconds")
    MAX_FAILURES_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    max_failures: int
    backoff_seconds: float
    backoff_max_seconds: float
    def __init__(self, max_failures: _Optional[int] = ..., backoff_seconds: _Optional[float] = ..., backoff_max_seconds: _Optional[float] = ...) -> None: ...

class JobSpec(_message.Message):
    __slots__ = ("role", "environment", "name", "tier", "priority", "master", "workers", "checkpoint", "constraints", "kill_grace_seconds", "restart", "deadline_seconds", "labels", "kind", "driver")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ENVIRONMENT_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    MASTER_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    CONSTRAINTS_FIELD_NUMBER: _ClassVar[int]
    KILL_GRACE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RESTART_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DRIVER_FIELD_NUMBER: _ClassVar[int]
    role: str
    environment: str
    name: str
    tier: Tier
    priority: int
    master: TaskSpec
    workers: WorkerSpec
    checkpoint: Checkpoint
    constraints: Constraints
    kill_grace_seconds: float
    restart: RestartPolicy
    deadline_seconds: float
    labels: _containers.ScalarMap[str, str]
    kind: str
    driver: DriverSpec
    def __init__(self, role: _Optional[str] = ..., environment: _Optional[str] = ..., name: _Optional[str] = ..., tier: _Optional[_Union[Tier, str]] = ..., priority: _Optional[int] = ..., master: _Optional[_Union[TaskSpec, _Mapping]] = ..., workers: _Optional[_Union[WorkerSpec, _Mapping]] = ..., checkpoint: _Optional[_Union[Checkpoint, _Mapping]] = ..., constraints: _Optional[_Union[Constraints, _Mapping]] = ..., kill_grace_seconds: _Optional[float] = ..., restart: _Optional[_Union[RestartPolicy, _Mapping]] = ..., deadline_seconds: _Optional[float] = ..., labels: _Optional[_Mapping[str, str]] = ..., kind: _Optional[str] = ..., driver: _Optional[_Union[DriverSpec, _Mapping]] = ...) -> None: ...

class Task(_message.Message):
    __slots__ = ("slot", "task_id", "state", "agent_id", "hostname", "reason", "message", "pending_reason", "attempt", "revocable", "why", "life")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PENDING_REASON_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    REVOCABLE_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    LIFE_FIELD_NUMBER: _ClassVar[int]
    slot: str
    task_id: str
    state: str
    agent_id: str
    hostname: str
    reason: str
    message: str
    pending_reason: str
    attempt: int
    revocable: bool
    why: PendingWhy
    life: str
    def __init__(self, slot: _Optional[str] = ..., task_id: _Optional[str] = ..., state: _Optional[str] = ..., agent_id: _Optional[str] = ..., hostname: _Optional[str] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ..., pending_reason: _Optional[str] = ..., attempt: _Optional[int] = ..., revocable: _Optional[bool] = ..., why: _Optional[_Union[PendingWhy, _Mapping]] = ..., life: _Optional[str] = ...) -> None: ...

class PendingWhy(_message.Message):
    __slots__ = ("code", "detail", "until", "vetoes")
    CODE_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    UNTIL_FIELD_NUMBER: _ClassVar[int]
    VETOES_FIELD_NUMBER: _ClassVar[int]
    code: str
    detail: str
    until: float
    vetoes: _containers.RepeatedCompositeFieldContainer[Veto]
    def __init__(self, code: _Optional[str] = ..., detail: _Optional[str] = ..., until: _Optional[float] = ..., vetoes: _Optional[_Iterable[_Union[Veto, _Mapping]]] = ...) -> None: ...

class Veto(_message.Message):
    __slots__ = ("check", "agents", "example_agent", "detail")
    CHECK_FIELD_NUMBER: _ClassVar[int]
    AGENTS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLE_AGENT_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    check: str
    agents: int
    example_agent: str
    detail: str
    def __init__(self, check: _Optional[str] = ..., agents: _Optional[int] = ..., example_agent: _Optional[str] = ..., detail: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total", "backlog", "rerun")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    BACKLOG_FIELD_NUMBER: _ClassVar[int]
    RERUN_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    backlog: int
    rerun: int
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., backlog: _Optional[int] = ..., rerun: _Optional[int] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("key", "spec", "state", "desired_workers", "target_reason", "tasks", "progress", "submitted_at", "finished_at", "message", "request_id", "version", "resilience", "cost", "policy")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    DESIRED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    TARGET_REASON_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    RESILIENCE_FIELD_NUMBER: _ClassVar[int]
    COST_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    key: str
    spec: JobSpec
    state: JobState
    desired_workers: int
    target_reason: str
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    progress: Progress
    submitted_at: float
    finished_at: float
    message: str
    request_id: str
    version: int
    resilience: Resilience
    cost: Cost
    policy: PolicyActions
    def __init__(self, key: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ..., state: _Optional[_Union[JobState, str]] = ..., desired_workers: _Optional[int] = ..., target_reason: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., submitted_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., message: _Optional[str] = ..., request_id: _Optional[str] = ..., version: _Optional[int] = ..., resilience: _Optional[_Union[Resilience, _Mapping]] = ..., cost: _Optional[_Union[Cost, _Mapping]] = ..., policy: _Optional[_Union[PolicyActions, _Mapping]] = ...) -> None: ...

class Cost(_message.Message):
    __slots__ = ("currency", "useful", "lost", "checkpoint", "spare", "total", "on_demand", "savings", "cpu_hours", "by_market")
    class CpuHoursEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ByMarketEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CURRENCY_FIELD_NUMBER: _ClassVar[int]
    USEFUL_FIELD_NUMBER: _ClassVar[int]
    LOST_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    SPARE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    ON_DEMAND_FIELD_NUMBER: _ClassVar[int]
    SAVINGS_FIELD_NUMBER: _ClassVar[int]
    CPU_HOURS_FIELD_NUMBER: _ClassVar[int]
    BY_MARKET_FIELD_NUMBER: _ClassVar[int]
    currency: str
    useful: float
    lost: float
    checkpoint: float
    spare: float
    total: float
    on_demand: float
    savings: float
    cpu_hours: _containers.ScalarMap[str, float]
    by_market: _containers.ScalarMap[str, float]
    def __init__(self, currency: _Optional[str] = ..., useful: _Optional[float] = ..., lost: _Optional[float] = ..., checkpoint: _Optional[float] = ..., spare: _Optional[float] = ..., total: _Optional[float] = ..., on_demand: _Optional[float] = ..., savings: _Optional[float] = ..., cpu_hours: _Optional[_Mapping[str, float]] = ..., by_market: _Optional[_Mapping[str, float]] = ...) -> None: ...

class PolicyAction(_message.Message):
    __slots__ = ("at", "kind", "slot", "task_id", "why")
    AT_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WHY_FIELD_NUMBER: _ClassVar[int]
    at: float
    kind: str
    slot: str
    task_id: str
    why: str
    def __init__(self, at: _Optional[float] = ..., kind: _Optional[str] = ..., slot: _Optional[str] = ..., task_id: _Optional[str] = ..., why: _Optional[str] = ...) -> None: ...

class PolicyActions(_message.Message):
    __slots__ = ("worker_cpus", "worker_mem", "size_reason", "preempted", "retired", "recent")
    WORKER_CPUS_FIELD_NUMBER: _ClassVar[int]
    WORKER_MEM_FIELD_NUMBER: _ClassVar[int]
    SIZE_REASON_FIELD_NUMBER: _ClassVar[int]
    PREEMPTED_FIELD_NUMBER: _ClassVar[int]
    RETIRED_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    worker_cpus: float
    worker_mem: float
    size_reason: str
    preempted: int
    retired: int
    recent: _containers.RepeatedCompositeFieldContainer[PolicyAction]
    def __init__(self, worker_cpus: _Optional[float] = ..., worker_mem: _Optional[float] = ..., size_reason: _Optional[str] = ..., preempted: _Optional[int] = ..., retired: _Optional[int] = ..., recent: _Optional[_Iterable[_Union[PolicyAction, _Mapping]]] = ...) -> None: ...

class Loss(_message.Message):
    __slots__ = ("slot", "task_id", "kind", "detected_at", "work_lost_seconds", "recovered_at", "recovery_seconds", "replacement_task_id", "returned_at")
    SLOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    DETECTED_AT_FIELD_NUMBER: _ClassVar[int]
    WORK_LOST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RECOVERED_AT_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPLACEMENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    RETURNED_AT_FIELD_NUMBER: _ClassVar[int]
    slot: str
    task_id: str
    kind: str
    detected_at: float
    work_lost_seconds: float
    recovered_at: float
    recovery_seconds: float
    replacement_task_id: str
    returned_at: float
    def __init__(self, slot: _Optional[str] = ..., task_id: _Optional[str] = ..., kind: _Optional[str] = ..., detected_at: _Optional[float] = ..., work_lost_seconds: _Optional[float] = ..., recovered_at: _Optional[float] = ..., recovery_seconds: _Optional[float] = ..., replacement_task_id: _Optional[str] = ..., returned_at: _Optional[float] = ...) -> None: ...

class Resilience(_message.Message):
    __slots__ = ("losses", "recoveries", "work_lost_seconds", "recovery_seconds_total", "recovery_seconds_max", "spare_workers", "spare_reason", "recent")
    LOSSES_FIELD_NUMBER: _ClassVar[int]
    RECOVERIES_FIELD_NUMBER: _ClassVar[int]
    WORK_LOST_SECONDS_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_SECONDS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    RECOVERY_SECONDS_MAX_FIELD_NUMBER: _ClassVar[int]
    SPARE_WORKERS_FIELD_NUMBER: _ClassVar[int]
    SPARE_REASON_FIELD_NUMBER: _ClassVar[int]
    RECENT_FIELD_NUMBER: _ClassVar[int]
    losses: int
    recoveries: int
    work_lost_seconds: float
    recovery_seconds_total: float
    recovery_seconds_max: float
    spare_workers: int
    spare_reason: str
    recent: _containers.RepeatedCompositeFieldContainer[Loss]
    def __init__(self, losses: _Optional[int] = ..., recoveries: _Optional[int] = ..., work_lost_seconds: _Optional[float] = ..., recovery_seconds_total: _Optional[float] = ..., recovery_seconds_max: _Optional[float] = ..., spare_workers: _Optional[int] = ..., spare_reason: _Optional[str] = ..., recent: _Optional[_Iterable[_Union[Loss, _Mapping]]] = ...) -> None: ...

class SubmitJobRequest(_message.Message):
    __slots__ = ("request_id", "spec")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    spec: JobSpec
    def __init__(self, request_id: _Optional[str] = ..., spec: _Optional[_Union[JobSpec, _Mapping]] = ...) -> None: ...

class SubmitJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class GetJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("role", "page_size", "page_token")
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    role: str
    page_size: int
    page_token: str
    def __init__(self, role: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class JobSummary(_message.Message):
    __slots__ = ("key", "state", "tier", "priority", "desired_workers", "running_workers", "workers_min", "workers_max", "progress", "submitted_at", "finished_at", "message", "version")
    KEY_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    DESIRED_WORKERS_FIELD_NUMBER: _ClassVar[int]
    RUNNING_WORKERS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_MIN_FIELD_NUMBER: _ClassVar[int]
    WORKERS_MAX_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    SUBMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    key: str
    state: JobState
    tier: Tier
    priority: int
    desired_workers: int
    running_workers: int
    workers_min: int
    workers_max: int
    progress: Progress
    submitted_at: float
    finished_at: float
    message: str
    version: int
    def __init__(self, key: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., tier: _Optional[_Union[Tier, str]] = ..., priority: _Optional[int] = ..., desired_workers: _Optional[int] = ..., running_workers: _Optional[int] = ..., workers_min: _Optional[int] = ..., workers_max: _Optional[int] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., submitted_at: _Optional[float] = ..., finished_at: _Optional[float] = ..., message: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobSummary]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobSummary, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class KillJobRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class KillJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class ScaleJobRequest(_message.Message):
    __slots__ = ("key", "workers")
    KEY_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    key: str
    workers: int
    def __init__(self, key: _Optional[str] = ..., workers: _Optional[int] = ...) -> None: ...

class ScaleJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: Job
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class WatchJobResponse(_message.Message):
    __slots__ = ("job", "delta", "removed_slots")
    JOB_FIELD_NUMBER: _ClassVar[int]
    DELTA_FIELD_NUMBER: _ClassVar[int]
    REMOVED_SLOTS_FIELD_NUMBER: _ClassVar[int]
    job: Job
    delta: bool
    removed_slots: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., delta: _Optional[bool] = ..., removed_slots: _Optional[_Iterable[str]] = ...) -> None: ...
