"""Share hf_vit checkpoints on the Hugging Face Hub: check a folder, then upload it as one atomic commit.

    from hf_vit.hub import push_folder
    info = push_folder("my-vit", "me/my-vit")          # -> CommitInfo; str(info) is the commit URL

What is uploaded (an allow-list; anything else in the folder, such as logs, plots or `checkpoint-*` folders, stays
local): `config.json` (with `auto_map`), `model.safetensors` or the shards named by `model.safetensors.index.json`
(and the index), `preprocessor_config.json`, the code files `auto_map` names (`configuration_hf_vit.py`,
`modeling_hf_vit.py`), and `README.md`, plus the `extra_files` a caller names (e.g. a training run's curves).

Before anything goes over the network the folder is checked: those files exist, `config.json` is an hf_vit config
with `auto_map`, the code files the checkpoint needs are there, the model loads from the folder with every weight
present and used, the image processor loads, and the model card's metadata parses; and there must be a token. Then,
before anything is created or uploaded, one read-only `whoami` checks that the Hub accepts the token, that it may
write, and that the repo's namespace is its user or one of their organizations. A folder without `README.md` gets a
card generated from its config, written into the folder only once the push has landed (so the folder and the repo
stay the same, and a failed push leaves the folder untouched); a training run or a conversion writes a richer card
(results, hyper-parameters, source) with `hf_vit.model_card` before pushing.

The upload is one `HfApi.create_commit` whose parent is the branch head read just before, so a push never
interleaves with another one: either every file lands in one new commit or the branch is unchanged. A 5xx answer to
the commit is retried (`retries`, default 1) only after checking that the branch has not moved. Weight files left
on the branch from an earlier push in another layout (single file <-> shards) are deleted in the same commit.

Training and conversion scripts: `add_hub_arguments(parser)`, `check_hub_arguments(args)` right after parsing, and
`push_from_arguments(args, output_dir)` at the end (on the main process).
"""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from .checkpoint_io import CODE_FILES  # noqa: E402
from .checkpoint_io import CONFIG_NAME as CONFIG  # noqa: E402
from .checkpoint_io import IMAGE_PROCESSOR_NAME as PROCESSOR  # noqa: E402
from .checkpoint_io import SAFE_WEIGHTS_INDEX_NAME as WEIGHTS_INDEX  # noqa: E402
from .checkpoint_io import SAFE_WEIGHTS_NAME as WEIGHTS  # noqa: E402

CARD = "README.md"
_BRANCH_RE = re.compile(r"^(?!refs/)(?!.*\.\.)(?!.*//)[A-Za-z0-9][A-Za-z0-9._/-]{0,99}(?<![/.])$")
_WEIGHT_FILE_RE = re.compile(r"^(model|pytorch_model)(-\d+-of-\d+)?\.(safetensors|bin)(\.index\.json)?$")
_NETWORK_MODULES = {"huggingface_hub", "httpx", "httpx2", "httpcore", "requests", "urllib3"}

logger = logging.getLogger(__name__)


class PushError(RuntimeError):
    """The Hub refused the upload or could not be reached; the message is one line. Nothing partial was committed."""


def _one_line(err: BaseException, limit: int = 300) -> str:
    return " ".join(str(err).split())[:limit]


def check_repo_id(repo_id: str) -> None:
    """Raise ValueError unless `repo_id` is a valid `NAMESPACE/NAME` Hub model id."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not isinstance(repo_id, str) or repo_id.count("/") != 1:
        raise ValueError(f"invalid repo id {repo_id!r}: expected NAMESPACE/NAME, e.g. 'my-user/vit-digits'")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"invalid repo id {repo_id!r}: {err}") from None


def check_branch(revision: str) -> None:
    """Raise ValueError unless `revision` can name a branch to push to."""
    if not isinstance(revision, str) or not _BRANCH_RE.fullmatch(revision) or re.fullmatch(r"[0-9a-f]{40}", revision):
        raise ValueError(
            f"invalid branch name {revision!r}: use letters, digits, '-', '_', '.', '/' (not a commit id, not refs/...)"
        )


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not readable JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return data


def _weight_files(folder: Path) -> list[str]:
    single, index = folder / WEIGHTS, folder / WEIGHTS_INDEX
    if single.is_file() and index.is_file():
        raise ValueError(
            f"{folder} holds both {WEIGHTS} and {WEIGHTS_INDEX}; keep one layout (save_pretrained into an empty folder)"
        )
    if single.is_file():
        return [WEIGHTS]
    if index.is_file():
        weight_map = _read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError(f"{index} has no weight_map")
        shards = sorted(set(weight_map.values()))
        missing = [s for s in shards if not (folder / s).is_file()]
        if missing:
            raise ValueError(f"{folder} is missing weight shard(s) {', '.join(missing)} named by {WEIGHTS_INDEX}")
        # the index must name exactly the shards there are: none left over from another save, none it forgot
        stray = sorted(p.name for p in folder.glob("model-*-of-*.safetensors") if p.name not in shards)
        counts = {int(m[1]) for shard in shards if (m := re.fullmatch(r"model-\d+-of-(\d+)\.safetensors", shard))}
        if stray or (counts and counts != {len(shards)}):
            found = f" ({', '.join(stray)} beside them not in it)" if stray else ""
            raise ValueError(
                f"{index} names the shards {', '.join(shards)}{found}: an incomplete or mixed set of shards; save "
                "the model again into an empty folder"
            )
        return [WEIGHTS_INDEX, *shards]
    others = sorted(p.name for p in folder.iterdir() if _WEIGHT_FILE_RE.match(p.name))
    hint = (
        f" (found {', '.join(others)}: hf_vit shares safetensors only; re-save with save_pretrained)" if others else ""
    )
    raise ValueError(f"{folder} has no weights: expected {WEIGHTS} or {WEIGHTS_INDEX} with its shards{hint}")


def _code_files(folder: Path, config: dict) -> list[str]:
    auto_map = config.get("auto_map")
    if not isinstance(auto_map, dict) or not auto_map.get("AutoConfig") or not auto_map.get("AutoModel"):
        raise ValueError(
            f"{folder / CONFIG} has no auto_map (AutoConfig, AutoModel): save the model with hf_vit's save_pretrained "
            "so that trust_remote_code loading works"
        )
    references = [r for value in auto_map.values() for r in (value if isinstance(value, list) else [value]) if r]
    own = {Path(name).stem for name in CODE_FILES}
    for reference in references:  # what trust_remote_code would run for whoever loads the pushed repo
        if not isinstance(reference, str) or "--" in reference or reference.rsplit(".", 1)[0] not in own:
            raise ValueError(
                f"{folder / CONFIG}: auto_map names code that is not hf_vit's own ({reference!r}); hf_vit pushes "
                f"only checkpoints whose code is its {' and '.join(CODE_FILES)}: re-save the model with hf_vit"
            )
    files, todo = [], sorted({reference.rsplit(".", 1)[0] for reference in references})
    while todo:  # the named modules and what they import relatively
        name = todo.pop()
        filename = f"{name}.py"
        if filename in files:
            continue
        if filename not in CODE_FILES:
            raise ValueError(f"{folder}: the checkpoint's code imports {filename}, which is not one of hf_vit's files")
        path = folder / filename
        if not path.is_file():
            raise ValueError(
                f"{folder} is missing {filename}, which the checkpoint's code needs (auto_map / relative import)"
            )
        files.append(filename)
        todo += [m for m in re.findall(r"^\s*from\s+\.(\w+)\s+import", path.read_text(encoding="utf-8"), re.MULTILINE)]
    return sorted(files)


def _check_loads(folder: Path, config: dict) -> int:
    """Load the model and image processor from `folder`; every weight must be present and used. Returns #parameters."""
    import hf_vit

    from .checkpoint_io import load_image_processor

    architectures = config.get("architectures") or ["HfViTModel"]
    model_class = getattr(hf_vit, architectures[0], None)
    if model_class is None:
        raise ValueError(
            f"{folder / CONFIG}: unknown architecture {architectures[0]!r} (expected one of hf_vit's models)"
        )
    try:
        model, info = model_class.from_pretrained(folder, output_loading_info=True)
    except Exception as err:  # OSError, RuntimeError (shapes), SafetensorError (a cut file) ...: the folder's fault
        raise ValueError(f"{folder}: the model does not load: {str(err).strip().splitlines()[0]}") from None
    problems = {
        k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs")
    }
    if problems:
        detail = "; ".join(
            f"{k}: {', '.join(map(str, list(v)[:3]))}{' ...' if len(v) > 3 else ''}" for k, v in problems.items()
        )
        raise ValueError(f"{folder}: the weights do not match the config ({detail})")
    try:
        load_image_processor(folder)
    except Exception as err:
        raise ValueError(f"{folder / PROCESSOR} does not load: {str(err).strip().splitlines()[0]}") from None
    return sum(p.numel() for p in model.parameters())


def check_card(text: str, source: str = CARD) -> None:
    """Parse a model card as huggingface_hub does (metadata a YAML mapping, a well-formed model-index); ValueError
    if not.

    The Hub's own check (`/api/validate-yaml`) runs again when the card is committed.
    """
    from huggingface_hub import ModelCard

    if not text.startswith("---"):
        raise ValueError(f"{source} has no YAML metadata block (library_name, pipeline_tag, tags, license ...)")
    try:
        card = ModelCard(text, ignore_metadata_errors=False)
    except Exception as err:  # yaml.YAMLError, ValueError ... whatever the parser raises, it is the card's fault
        raise ValueError(f"{source} has invalid metadata: {err}") from None
    data = card.data.to_dict()
    if data.get("library_name") != "transformers":
        raise ValueError(f"{source}: metadata library_name must be 'transformers', got {data.get('library_name')!r}")


def check_code_files(folder: Path, names, allow_modified_code: bool = False) -> None:
    """Refuse code files of `folder` that differ from the installed hf_vit's (sha256): what `trust_remote_code=True`
    runs for whoever loads a pushed repo must be hf_vit's own code, unless its author says otherwise
    (`allow_modified_code`, for authors of changes to the model files)."""
    import hashlib

    installed = Path(__file__).resolve().parent
    for name in names:
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if digest == hashlib.sha256((installed / name).read_bytes()).hexdigest():
            continue
        if allow_modified_code:
            logger.warning(
                "%s differs from the installed hf_vit's and is pushed as it is (`allow_modified_code`)", folder / name
            )
            continue
        raise ValueError(
            f"{folder / name} differs from the installed hf_vit's {name}: hf_vit publishes only its own code (re-save "
            "the model with hf_vit's save_pretrained, or pass `allow_modified_code` if you changed the model files)"
        )


def check_folder(
    folder: str | os.PathLike, *, load: bool = True, allow_modified_code: bool = False
) -> tuple[list[str], int | None]:
    """Check that `folder` is a complete hf_vit checkpoint; returns (files to upload, #parameters or None).

    Raises ValueError naming what is wrong: a missing or broken file, a symbolic link leading outside the folder,
    code files that differ from the installed hf_vit's (unless `allow_modified_code`). `README.md` is optional here
    (`prepare_folder` writes one).
    """
    from .fileio import check_links_inside

    folder = Path(folder)
    if not folder.exists():
        raise ValueError(f"folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder")
    read = (CONFIG, PROCESSOR, CARD, WEIGHTS, WEIGHTS_INDEX, *CODE_FILES)  # before any of them is read
    check_links_inside(folder, [name for name in read if (folder / name).is_symlink() or (folder / name).exists()])
    if not (folder / CONFIG).is_file():
        raise ValueError(f"{folder} has no {CONFIG}: not a saved model (save it with model.save_pretrained)")
    config = _read_json(folder / CONFIG)
    if config.get("model_type") != "hf_vit":
        raise ValueError(
            f"{folder / CONFIG} has model_type {config.get('model_type')!r}, expected 'hf_vit' "
            "(convert foreign checkpoints with hf_vit.convert first)"
        )
    weights = _weight_files(folder)
    code = _code_files(folder, config)
    if not (folder / PROCESSOR).is_file():
        raise ValueError(
            f"{folder} has no {PROCESSOR}: save the image processor too, e.g. "
            "ViTImageProcessor(size={'height': H, 'width': W}, ...).save_pretrained(folder)"
        )
    if "auto_map" in _read_json(folder / PROCESSOR):
        raise ValueError(
            f"{folder / PROCESSOR} has an auto_map (code that whoever loads the repo would run); hf_vit's checkpoints "
            "use transformers' own image processor: remove the auto_map, or save the processor again"
        )
    files = [CONFIG, *weights, PROCESSOR, *code]
    check_links_inside(folder, files)
    check_code_files(folder, code, allow_modified_code)
    if (folder / CARD).is_file():
        check_card((folder / CARD).read_text(encoding="utf-8"), str(folder / CARD))
        files.append(CARD)
    check_no_secrets(folder, [name for name in files if name.endswith((".md", ".json"))])
    num_parameters = _check_loads(folder, config) if load else None
    return files, num_parameters


def check_no_secrets(folder: Path, names) -> None:
    """Refuse to upload a text file of `folder` that holds a secret (`hf_vit.secrets.redact` would change it): a
    token pasted into a card by hand must not be published."""
    from .secrets import redact

    for name in names:
        text = (folder / name).read_text(encoding="utf-8", errors="replace")
        if redact(text) != text:
            raise ValueError(
                f"{folder / name} holds what looks like a secret (a Hugging Face token, a token flag's value or an "
                "environment token): remove it before pushing"
            )


GENERATED_CARD_LICENSE_NOTE = (
    "This card was generated from the folder's config when it was pushed: nothing recorded the weights' licence or "
    "origin, so none is claimed (`license: other`). Whoever published them should state both in this card."
)


def _generated_card(folder: Path, repo_id: str | None, num_parameters: int | None) -> str:
    """A model card for a folder that has none, rendered from its config and checked like any other card."""
    from .configuration_hf_vit import HfViTConfig
    from .model_card import License, render_model_card

    config = HfViTConfig.from_pretrained(folder)
    name = (repo_id or folder.resolve().name).split("/")[-1]
    text = str(
        render_model_card(
            config,
            num_parameters=num_parameters,
            model_name=name,
            repo_id=repo_id or name,
            license=License(),  # nothing in the folder says where the weights came from: no licence is guessed
            license_note=GENERATED_CARD_LICENSE_NOTE,
        )
    )
    check_card(text)
    from .secrets import redact

    return redact(text)


def prepare_folder(
    folder: str | os.PathLike, repo_id: str | None = None, *, allow_modified_code: bool = False
) -> list[str]:
    """`check_folder`, then write a model card generated from the config if the folder has none. Returns the files."""
    from .fileio import atomic_write_text

    folder = Path(folder)
    files, num_parameters = check_folder(folder, allow_modified_code=allow_modified_code)
    if CARD not in files:
        atomic_write_text(folder / CARD, _generated_card(folder, repo_id, num_parameters))
        logger.info("%s: no model card in the folder, wrote one generated from %s", folder / CARD, CONFIG)
        files.append(CARD)
    return files


def _no_token_message(repo_id: str) -> str:
    return (
        f"no Hugging Face token: pushing to {repo_id} needs one with write access; "
        "log in with `hf auth login` or set HF_TOKEN"
    )


def check_write_access(repo_id: str, token: str | None = None, endpoint: str | None = None) -> str:
    """Check, with one read-only request (`whoami`), that a token is there, that the Hub accepts it, that it may
    write, and that `repo_id`'s namespace is its user or one of their organizations; returns the token.

    Raises ValueError for what the user must fix (no, invalid or read-only token; someone else's namespace) and
    PushError when the Hub cannot be reached. Called before anything is created, uploaded or written.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    token = token or get_token()
    if not token:
        raise ValueError(_no_token_message(repo_id))
    try:
        me = HfApi(endpoint=endpoint, token=token).whoami(token=token)
    except HfHubHTTPError as err:
        if getattr(err.response, "status_code", None) == 401:
            raise ValueError(
                f"the Hub rejected the Hugging Face token ({_one_line(err, 200)}); "
                "log in again with `hf auth login` or set HF_TOKEN to a valid token"
            ) from None
        raise PushError(f"push to {repo_id} failed: cannot check the token: {_one_line(err)}") from err
    except Exception as err:  # connection errors: the Hub's side
        if type(err).__module__.split(".")[0] not in _NETWORK_MODULES and not isinstance(err, OSError):
            raise
        raise PushError(f"push to {repo_id} failed: cannot check the token: {_one_line(err)}") from err
    user = me.get("name")
    role = ((me.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise ValueError(
            f"the Hugging Face token of {user!r} is read-only; pushing to {repo_id} needs a token with "
            "write access (https://huggingface.co/settings/tokens)"
        )
    namespaces = [user, *(org.get("name") for org in me.get("orgs") or [] if isinstance(org, dict))]
    namespace = repo_id.split("/")[0]
    if namespace not in namespaces:
        raise ValueError(
            f"the Hugging Face token of {user!r} cannot write to {repo_id}: {namespace!r} is neither "
            f"that user nor one of their organizations ({', '.join(map(repr, namespaces))})"
        )
    return token


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    commit_message: str | None = None,
    token: str | None = None,
    endpoint: str | None = None,
    retries: int = 1,
    extra_files: tuple[str, ...] | list[str] = (),
    allow_modified_code: bool = False,
):
    """Check `folder` and upload it to the Hub model repo `repo_id` (created if needed) as one commit.

    `revision`: a branch, created from `main` if it does not exist. `extra_files`: more files of the folder to upload
    with the checkpoint (paths relative to it, e.g. "training_curves.png", "all_results.json"). Returns
    huggingface_hub's `CommitInfo` (a `str`: the commit URL; `.oid` is the commit id). Raises ValueError, before any
    network call, for a bad repo id,
    branch name, folder or a missing token, and before anything is created or uploaded for a token that cannot
    write to the repo; PushError (one line) when the Hub refuses or cannot be reached.

    A folder without README.md gets a generated card: uploaded with the rest, and written into the folder only once
    the commit has landed, so that a failed push leaves the folder exactly as it was. A symbolic link that leads
    outside the folder is refused, and so are code files that differ from the installed hf_vit's unless
    `allow_modified_code` (what is sent is always the files' contents). `private` applies to a repo this creates: an
    existing public repo stays public (a warning says so).
    """
    from huggingface_hub import HfApi, get_token

    from .fileio import atomic_write_text, check_links_inside

    check_repo_id(repo_id)
    if revision is not None:
        check_branch(revision)
    if not (token or get_token()):  # before the (slow) folder check: nothing can be pushed anyway
        raise ValueError(_no_token_message(repo_id))
    folder = Path(folder)
    for name in extra_files:
        if Path(name).is_absolute() or ".." in Path(name).parts or not (folder / name).is_file():
            raise ValueError(f"extra file {name!r} is not a file inside {folder}")
    files, num_parameters = check_folder(folder, allow_modified_code=allow_modified_code)
    extra = [Path(name).as_posix() for name in extra_files if Path(name).as_posix() not in files]
    check_links_inside(folder, extra)
    check_no_secrets(folder, [name for name in extra if name.endswith((".md", ".json", ".jsonl", ".txt"))])
    files += extra
    token = check_write_access(repo_id, token=token, endpoint=endpoint)
    card = None if CARD in files else _generated_card(folder, repo_id, num_parameters)
    contents = {} if card is None else {CARD: card.encode("utf-8")}
    files += list(contents)
    branch = revision or "main"

    try:
        info = _commit_folder(
            HfApi(endpoint=endpoint, token=token),
            folder,
            files,
            repo_id,
            branch,
            private,
            commit_message or f"Upload hf_vit model ({', '.join(files)})",
            retries,
            contents,
        )
    except PushError:
        raise
    except Exception as err:  # huggingface_hub's HTTP errors, connection errors: the Hub's side, in one line
        if type(err).__module__.split(".")[0] not in _NETWORK_MODULES and not isinstance(err, OSError):
            raise
        raise PushError(f"push to {repo_id} failed: {_one_line(err)}") from err
    if card is not None:  # the folder now matches the repo
        atomic_write_text(folder / CARD, card)
        logger.info("%s: no model card in the folder, wrote the one pushed (generated from %s)", folder / CARD, CONFIG)
    return info


def _commit_folder(
    api,
    folder: Path,
    files: list[str],
    repo_id: str,
    branch: str,
    private: bool,
    message: str,
    retries: int,
    contents: dict[str, bytes] | None = None,
):
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete
    from huggingface_hub.errors import HfHubHTTPError

    api.create_repo(repo_id, private=private, exist_ok=True)
    if branch != "main":
        api.create_branch(repo_id, branch=branch, exist_ok=True)
    info = api.model_info(repo_id, revision=branch)
    head = info.sha
    if private and info.private is False:  # create_repo leaves an existing repo's visibility as it is
        logger.warning(
            "%s already exists and is public: it stays public (`private` applies only to a repo the push creates); "
            "make it private in its settings on the Hub or with HfApi().update_repo_settings(%r, private=True)",
            repo_id,
            repo_id,
        )
    for attempt in range(retries + 1):
        stale = [f for f in api.list_repo_files(repo_id, revision=head) if _WEIGHT_FILE_RE.match(f) and f not in files]
        operations = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=(contents or {}).get(name, str(folder / name)))
            for name in files
        ]
        operations += [CommitOperationDelete(path_in_repo=name) for name in stale]
        try:
            return api.create_commit(
                repo_id, operations=operations, commit_message=message, revision=branch, parent_commit=head
            )
        except HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            if attempt == retries or status is None or status < 500:
                raise
            if api.model_info(repo_id, revision=branch).sha != head:
                raise PushError(
                    f"push to {repo_id} failed: the Hub answered {status} to the commit and the branch "
                    f"{branch} has moved since; check the repo before pushing again"
                ) from err
            logger.info("the Hub answered %s to the commit; nothing was committed, retrying", status)
