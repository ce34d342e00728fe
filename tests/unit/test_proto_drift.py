"""The committed gRPC stubs match what the committed .proto files generate, byte for byte.

If this fails, run ``python proto/generate.py`` and commit the result.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# The generator is a development tool beside the .proto sources, not a package module.
_spec = importlib.util.spec_from_file_location(
    "proto_generate", Path(__file__).resolve().parents[2] / "proto" / "generate.py")
assert _spec is not None and _spec.loader is not None
gen_proto = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(gen_proto)

pytest.importorskip("grpc_tools")


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def test_generated_code_matches_the_proto(tmp_path: Path) -> None:
    gen_proto.generate(tmp_path / "gen")
    fresh = _tree(tmp_path / "gen")
    committed = _tree(gen_proto.GEN_ROOT)
    assert "corral/v1/jobs_pb2.py" in fresh
    assert sorted(fresh) == sorted(committed), "generated file set differs"
    stale = [name for name in fresh if fresh[name] != committed[name]]
    assert not stale, f"stale generated files {stale}: run python proto/generate.py"


def test_generated_imports_resolve_inside_the_package() -> None:
    from corral.api.gen.corral.v1 import jobs_pb2, jobs_pb2_grpc

    assert jobs_pb2.DESCRIPTOR.name == "corral/v1/jobs.proto"
    assert jobs_pb2_grpc.JobServiceStub is not None
    text = (gen_proto.GEN_ROOT / "corral/v1/jobs_pb2_grpc.py").read_text()
    assert "from corral.v1 import" not in text
