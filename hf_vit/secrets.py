"""One redaction for every text hf_vit writes (model cards, logs, `metrics.jsonl`, `all_results.json`, checkpoint
states, exports' JSON): no secret value reaches a file, a log or a published repo.

    from hf_vit.secrets import redact
    redact("hf-vit-train --hub_tok hf_abc...")          # -> "hf-vit-train --hub_tok ***"

What is replaced by `***` (`REDACTED`):
- the value given to any flag whose name looks like a secret's (token, secret, password, key, credential, auth), in
  any spelling argparse or a user may use: `--hub_tok VALUE`, `--hub_tok=VALUE`, `--HF-Token 'VALUE'`;
- the value of every environment variable that holds a secret (`HF_TOKEN`, `HUGGING_FACE_HUB_TOKEN`, any
  `*TOKEN*`, `*SECRET*`, `*PASSWORD*`, `*API_KEY*` ...), and the token huggingface_hub would use
  (`huggingface_hub.get_token()`: `HF_TOKEN` or the one `hf auth login` stored);
- anything that looks like a Hugging Face token: `hf_` followed by 30 or more letters and digits, or the older
  `api_...` / `api_org_...` form.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable

REDACTED = "***"
# flags whose every unambiguous abbreviation argparse would take (`--hub_t`, `--hub_tok`) names the secret too
_SECRET_FLAGS = ("--hub_token", "--push_to_hub_token")
_KEY_OWNERS = {"api", "access", "secret", "private", "auth", "hub", "ssh", "encryption", "signing", "wandb", "comet"}
_TOKEN_LIKE = re.compile(r"\b(?:hf_[A-Za-z0-9]{30,}|api_(?:org_)?[A-Za-z0-9]{30,})\b")
_FLAG_VALUE = re.compile(
    r"""(?P<flag>(?<![\w-])--?[A-Za-z][\w-]*)(?P<sep>=|[ \t]+)(?P<value>'[^'\n]*'|"[^"\n]*"|[^\s'"]+)"""
)
_ENV_SECRET = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIAL", re.IGNORECASE)
_ENV_NOT_SECRET = re.compile(r"_(PATH|FILE|DIR|HOME|URL|ENDPOINT)$", re.IGNORECASE)  # where a secret is, not it
_MIN_SECRET_LENGTH = 8  # a shorter value ("1", "true") is no secret, and replacing it would garble the text


def is_secret_name(name: str) -> bool:
    """Whether a flag's or variable's name (`--hub_tok`, `hub_token`, `HF-Token`, `--api_key`) names a secret: its
    last word is (an abbreviation of) token, or a secret, password, credential, auth(orization) or API/access key
    word; or it is an abbreviation of a secret flag (`--hub_t` of `--hub_token`). What a name merely mentions
    (`--token_merging_r`, `--include_tokens_per_second`, `--checkpoint_key`) is not a secret."""
    flag = "--" + name.lstrip("-").replace("-", "_").lower()
    for known in _SECRET_FLAGS:
        stem, last = known.rsplit("_", 1)
        if flag.startswith(stem + "_") and len(flag) > len(stem) + 1 and last.startswith(flag[len(stem) + 1 :]):
            return True
    words = [w for w in flag.lstrip("-").split("_") if w]
    if not words:
        return False
    last, before = words[-1], (words[-2] if len(words) > 1 else "")
    return (
        last in ("tok", "toke", "token")
        or last.endswith("token")
        or last.startswith(("secret", "passw", "pwd", "credential", "authoriz"))
        or last in ("pass", "auth", "cred", "creds")
        or (last in ("key", "keys") and before in _KEY_OWNERS)
        or (last.endswith(("key", "keys")) and last.rstrip("s")[:-3] in _KEY_OWNERS)
    )


def secret_values() -> list[str]:
    """The secrets of this process that must never be written: the environment's secret variables' values and the
    token huggingface_hub would use; longest first (so that a value holding another is replaced whole)."""
    values = {
        value
        for name, value in os.environ.items()
        if _ENV_SECRET.search(name)
        and not _ENV_NOT_SECRET.search(name)
        and len(value) >= _MIN_SECRET_LENGTH
        and not value.isspace()
    }
    try:
        from huggingface_hub import get_token

        token = get_token()
    except Exception:  # noqa: BLE001  an unreadable token file: the environment's values still apply
        token = None
    if token and len(token) >= _MIN_SECRET_LENGTH:
        values.add(token)
    return sorted(values, key=len, reverse=True)


def _flag_value(match: re.Match) -> str:
    value = match["value"].strip("'\"")
    # in free text a short word after a flag is prose ("--hub_tok is not a flag"), not a secret; a command line's
    # every value after a secret flag is hidden by `redact_argv`, whatever its length
    if (
        not is_secret_name(match["flag"])
        or value.startswith("-")
        or value == REDACTED
        or len(value) < _MIN_SECRET_LENGTH
    ):
        return match[0]
    return f"{match['flag']}{match['sep']}{REDACTED}"


def redact(text: str, extra: Iterable[str] = ()) -> str:
    """`text` with every secret value replaced by `***`: the values of secret-named flags (any spelling), the
    environment's secrets and huggingface_hub's token, `extra` values, and anything that looks like a Hugging Face
    token."""
    if not isinstance(text, str) or not text:
        return text
    for value in [*sorted((v for v in extra if v), key=len, reverse=True), *secret_values()]:
        text = text.replace(value, REDACTED)
    # the shell-quoted form of a flag with its value in one word: '--hub_tok=VALUE'
    text = re.sub(
        r"""(?P<q>['"])(?P<flag>--?[A-Za-z][\w-]*)=[^'"\n]*(?P=q)""",
        lambda m: f"{m['q']}{m['flag']}={REDACTED}{m['q']}" if is_secret_name(m["flag"]) else m[0],
        text,
    )
    text = _FLAG_VALUE.sub(_flag_value, text)
    return _TOKEN_LIKE.sub(REDACTED, text)


def redact_argv(program: str, argv: Iterable[str]) -> str:
    """A command line as a user would type it again (shell-quoted), with every secret value left out: the word after
    a secret-named flag, the value of `--flag=value`, and any secret `redact` finds in the others."""
    words, hide_next = [program], False
    for word in map(str, argv):
        flag, equals, _ = word.partition("=")
        secret = flag.startswith("-") and len(flag.lstrip("-")) > 0 and is_secret_name(flag)
        if hide_next and not word.startswith("-"):
            word = REDACTED
        elif secret and equals:
            word = f"{flag}={REDACTED}"
        words.append(word)
        hide_next = secret and not equals
    return redact(shlex.join(words))


__all__ = ["REDACTED", "is_secret_name", "redact", "redact_argv", "secret_values"]
