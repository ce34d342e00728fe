"""Where the CLI finds the API and its credentials: flags, environment, config file.

Each setting is taken from the first place that has it: the command-line flag, then the
environment variable, then the config file, then the default::

    setting     flag                 environment          config file key
    API         --api A[,B,...]      CORRAL_API           api  (string "a,b" or a list)
    token       --token T            CORRAL_TOKEN         token, or token_file
    CA          --ca-file F          CORRAL_CA_FILE       ca_file
    client cert --cert-file/--key-file                    cert_file, key_file
    TLS         --tls                                     tls: true

The config file is ``$CORRAL_CONFIG``, else ``$XDG_CONFIG_HOME/corral/config.yaml``
(``~/.config/corral/config.yaml``); a missing default file is fine, a missing file named
by ``--config`` or ``CORRAL_CONFIG`` is an error. Relative paths in it are relative to
the file. TLS is used when a CA, a client certificate or ``tls: true`` is given (``--tls``
alone trusts the system's CAs). Reading the file and the token file is the only I/O here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_API = "127.0.0.1:7070"
CONFIG_KEYS = frozenset({"api", "token", "token_file", "ca_file", "cert_file", "key_file",
                         "tls"})


class ConfigError(ValueError):
    """The config file (or a file it names) is unusable; the message says which and why."""


@dataclass(frozen=True)
class ClientSettings:
    addresses: tuple[str, ...]
    token: str | None = None
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    tls: bool = False


def default_config_path(env: Mapping[str, str]) -> Path:
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser()
                                             / ".config")
    return Path(base) / "corral" / "config.yaml"


def read_config(path: Path, required: bool) -> dict[str, Any]:
    """The config file's settings (validated), or {} if it is absent and not required."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"config file {path} does not exist") from None
        return {}
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path}: must be a mapping")
    problems = [f"{k}: unknown setting (expected one of: {', '.join(sorted(CONFIG_KEYS))})"
                for k in data if k not in CONFIG_KEYS]
    api = data.get("api")
    if api is not None and not (isinstance(api, str) or (
            isinstance(api, list) and all(isinstance(a, str) for a in api))):
        problems.append("api: must be HOST:PORT, a comma-separated list or a list of them")
    for k in ("token", "token_file", "ca_file", "cert_file", "key_file"):
        if k in data and not isinstance(data[k], str):
            problems.append(f"{k}: must be a string")
    if "tls" in data and not isinstance(data["tls"], bool):
        problems.append("tls: must be true or false")
    if "token" in data and "token_file" in data:
        problems.append("token, token_file: give one of them")
    if problems:
        raise ConfigError(f"config file {path}:\n  " + "\n  ".join(problems))
    out = dict(data)
    for k in ("token_file", "ca_file", "cert_file", "key_file"):
        if k in out:
            out[k] = path.parent / Path(out[k]).expanduser()
    if "token_file" in out:
        try:
            out["token"] = Path(out.pop("token_file")).read_text().strip()
        except OSError as e:
            raise ConfigError(f"config file {path}: cannot read token_file: "
                              f"{e.strerror or e}") from None
    return out


def resolve(flags: Mapping[str, Any], env: Mapping[str, str],
            config_path: str | None = None) -> ClientSettings:
    """The settings from ``flags`` (None = not given), ``env`` and the config file."""
    named = config_path or env.get("CORRAL_CONFIG")
    config = read_config(Path(named) if named else default_config_path(env),
                         required=bool(named))

    def pick(flag: str, env_key: str | None, key: str) -> Any:
        if flags.get(flag) is not None:
            return flags[flag]
        if env_key and env.get(env_key):
            return env[env_key]
        return config.get(key)

    api: str | Sequence[str] = pick("api", "CORRAL_API", "api") or DEFAULT_API
    items = api.split(",") if isinstance(api, str) else list(api)
    addresses = tuple(dict.fromkeys(a.strip() for a in items if a.strip()))
    if not addresses:
        raise ConfigError("no API address given (--api, CORRAL_API or api in the config)")
    ca, cert, key = (pick(f, e, f) for f, e in (("ca_file", "CORRAL_CA_FILE"),
                                                 ("cert_file", None), ("key_file", None)))
    token = pick("token", "CORRAL_TOKEN", "token")
    tls = bool(flags.get("tls")) or bool(config.get("tls")) or any((ca, cert, key))
    return ClientSettings(
        addresses=addresses, token=token or None,
        ca_file=Path(ca) if ca else None, cert_file=Path(cert) if cert else None,
        key_file=Path(key) if key else None, tls=tls)
