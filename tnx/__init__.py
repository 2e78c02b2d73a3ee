"""What every tnx package shares and none owns: the exception tree (`tnx.errors`).

It sits left of `exporters/` in the one-way import order
(tnx → exporters → model_repo_tools → control → router → deploy), so any package may
import it.
"""
