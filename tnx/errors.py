"""The project's exception tree.

    TnxError                      every error tnx raises on purpose; the CLI prints it as one line
    ├── UserInputError            a file, field, flag or factory the user gave is wrong
    │   ├── ContractError         a contract file (profiles/workload/fleet/plan.json) is malformed
    │   └── FactoryError          a model factory cannot be imported, called or exported
    ├── VerificationError         exported model disagrees with torch beyond tolerance
    ├── MissingDependencyError    an optional tool (TensorRT, a GPU, tritonserver) is absent
    ├── RepositoryError           a Triton model repository is malformed
    ├── ServerError               a Triton server failed, refused or is unreachable
    │   └── FleetError            a local fleet could not be started or stopped
    └── PlanningError             the scheduler was given something it cannot plan

The tree lives in `tnx/`, left of every package, because imports point one way
(tnx → exporters → model_repo_tools → control → router → deploy) and every package
raises them. Lower-library errors (tritonclient, subprocess, onnx) are
translated into these where they enter.
"""

from __future__ import annotations


class TnxError(Exception):
    """Base of every error tnx raises on purpose; str(err) is a one-line message."""


class UserInputError(TnxError):
    pass


class ContractError(UserInputError):
    pass


class FactoryError(UserInputError):
    pass


class VerificationError(TnxError):
    pass


class MissingDependencyError(TnxError):
    pass


class RepositoryError(TnxError):
    pass


class ServerError(TnxError):
    pass


class FleetError(ServerError):
    pass


class PlanningError(TnxError):
    pass
