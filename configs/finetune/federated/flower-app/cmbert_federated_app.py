"""The Flower App bundle's entry points: the ClientApp and ServerApp of `cmbert.finetune.federated.flower`, which every site
and the server import from their installed clinical-modernbert (pip install 'clinical-modernbert[fl]'). Keeping the
code in the package means the bundle `flwr run` ships holds no copy of it."""

from cmbert.finetune.federated.flower import client_app, server_app

__all__ = ["client_app", "server_app"]
