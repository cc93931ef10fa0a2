"""What the Hub-client processes of the tests share to publish source repos on the test Hub server (their code imports
it: `from hub_publish import commit, perturb`)."""

from pathlib import Path

from helpers import perturb as _perturb
from huggingface_hub import CommitOperationAdd, HfApi


def perturb(model, seed):
    """Seeded not-at-init values in every parameter (LayerScale, norms, biases, tokens): a wrong mapping cannot hide
    behind a default initialisation. Returns the model in eval mode."""
    return _perturb(model, scale=0.05, seed=seed)


def commit(folder, repo) -> str:
    """Every file of `folder` into the Hub repo `repo` (created if missing) in one commit; returns the commit's sha."""
    api = HfApi()
    api.create_repo(repo, exist_ok=True)
    files = sorted(Path(folder).iterdir())
    operations = [CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p)) for p in files]
    return api.create_commit(repo, operations=operations, commit_message="Add model").oid
