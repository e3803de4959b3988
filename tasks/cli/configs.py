"""The shipped recipes (``configs/*.yaml``) by name: ``mobilezoo fit -c <name>`` and
``mobilezoo configs``.

In a checkout the recipes are the repository's ``configs/`` folder; an installed wheel
carries them as data files (``<prefix>/share/mobilezoo/configs``, see pyproject.toml), so a
user who installed the package, not a clone, can run and copy them too.
"""

from __future__ import annotations

import shutil
import sys
from importlib import metadata
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parents[2] / "configs"
_SHARE = "share/mobilezoo/configs"
_CONFIG_OPTIONS = ("-c", "--config")


def config_dir() -> Path:
    """The folder of the shipped recipes: the checkout's ``configs/`` when this module runs
    from a clone, else the installed distribution's data files.

    Raises:
        FileNotFoundError: neither exists (an install without its data files).
    """
    if _CHECKOUT.is_dir():
        return _CHECKOUT
    try:
        files = metadata.distribution("mobilezoo").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.as_posix().endswith(f"{_SHARE}/{file.name}") and file.suffix == ".yaml":
            return Path(str(file.locate())).resolve().parent
    raise FileNotFoundError(
        f"the recipes are not installed: no {_CHECKOUT} and no {_SHARE} in the mobilezoo "
        "distribution; reinstall the package"
    )


def config_names() -> list[str]:
    """Names of the shipped recipes (file stems), sorted."""
    return sorted(p.stem for p in config_dir().glob("*.yaml"))


def config_path(name: str) -> Path:
    """The shipped recipe ``name`` (with or without ``.yaml``).

    Raises:
        FileNotFoundError: no recipe has that name; the message lists them.
    """
    stem = name.removesuffix(".yaml").removesuffix(".yml")
    path = config_dir() / f"{stem}.yaml"
    if "/" in stem or "\\" in stem or not path.is_file():
        raise FileNotFoundError(
            f"no config file or shipped recipe named {name!r}; recipes: {', '.join(config_names())}"
        )
    return path


def resolve_config_args(args: list[str]) -> list[str]:
    """``args`` with each ``-c NAME`` / ``--config NAME`` (also ``--config=NAME``) that is
    not an existing file replaced by the shipped recipe of that name; other values are left
    for the parser, which names a missing file itself."""
    out = list(args)
    for i, arg in enumerate(out):
        option, eq, value = arg.partition("=")
        if eq and option in _CONFIG_OPTIONS:
            out[i] = f"{option}={_recipe_or_same(value)}"
        elif arg in _CONFIG_OPTIONS and i + 1 < len(out):
            out[i + 1] = _recipe_or_same(out[i + 1])
    return out


def _recipe_or_same(value: str) -> str:
    if Path(value).expanduser().exists() or value.startswith(("{", "[")) or "\n" in value:
        return value  # a file, or inline YAML/JSON
    try:
        return str(config_path(value))
    except FileNotFoundError:
        return value


def configs_main(args: list[str]) -> None:
    """``mobilezoo configs`` lists the recipes; ``mobilezoo configs copy NAME [DEST]`` copies
    one (default: into the current folder) to edit; ``mobilezoo configs path NAME`` prints
    where it is."""
    if not args or args[0] in ("list", "ls"):
        folder = config_dir()
        print(f"recipes in {folder} (run one: mobilezoo fit -c <name>):")
        for name in config_names():
            print(f"  {name}")
        return
    command, rest = args[0], args[1:]
    if command in ("-h", "--help"):
        print(configs_main.__doc__)
        return
    if command not in ("copy", "path") or not rest or len(rest) > 2:
        sys.stderr.write(
            "mobilezoo configs: error: usage: mobilezoo configs [list | copy NAME [DEST] | "
            "path NAME]\n"
        )
        raise SystemExit(2)
    try:
        source = config_path(rest[0])
    except FileNotFoundError as err:
        sys.stderr.write(f"mobilezoo configs: error: {err}\n")
        raise SystemExit(2) from None
    if command == "path":
        print(source)
        return
    dest = Path(rest[1]) if len(rest) > 1 else Path(source.name)
    if dest.is_dir():
        dest = dest / source.name
    if dest.exists():
        sys.stderr.write(f"mobilezoo configs: error: {dest} exists; not replaced\n")
        raise SystemExit(2)
    shutil.copyfile(source, dest)
    print(f"copied {source.name} to {dest}")
