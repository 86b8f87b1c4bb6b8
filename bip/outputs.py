"""Output folders that bip writes: checked before any compute, marked, written atomically.

Every folder a bip command writes (``bip solve``, ``bip robustness``, ``bip train``) carries a
small manifest, ``.bip-output.json``: the tool, the command line, the bip version, the spec or
recipe, ``status`` (``"complete"`` or ``"incomplete"``) and the time. ``--overwrite`` replaces
only folders that carry it; any other existing, non-empty folder is refused and left as it is.

``check(out)`` runs before anything is computed: the location must not be ``.``, the current
folder or one of its parents, nor an existing file; its parent must be writable; an existing
folder must be empty or one bip wrote. Each failure is an ``OutputError`` with one line
naming the folder.

``write_folder(out, fill, manifest)`` fills a temporary folder beside ``out`` and renames it
into place, so an interrupted write never leaves a folder that looks complete;
``atomic_write_bytes`` and ``atomic_write_json`` do the same for single files.

No JAX import here: the command line checks its output before it imports anything heavy.

Example:
    >>> out = bip.outputs.check("runs/my-run", overwrite=True)
    >>> bip.outputs.write_folder(
    ...     out, lambda tmp: (tmp / "notes.txt").write_text("hi"),
    ...     bip.outputs.manifest("solve", status="complete"), overwrite=True)
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

MANIFEST = ".bip-output.json"
"""The file that marks a folder as bip's own output."""


SAVING = threading.Event()
"""Set by a run that caught Ctrl-C and now saves what it has (``bip solve``'s draws, a sweep's
finished cells, a training checkpoint): the command line then lets it finish instead of
exiting at once (``bip.cli``)."""


class OutputError(ValueError):
    """An output location that bip will not write: the message names it and why."""


def read_manifest(folder: str | os.PathLike) -> dict | None:
    """The parsed manifest of ``folder``, or None when it has none (or an unreadable one)."""
    try:
        return json.loads((Path(folder) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def _is_empty(folder: Path) -> bool:
    return next(folder.iterdir(), None) is None


def _writable_ancestor(path: Path) -> None:
    """Raise unless the nearest existing ancestor of ``path`` is a folder we can write in."""
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"output folder {str(path)!r}: {str(parent)!r} is a file, not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".bip-write-test-")
    except OSError as err:
        raise OutputError(
            f"output folder {str(path)!r}: cannot write in {str(parent)!r} ({err.strerror})"
        ) from None
    os.close(fd)
    os.unlink(probe)


Legacy = Callable[[Path], bool]
"""A test that recognises a folder bip wrote before it marked its folders (``holds_exactly``)."""


def holds_exactly(*names: str) -> Legacy:
    """A ``Legacy`` test: the folder holds exactly these files (what an older bip wrote)."""
    return lambda folder: sorted(p.name for p in folder.iterdir()) == sorted(names)


def check(
    out: str | os.PathLike,
    *,
    overwrite: bool = False,
    resume: bool = False,
    legacy: Legacy | None = None,
) -> Path:
    """Check that ``out`` may be written, before any compute; return it as a ``Path``.

    Args:
        out: the output folder.
        overwrite: an existing folder that bip wrote may be replaced.
        resume: for commands that continue in place (``bip train``): a folder bip wrote is
            accepted without ``overwrite``.
        legacy: recognises a folder without a manifest that an older bip wrote (e.g.
            ``holds_exactly("samples.npz", "report.json", "figure.png")``); it counts as bip's.

    Raises:
        OutputError: ``out`` is ``.``, the current folder or one of its parents, a file, in a
            folder that cannot be written, or an existing non-empty folder that bip did not
            write (these are never replaced).
        FileExistsError: ``out`` is bip's output and neither ``overwrite`` nor ``resume``.
    """
    path = Path(out)
    if not str(out).strip():
        raise OutputError("output folder: the name is empty")
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise OutputError(
            f"output folder {str(out)!r} is the current folder or one of its parents: "
            "name a new folder, e.g. runs/my-run"
        )
    if path.exists() and not path.is_dir():
        raise OutputError(f"output folder {str(out)!r} is an existing file, not a folder")
    _writable_ancestor(resolved)
    if not path.is_dir() or _is_empty(path):
        return path
    ours = read_manifest(path) is not None or (legacy is not None and legacy(path))
    if ours and resume:
        return path
    if not ours:
        raise OutputError(
            f"output folder {str(out)!r} exists and was not written by bip (no {MANIFEST}): "
            "bip never replaces it; move it or choose another --out"
        )
    if not overwrite:
        raise FileExistsError(f"output folder {str(out)!r} exists (use --overwrite to replace it)")
    return path


def precision() -> str:
    """``"float64"`` or ``"float32"``: the default float JAX computes in now (``bip
    --float32``, or ``jax_enable_x64`` off). Imports JAX."""
    import jax.numpy as jnp
    import numpy as np

    return str(np.dtype(jnp.result_type(float)))


def manifest(command: str, *, status: str = "complete", **fields) -> dict:
    """The manifest of an output of ``bip <command>``: ``status`` is ``"complete"`` or
    ``"incomplete"`` (an interrupted run, a checkpoint), the ``precision`` of the run, and
    ``fields`` (e.g. the spec)."""
    from bip import __version__

    if status not in ("complete", "incomplete"):
        raise ValueError(f"status must be 'complete' or 'incomplete', got {status!r}")
    return {
        "tool": "bip",
        "command": command,
        "argv": list(sys.argv),
        "version": __version__,
        "status": status,
        "precision": precision(),
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **fields,
    }


def write_manifest(folder: str | os.PathLike, content: dict) -> None:
    """Write ``content`` (see ``manifest``) as the manifest of ``folder``, atomically."""
    atomic_write_json(Path(folder) / MANIFEST, content)


def write_folder(
    out: str | os.PathLike,
    fill: Callable[[Path], None],
    content: dict,
    *,
    overwrite: bool = False,
    legacy: Legacy | None = None,
) -> Path:
    """Fill a temporary folder beside ``out`` with ``fill(tmp)``, mark it with ``content`` and
    rename it into place (replacing a bip output folder when ``overwrite``; ``legacy`` as in
    ``check``); on any error or interrupt the temporary folder is removed and ``out`` is
    unchanged."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.partial-"))
    tmp.chmod(0o755)
    try:
        fill(tmp)
        write_manifest(tmp, content)
        check(
            out, overwrite=overwrite, legacy=legacy
        )  # again: the folder may have appeared meanwhile
        if out.exists():
            trash = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, trash)
            os.replace(tmp, out)
            shutil.rmtree(trash)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (mode 0644): temp file in the same folder, then
    ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o644)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically (NaN allowed)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, allow_nan=True) + "\n").encode())
